"""Default configuration of LaNNU-Net, and the one function that loads a user's config.

Every key has a one-line comment. A YAML file given with ``--cfg`` overrides these defaults and
trailing ``KEY VALUE`` pairs on the command line override the YAML. Sizes are ``[height, width]``
(rows, columns), like ``tensor.shape[-2:]``; coordinates are ``[x, y]`` (column, row).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from yacs.config import CfgNode as CN

from utils.errors import ConfigError

_C = CN()

# ----------------------------------------------------------------------------------------------
_C.DATASET = CN()
_C.DATASET.DATASET_CLASS = "generic"  # key in datasets/dataset_index.py
_C.DATASET.ROOT = ""  # folder that the JSON's "image" paths are relative to
_C.DATASET.NAME = ""  # name of the dataset, shown in the log above each results summary
_C.DATASET.SRC_TARGETS = ""  # the JSON file (TRAINER.FOLD = -1) or the folder of fold<N>.json
_C.DATASET.IMAGE_MODALITY = "CMRI"  # modality (CMRI, Cephalometric, CT...), logged at start
_C.DATASET.LANDMARKS = []  # indices into each sample's coordinate list; [] = all of them
_C.DATASET.TRAINSET_SIZE = -1  # use only the first N training samples; -1 = all
_C.DATASET.PIXEL_SIZE = []  # [x, y] mm per pixel for every image; [] = unknown (errors in px)

# ----------------------------------------------------------------------------------------------
_C.SAMPLER = CN()
_C.SAMPLER.DEBUG = False  # save PNGs of a few augmented training samples with their targets
_C.SAMPLER.INPUT_SIZE = "auto"  # [height, width] every image is resized to; "auto": planned
_C.SAMPLER.MAX_INPUT_PIXELS = 512 * 512  # pixel budget (height * width) of INPUT_SIZE "auto"
_C.SAMPLER.DATA_AUG = "auto"  # from the data (no vertical flip; see docs); or a scheme name
_C.SAMPLER.DATA_AUG_PACKAGE = "albumentations"  # "albumentations" or "imgaug" (needs numpy < 2)
_C.SAMPLER.NUM_WORKERS = 0  # data loader workers; 0 = the main process; "auto": from CPUs
_C.SAMPLER.SAMPLE_MODE = "full"  # "full" (whole resized image) or "patch_bias" (SAMPLER.PATCH)

_C.SAMPLER.PATCH = CN()
_C.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM = "full"  # "full" or "input_size" (patch mode only)
_C.SAMPLER.PATCH.SAMPLE_PATCH_SIZE = [512, 512]  # [height, width] of sampled patches
_C.SAMPLER.PATCH.SAMPLER_BIAS = 0.66  # probability that a patch contains a landmark
_C.SAMPLER.PATCH.INFERENCE_MODE = "fully_convolutional"  # "patchify_and_stitch", "coarse_to_fine"
_C.SAMPLER.PATCH.COARSE_CHECKPOINT = None  # coarse_to_fine: a full-image model's checkpoint
_C.SAMPLER.PATCH.POSITION_CHANNELS = True  # also give the network each pixel's x, y in the image
_C.SAMPLER.PATCH.STITCH_STRIDE = []  # [y, x] step between stitched windows; [] = half a patch

# ----------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.SEED = 42  # seed of every random number generator; a CPU run repeats exactly
_C.SOLVER.OPTIMIZER = "adamw"  # "adamw", "adam" or "sgd" (Nesterov, momentum 0.99, original)
_C.SOLVER.BASE_LR = 0.001  # initial learning rate (the original's 0.01 was for its SGD)
_C.SOLVER.WEIGHT_DECAY = 0.00003  # weight decay of the optimizer
_C.SOLVER.WARMUP_EPOCHS = 1  # epochs of linear learning-rate warm-up before the decay
_C.SOLVER.DECAY_POLICY = "poly"  # "poly": lr * (1 - epoch / MAX_EPOCHS)^0.9; None = constant
_C.SOLVER.MAX_EPOCHS = 1000  # number of training epochs
_C.SOLVER.MINI_BATCH_SIZE = 150  # mini-batches per epoch
_C.SOLVER.DATA_LOADER_BATCH_SIZE = 12  # samples per mini-batch; "auto": measured (CUDA)
_C.SOLVER.MAX_AUTO_BATCH_SIZE = 32  # largest batch DATA_LOADER_BATCH_SIZE "auto" may choose
_C.SOLVER.DEEP_SUPERVISION = True  # also supervise the coarser decoder levels
_C.SOLVER.NUM_RES_SUPERVISIONS = "auto"  # decoder levels (finest first) with a loss; or a count
_C.SOLVER.AUTO_MIXED_PRECISION = True  # float16 autocast + grad scaler (CUDA only)
_C.SOLVER.GRAD_CLIP_NORM = 0.0  # clip the gradients' global L2 norm to this before a step; 0 = off
_C.SOLVER.LOSS_FUNCTION = "mse"  # heatmap loss: a key of losses/loss_index.py ("mse", "awl")
_C.SOLVER.REGRESS_SIGMA = False  # learn the target Gaussian's sigma per landmark (U-Net)
_C.SOLVER.REGRESS_SIGMA_LOSS_WEIGHT = 0.05  # weight of mean(sigma^2) in the loss (REGRESS_SIGMA)

# ----------------------------------------------------------------------------------------------
_C.TRAINER = CN()
_C.TRAINER.PERFORM_VALIDATION = True  # validate every epoch (loss and localisation error)
_C.TRAINER.SAVE_LATEST_ONLY = True  # False: also keep model_ep<N> after every epoch
_C.TRAINER.CACHE_DATA = True  # keep decoded, resized images in memory
_C.TRAINER.FOLD = 0  # N >= 0 reads SRC_TARGETS/fold<N>.json; -1 reads the file SRC_TARGETS
_C.TRAINER.CROSS_VALIDATION = False  # train every SRC_TARGETS/fold<N>.json into OUTPUT_DIR/fold<N>
_C.TRAINER.INFERENCE_ONLY = False  # skip training; predict with MODEL.CHECKPOINT or every .model
_C.TRAINER.EARLY_STOP_PATIENCE = 150  # stop after this many epochs without a better val. error
_C.TRAINER.DEVICE = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"
_C.TRAINER.AUTO_RESUME = False  # resume from OUTPUT_DIR's model_latest if present (requeued jobs)

# ----------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.ARCHITECTURE = "U-Net"  # key in trainer/model_trainer_index.py
_C.MODEL.GAUSS_SIGMA = "auto"  # target sigma: input pixels (U-Net), patches (PHD-Net); or a number
_C.MODEL.HM_LAMBDA_SCALE = 100.0  # peak value of the target heatmaps (background is 0)
_C.MODEL.CHECKPOINT = None  # checkpoint to resume training from, or to predict with

_C.MODEL.UNET = CN()
_C.MODEL.UNET.MIN_FEATURE_RESOLUTION = 4  # downsample until a feature map side would be smaller
_C.MODEL.UNET.MAX_FEATURES = 512  # features double per level up to this many
_C.MODEL.UNET.INIT_FEATURES = 32  # features of the first level; "auto": from the landmark count

_C.MODEL.PHDNET = CN()
_C.MODEL.PHDNET.BRANCH_SCHEME = "multi"  # "multi", "heatmap" or "displacement"
_C.MODEL.PHDNET.MAXPOOL_FACTOR = 3  # number of 2x2 max-pools: one output cell = 2^N input pixels
_C.MODEL.PHDNET.CLASS_LABEL_SCHEME = "gaussian"  # "gaussian", "binary" or "binary_weighted"
_C.MODEL.PHDNET.WEIGHT_DISP_LOSS_BY_HEATMAP = True  # weight displacement loss by target heatmap
_C.MODEL.PHDNET.LOG_TRANSFORM_DISPLACEMENTS = True  # regress sign(d) * log(1 + |d|)
_C.MODEL.PHDNET.CLAMP_DIST = None  # clamp displacements to this many patches; None = no clamp

# ----------------------------------------------------------------------------------------------
_C.INFERENCE = CN()
_C.INFERENCE.EVALUATION_MODE = "scale_heatmap_first"  # or "scale_pred_coords", "use_input_size"
_C.INFERENCE.DECODING = "dark"  # "argmax" (original), "quadratic", "dark", "local_soft_argmax"
_C.INFERENCE.FIT_GAUSS = False  # fit a 2D Gaussian at each maximum: its mean and covariance
_C.INFERENCE.TTA_FLIP = False  # also predict the image flipped as in training and average outputs
_C.INFERENCE.PRECISION = "float32"  # or "bfloat16": forward passes autocast (faster; coords differ)
_C.INFERENCE.ENSEMBLE_INFERENCE = False  # predict with INFERENCE.ENSEMBLE_CHECKPOINTS together
_C.INFERENCE.ENSEMBLE_CHECKPOINTS = []  # checkpoints of the ensemble (same architecture)
_C.INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS = ["smha", "emha", "ecpv"]  # ensemble uncertainty methods
_C.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX = 0  # ensemble member whose heatmap gives S-MHA
_C.INFERENCE.DEBUG = False  # save per-sample figures of predicted heatmaps to OUTPUT_DIR/debug
_C.INFERENCE.UNCERTAINTY_BINS = 5  # quantile bins of uncertainty, calibrated on the validation list
_C.INFERENCE.CONFORMAL_ALPHA = 0.1  # conformal radius covers the landmark with prob. >= 1 - alpha
_C.INFERENCE.SDR_THRESHOLDS = [2.0, 2.5, 3.0, 4.0]  # success radii: mm if pixel size known, else px
_C.INFERENCE.CONSISTENT_DECODING = False  # replace landmarks the checkpoint's shape model rejects
_C.INFERENCE.SHAPE_UNCERTAINTY = False  # add method "shape": shape residual / heatmap activation
_C.INFERENCE.NUM_CANDIDATES = 5  # consistent decoding: local heatmap maxima tried per landmark
_C.INFERENCE.SHAPE_OUTLIER_P = 0.001  # a landmark is implausible below this chi-square p-value
_C.INFERENCE.SHAPE_NOISE_PX = 0.0  # predictions' own error std, original px (shape test)

# ----------------------------------------------------------------------------------------------
_C.OUTPUT = CN()
_C.OUTPUT.VERBOSE = True  # also write DEBUG messages to the log file (console: INFO)
_C.OUTPUT.OUTPUT_DIR = "output"  # checkpoints, logs, curves and results go here
_C.OUTPUT.USE_COMETML_LOGGING = False  # log to Comet.ml (pip install comet_ml)
_C.OUTPUT.COMET_API_KEY = None  # Comet.ml API key; None = the COMET_API_KEY environment variable
_C.OUTPUT.COMET_WORKSPACE = "default"  # Comet.ml workspace
_C.OUTPUT.COMET_PROJECT_NAME = "LannU-Net"  # Comet.ml project
_C.OUTPUT.COMET_TAGS = ["default"]  # Comet.ml experiment tags
_C.OUTPUT.COMET_OFFLINE = False  # write Comet's offline archive (.zip) to OUTPUT_DIR, upload later
_C.OUTPUT.TENSORBOARD = False  # also write TensorBoard logs to OUTPUT_DIR/tensorboard
_C.OUTPUT.PREDICTION_FIGURES = 3  # figures of the N worst and N best test images; -1 = all
_C.OUTPUT.RESULTS_CSV_APPEND = None  # suffix of the results folder, e.g. "_testset2"


# Optional packages: (the key that needs it, its module); installed by one requirements file.
_OPTIONAL_PACKAGES = (
    ("OUTPUT.USE_COMETML_LOGGING", "comet_ml"),
    ("OUTPUT.TENSORBOARD", "tensorboard"),
)
_TRACKING_PIP = "pip install -r requirements/requirements-tracking.txt"
_COMET_KEYS = (
    "OUTPUT.COMET_API_KEY",
    "OUTPUT.COMET_WORKSPACE",
    "OUTPUT.COMET_PROJECT_NAME",
    "OUTPUT.COMET_TAGS",
    "OUTPUT.COMET_OFFLINE",
)

# SAMPLER.DATA_AUG: the original's schemes (random affine, then a vertical flip half the time),
# each without the flip ("NoFlip"), and each with a horizontal flip that swaps the dataset's
# flip_pairs instead ("HFlip"; transforms/dataloader_transforms.py builds them).
_ORIGINAL_SCHEMES = (
    "AffineSimple",
    "AffineComplex",
    "AffineComplexElastic",
    "AffineComplexElasticLight",
)
AUGMENTATION_SCHEMES = (
    *_ORIGINAL_SCHEMES,
    *(f"{name}NoFlip" for name in _ORIGINAL_SCHEMES),
    *(f"{name}HFlip" for name in _ORIGINAL_SCHEMES),
)

_CHOICES = {
    "SAMPLER.DATA_AUG_PACKAGE": ("albumentations", "imgaug"),
    "SAMPLER.SAMPLE_MODE": ("full", "patch_bias"),
    "SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM": ("full", "input_size"),
    "SAMPLER.PATCH.INFERENCE_MODE": (
        "fully_convolutional",
        "patchify_and_stitch",
        "coarse_to_fine",
    ),
    "SOLVER.OPTIMIZER": ("adamw", "adam", "sgd"),
    "SOLVER.DECAY_POLICY": ("poly", None),
    "SAMPLER.DATA_AUG": (None, "auto", *AUGMENTATION_SCHEMES),
    "INFERENCE.EVALUATION_MODE": ("scale_heatmap_first", "scale_pred_coords", "use_input_size"),
    "INFERENCE.DECODING": ("argmax", "quadratic", "dark", "local_soft_argmax"),
    "INFERENCE.PRECISION": ("float32", "bfloat16"),
    "MODEL.PHDNET.BRANCH_SCHEME": ("multi", "heatmap", "displacement"),
    "MODEL.PHDNET.CLASS_LABEL_SCHEME": ("gaussian", "binary", "binary_weighted"),
}


# Keys that accept the string "auto": main.py resolves them from the data and the device
# (config_auto.py) before the trainer is built, so config.yaml and checkpoints hold numbers.
AUTO = "auto"
AUTO_KEYS = (
    "SAMPLER.INPUT_SIZE",
    "SAMPLER.DATA_AUG",
    "SAMPLER.NUM_WORKERS",
    "SOLVER.DATA_LOADER_BATCH_SIZE",
    "SOLVER.NUM_RES_SUPERVISIONS",
    "MODEL.GAUSS_SIGMA",
    "MODEL.UNET.INIT_FEATURES",
)
# "auto" keys whose numbers are floats (yacs' defaults cannot say so: the default is "auto").
_AUTO_FLOAT_KEYS = ("MODEL.GAUSS_SIGMA",)
# Keys read only while another key is "auto": a non-default value is refused otherwise.
AUTO_ONLY_KEYS = {
    "SAMPLER.MAX_INPUT_PIXELS": "SAMPLER.INPUT_SIZE",
    "SOLVER.MAX_AUTO_BATCH_SIZE": "SOLVER.DATA_LOADER_BATCH_SIZE",
}


def is_auto(value) -> bool:
    """Whether a config value asks to be chosen automatically."""
    return isinstance(value, str) and value == AUTO


def auto_keys(cfg: CN) -> list[str]:
    """The keys of ``cfg`` that are still "auto" and need a value. SAMPLER.INPUT_SIZE (default
    "auto") stays "auto" for patches cut from full-resolution images, which never resize."""
    unused = ()
    if full_resolution_patches(
        cfg.SAMPLER.SAMPLE_MODE, cfg.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM
    ):
        unused = ("SAMPLER.INPUT_SIZE",)
    return [key for key in AUTO_KEYS if key not in unused and is_auto(get_value(cfg, key))]


def get_cfg_defaults() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def get_value(cfg: CN, dotted_key: str):
    """The value of a dotted key such as ``"SOLVER.BASE_LR"``."""
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def _coerce_number(default, value):
    """Let an integer stand for a float default (yacs refuses ``1`` for ``1.0``)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _parse_opts(cfg: CN, opts: list[str]) -> list:
    """Turn ``["SOLVER.BASE_LR", "0.01", ...]`` into yacs' list, values parsed as YAML scalars."""
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs; got {' '.join(opts)}")
    parsed = []
    for key, text in zip(opts[0::2], opts[1::2], strict=True):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        try:
            value = _coerce_number(get_value(cfg, key), value)
        except KeyError:  # an unknown key: yacs names it below
            pass
        except TypeError:  # a key below a value, e.g. SOLVER.BASE_LR.X
            raise ConfigError(f"the command line: unknown config key {key}") from None
        parsed += [key, value]
    return parsed


def _coerce_numbers(cfg: CN, overrides: CN) -> None:
    """Apply :func:`_coerce_number` to every value of a YAML's overrides."""
    for key, value in overrides.items():
        if key not in cfg:
            continue
        if isinstance(value, CN) and isinstance(cfg[key], CN):
            _coerce_numbers(cfg[key], value)
        else:
            overrides[key] = _coerce_number(cfg[key], value)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_cfg(cfg: CN) -> None:
    """Raise ConfigError naming the key for any value the framework cannot honour."""
    for key, choices in _CHOICES.items():
        if get_value(cfg, key) not in choices:
            raise ConfigError(f"{key} = {get_value(cfg, key)!r}; choose one of {list(choices)}")
    _validate_auto_keys(cfg)
    for key in ("SAMPLER.INPUT_SIZE", "SAMPLER.PATCH.SAMPLE_PATCH_SIZE"):
        size = get_value(cfg, key)
        if is_auto(size):
            continue
        if len(size) != 2 or not all(_is_number(s) and int(s) == s >= 8 for s in size):
            raise ConfigError(f"{key} = {size}; give [height, width], each >= 8")
    _validate_patch_keys(cfg)
    pixel_size = cfg.DATASET.PIXEL_SIZE
    if pixel_size and (
        len(pixel_size) != 2 or not all(_is_number(s) and s > 0 for s in pixel_size)
    ):
        raise ConfigError(f"DATASET.PIXEL_SIZE = {pixel_size}; give [x, y] mm per pixel, > 0")
    landmarks = cfg.DATASET.LANDMARKS
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in landmarks):
        raise ConfigError(f"DATASET.LANDMARKS = {landmarks}; give indices 0, 1, ... or []")
    if len(set(landmarks)) != len(landmarks):
        raise ConfigError(f"DATASET.LANDMARKS = {landmarks} repeats an index")
    if not all(isinstance(p, str) for p in cfg.INFERENCE.ENSEMBLE_CHECKPOINTS):
        raise ConfigError("INFERENCE.ENSEMBLE_CHECKPOINTS must be a list of file paths")
    for key in ("SOLVER.MAX_EPOCHS", "SOLVER.MINI_BATCH_SIZE", "SOLVER.DATA_LOADER_BATCH_SIZE"):
        if is_auto(get_value(cfg, key)):
            continue
        if not isinstance(get_value(cfg, key), int) or get_value(cfg, key) < 1:
            raise ConfigError(f"{key} = {get_value(cfg, key)}; it must be at least 1")
    if cfg.TRAINER.EARLY_STOP_PATIENCE < 1:
        raise ConfigError("TRAINER.EARLY_STOP_PATIENCE must be at least 1 (epochs)")
    if cfg.SOLVER.WARMUP_EPOCHS < 0:
        raise ConfigError("SOLVER.WARMUP_EPOCHS must be 0 or more")
    levels = cfg.SOLVER.NUM_RES_SUPERVISIONS
    if not is_auto(levels) and (
        not isinstance(levels, int) or isinstance(levels, bool) or levels < 1
    ):
        raise ConfigError(f'SOLVER.NUM_RES_SUPERVISIONS = {levels!r}; give 1, 2, ... or "auto"')
    if not 1 <= cfg.MODEL.PHDNET.MAXPOOL_FACTOR <= 6:
        raise ConfigError("MODEL.PHDNET.MAXPOOL_FACTOR must be between 1 and 6")
    clip = cfg.SOLVER.GRAD_CLIP_NORM
    if not _is_number(clip) or clip < 0:
        raise ConfigError(
            f"SOLVER.GRAD_CLIP_NORM = {clip!r}; give a norm > 0, or 0 for no clipping"
        )
    clamp = cfg.MODEL.PHDNET.CLAMP_DIST
    if clamp is not None and (not _is_number(clamp) or clamp <= 0):
        raise ConfigError(f"MODEL.PHDNET.CLAMP_DIST = {clamp!r}; give a distance > 0 or None")
    weight = cfg.SOLVER.REGRESS_SIGMA_LOSS_WEIGHT
    _used_only_with(
        cfg, ["SOLVER.REGRESS_SIGMA_LOSS_WEIGHT"], cfg.SOLVER.REGRESS_SIGMA, "REGRESS_SIGMA True"
    )
    if weight < 0:
        raise ConfigError(f"SOLVER.REGRESS_SIGMA_LOSS_WEIGHT = {weight}; it must be >= 0")
    features = cfg.MODEL.UNET.INIT_FEATURES
    if not is_auto(features) and (
        not isinstance(features, int) or isinstance(features, bool) or features < 1
    ):
        raise ConfigError(f'MODEL.UNET.INIT_FEATURES = {features!r}; give 1, 2, ... or "auto"')
    sigma = cfg.MODEL.GAUSS_SIGMA
    if not is_auto(sigma) and (not _is_number(sigma) or sigma <= 0):
        raise ConfigError(f'MODEL.GAUSS_SIGMA = {sigma!r}; give a number > 0 or "auto"')
    if not isinstance(cfg.TRAINER.FOLD, int) or cfg.TRAINER.FOLD < -1:
        raise ConfigError(f"TRAINER.FOLD = {cfg.TRAINER.FOLD!r}; give -1 or a fold number >= 0")
    if not 0 < cfg.INFERENCE.CONFORMAL_ALPHA < 1:
        raise ConfigError("INFERENCE.CONFORMAL_ALPHA must be between 0 and 1")
    if cfg.INFERENCE.UNCERTAINTY_BINS < 1:
        raise ConfigError("INFERENCE.UNCERTAINTY_BINS must be at least 1")
    keys = cfg.INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS
    if not keys or any(k not in ("smha", "emha", "ecpv") for k in keys):
        raise ConfigError(f"INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS = {keys}; use smha, emha, ecpv")
    ensemble_keys = [
        "INFERENCE.ENSEMBLE_CHECKPOINTS",
        "INFERENCE.ENSEMBLE_UNCERTAINTY_KEYS",
        "INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX",
    ]
    enabled = cfg.INFERENCE.ENSEMBLE_INFERENCE
    _used_only_with(cfg, ensemble_keys, enabled, "INFERENCE.ENSEMBLE_INFERENCE True")
    if enabled:
        if cfg.MODEL.CHECKPOINT:
            raise ConfigError(
                "MODEL.CHECKPOINT is not used by ensemble inference; list the "
                "models in INFERENCE.ENSEMBLE_CHECKPOINTS"
            )
        count = len(cfg.INFERENCE.ENSEMBLE_CHECKPOINTS)
        if count < 2:
            raise ConfigError(
                "INFERENCE.ENSEMBLE_INFERENCE needs at least two INFERENCE.ENSEMBLE_CHECKPOINTS"
            )
        if (
            cfg.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX != _C.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX
            and "smha" not in keys
        ):
            raise ConfigError(
                "INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX is used only when "
                "ENSEMBLE_UNCERTAINTY_KEYS includes smha"
            )
        if not 0 <= cfg.INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX < count:
            raise ConfigError(
                f"INFERENCE.UNCERTAINTY_SMHA_MODEL_IDX must index the {count} ensemble checkpoints"
            )
        if not cfg.TRAINER.INFERENCE_ONLY:
            raise ConfigError(
                "INFERENCE.ENSEMBLE_INFERENCE predicts with trained checkpoints: "
                "set TRAINER.INFERENCE_ONLY True"
            )
    if cfg.TRAINER.CROSS_VALIDATION and cfg.TRAINER.FOLD not in (-1, _C.TRAINER.FOLD):
        raise ConfigError(
            f"TRAINER.CROSS_VALIDATION runs every fold; TRAINER.FOLD "
            f"{cfg.TRAINER.FOLD} would be ignored: leave it unset or -1"
        )
    if cfg.TRAINER.CROSS_VALIDATION and (cfg.TRAINER.INFERENCE_ONLY or cfg.MODEL.CHECKPOINT):
        raise ConfigError(
            "TRAINER.CROSS_VALIDATION trains every fold from scratch; test folds "
            "with TRAINER.FOLD N and TRAINER.INFERENCE_ONLY instead"
        )
    _validate_tracking(cfg)
    if cfg.TRAINER.AUTO_RESUME and (
        cfg.MODEL.CHECKPOINT or cfg.TRAINER.INFERENCE_ONLY or cfg.TRAINER.CROSS_VALIDATION
    ):
        raise ConfigError(
            "TRAINER.AUTO_RESUME resumes one training run from OUTPUT_DIR's model_latest: "
            "unset MODEL.CHECKPOINT, TRAINER.INFERENCE_ONLY and TRAINER.CROSS_VALIDATION"
        )
    if not 0 < cfg.INFERENCE.SHAPE_OUTLIER_P < 1:
        raise ConfigError("INFERENCE.SHAPE_OUTLIER_P must be between 0 and 1")
    if not _is_number(cfg.INFERENCE.SHAPE_NOISE_PX) or cfg.INFERENCE.SHAPE_NOISE_PX < 0:
        raise ConfigError("INFERENCE.SHAPE_NOISE_PX must be a number >= 0 (pixels)")
    if not isinstance(cfg.INFERENCE.NUM_CANDIDATES, int) or cfg.INFERENCE.NUM_CANDIDATES < 1:
        raise ConfigError("INFERENCE.NUM_CANDIDATES must be a whole number >= 1")
    thresholds = cfg.INFERENCE.SDR_THRESHOLDS
    if not thresholds or not all(_is_number(t) and t > 0 for t in thresholds):
        raise ConfigError("INFERENCE.SDR_THRESHOLDS must be a non-empty list of radii > 0")


def _validate_auto_keys(cfg: CN) -> None:
    """The "auto"-only keys, and the values "auto" keys may hold instead of "auto"."""
    for key, auto_key in AUTO_ONLY_KEYS.items():
        _used_only_with(cfg, [key], is_auto(get_value(cfg, auto_key)), f'{auto_key} "auto"')
    pixels = cfg.SAMPLER.MAX_INPUT_PIXELS
    if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 64:
        raise ConfigError(f"SAMPLER.MAX_INPUT_PIXELS = {pixels!r}; give a pixel count >= 64")
    cap = cfg.SOLVER.MAX_AUTO_BATCH_SIZE
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ConfigError(f"SOLVER.MAX_AUTO_BATCH_SIZE = {cap!r}; it must be at least 1")
    workers = cfg.SAMPLER.NUM_WORKERS
    if not is_auto(workers) and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
    ):
        raise ConfigError(f'SAMPLER.NUM_WORKERS = {workers!r}; give 0, 1, ... or "auto"')


def _used_only_with(cfg: CN, keys, enabled: bool, condition: str) -> None:
    """Refuse a non-default value of any of ``keys`` unless ``enabled`` (``condition`` says
    what enables them): a key that would be ignored is an error, not a silent no-op."""
    if enabled:
        return
    for key in keys:
        if get_value(cfg, key) != get_value(_C, key):
            raise ConfigError(f"{key} is used only with {condition}")


def _validate_patch_keys(cfg: CN) -> None:
    patch = cfg.SAMPLER.PATCH
    if cfg.SAMPLER.SAMPLE_MODE != "patch_bias":
        keys = [f"SAMPLER.PATCH.{key}" for key in patch]
        _used_only_with(cfg, keys, False, "SAMPLER.SAMPLE_MODE patch_bias")
        return
    if not (_is_number(patch.SAMPLER_BIAS) and 0 <= patch.SAMPLER_BIAS <= 1):
        raise ConfigError(f"SAMPLER.PATCH.SAMPLER_BIAS = {patch.SAMPLER_BIAS}; give 0 ... 1")
    stride = patch.STITCH_STRIDE
    if stride and (len(stride) != 2 or not all(isinstance(s, int) and s >= 1 for s in stride)):
        raise ConfigError(f"SAMPLER.PATCH.STITCH_STRIDE = {stride}; give [y, x] pixels or []")
    if stride and patch.INFERENCE_MODE != "patchify_and_stitch":
        raise ConfigError(
            "SAMPLER.PATCH.STITCH_STRIDE is used only with INFERENCE_MODE patchify_and_stitch"
        )
    coarse = patch.COARSE_CHECKPOINT
    if (patch.INFERENCE_MODE == "coarse_to_fine") != bool(coarse):
        raise ConfigError(
            "SAMPLER.PATCH.INFERENCE_MODE coarse_to_fine needs SAMPLER.PATCH.COARSE_CHECKPOINT "
            "(a model trained on whole resized images), and that checkpoint is used only there"
        )
    if stride and any(s > p for s, p in zip(stride, patch.SAMPLE_PATCH_SIZE, strict=True)):
        raise ConfigError(
            f"SAMPLER.PATCH.STITCH_STRIDE {list(stride)} is larger than the patch "
            f"{list(patch.SAMPLE_PATCH_SIZE)}: windows would leave gaps"
        )


def _validate_tracking(cfg: CN) -> None:
    """Comet keys only with Comet on, and the optional packages that enabled options need."""
    _used_only_with(
        cfg, _COMET_KEYS, cfg.OUTPUT.USE_COMETML_LOGGING, "OUTPUT.USE_COMETML_LOGGING True"
    )
    tags = cfg.OUTPUT.COMET_TAGS
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"OUTPUT.COMET_TAGS = {tags!r}; give a list of strings")
    figures = cfg.OUTPUT.PREDICTION_FIGURES
    if not isinstance(figures, int) or isinstance(figures, bool) or figures < -1:
        raise ConfigError("OUTPUT.PREDICTION_FIGURES must be -1 (all), 0 (none) or a count")
    for key, module in _OPTIONAL_PACKAGES:
        if get_value(cfg, key) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key} True needs the {module} package: {_TRACKING_PIP}")


def full_resolution_patches(sample_mode: str, resolution: str) -> bool:
    """Whether patches are cut from the images at their own size (SAMPLER.SAMPLE_MODE
    patch_bias with RESOLUTION_TO_SAMPLE_FROM full): then nothing is resized and
    SAMPLER.INPUT_SIZE is not used."""
    return sample_mode == "patch_bias" and resolution == "full"


def unused_keys(cfg: CN, unused_by_architecture: tuple[str, ...] = ()) -> list[str]:
    """Keys set to non-default values that are not read: ``unused_by_architecture`` (the
    trainer class's ``unused_config_keys``), and SAMPLER.INPUT_SIZE with full-resolution
    patches, which never resize."""
    keys = tuple(unused_by_architecture)
    if full_resolution_patches(
        cfg.SAMPLER.SAMPLE_MODE, cfg.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM
    ):
        keys = (*keys, "SAMPLER.INPUT_SIZE")
    return [key for key in keys if get_value(cfg, key) != get_value(_C, key)]


def saved_cfg(text: str, source: str) -> CN:
    """The defaults merged with a config saved as YAML text (a checkpoint's), mutable and not
    validated; a key this version does not know is a ConfigError naming ``source``."""
    cfg = get_cfg_defaults()
    overrides = CN(yaml.safe_load(text))
    taken = _take_auto_keys(overrides)
    _merge(cfg.merge_from_other_cfg, overrides, source=source)
    _set_auto_keys(cfg, taken)
    return cfg


def load_cfg(cfg_file: str | Path | None = None, opts: list[str] | None = None) -> CN:
    """Defaults, then the YAML file, then ``KEY VALUE`` overrides; validated and frozen.

    Raises ConfigError (one line naming the file or key) for a missing or malformed file,
    an unknown key, a value of the wrong type, or an option that cannot be honoured.
    """
    cfg = get_cfg_defaults()
    taken: dict[str, object] = {}  # AUTO_KEYS' values: set after merging, past yacs' type check
    if cfg_file is not None:
        path = Path(cfg_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections")
        overrides = CN(loaded)
        taken |= _take_auto_keys(overrides)
        _coerce_numbers(cfg, overrides)
        _merge(cfg.merge_from_other_cfg, overrides, source=str(path))
    if opts:
        rest = []
        parsed = _parse_opts(cfg, list(opts))
        for key, value in zip(parsed[0::2], parsed[1::2], strict=True):
            if key in AUTO_KEYS:  # the command line wins over the YAML
                taken[key] = CN._decode_cfg_value(value)  # as yacs reads the others ("None")
            else:
                rest += [key, value]
        _merge(cfg.merge_from_list, rest, source="the command line")
    _set_auto_keys(cfg, taken)
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def set_value(cfg: CN, dotted_key: str, value) -> None:
    """Set a (mutable) config's ``dotted_key`` without yacs' type check (for "auto")."""
    parent, _, last = dotted_key.rpartition(".")
    (get_value(cfg, parent) if parent else cfg)[last] = value


def _take_auto_keys(overrides: CN, prefix: str = "") -> dict[str, object]:
    """Remove the values of AUTO_KEYS from a YAML's overrides and return them by key: yacs
    would refuse "auto" where the default is a number, and a number where it is "auto"."""
    taken = {}
    for key, value in list(overrides.items()):
        if isinstance(value, CN):
            taken |= _take_auto_keys(value, f"{prefix}{key}.")
        elif f"{prefix}{key}" in AUTO_KEYS:
            del overrides[key]
            taken[f"{prefix}{key}"] = value
    return taken


def _set_auto_keys(cfg: CN, taken: dict[str, object]) -> None:
    """Set the values :func:`_take_auto_keys` took (an integer stands for a float default);
    ``validate_cfg`` checks them."""
    for key, value in taken.items():
        default = 0.0 if key in _AUTO_FLOAT_KEYS else get_value(_C, key)
        set_value(cfg, key, _coerce_number(default, value))


def _merge(merge_fn, overrides, source: str) -> None:
    try:
        merge_fn(overrides)
    except KeyError as err:
        message = err.args[0] if err.args else str(err)
        raise ConfigError(f"{source}: unknown config key ({message})") from None
    except (ValueError, AssertionError, TypeError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        message = lines[0] if len(lines[0]) <= 200 else lines[0][:200] + "..."
        raise ConfigError(f"{source}: {message}") from None
