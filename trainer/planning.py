"""What an architecture knows about itself before it is built: config checks and "auto" plans.

:class:`ArchitecturePlanning` is a base of every trainer; its class methods have defaults that
suit any fully convolutional heatmap model, and a model overrides those its network changes (the
U-Net its level rule, PHD-Net its patch grid). config_auto.py asks the trainer class of
MODEL.ARCHITECTURE, so "auto" works for a model added through the extension API too.
"""

from __future__ import annotations

import math

import numpy as np
from yacs.config import CfgNode

from config import get_cfg_defaults
from trainer.auto_rules import (
    auto_gauss_sigma,
    auto_input_size,
    landmark_spacing,
    sigma_level_floor,
)


def network_input_size(cfg: CfgNode) -> tuple[int, int]:
    """(H, W) the network is trained on: the patch size, or SAMPLER.INPUT_SIZE."""
    if cfg.SAMPLER.SAMPLE_MODE == "patch_bias":
        return tuple(int(s) for s in cfg.SAMPLER.PATCH.SAMPLE_PATCH_SIZE)
    return tuple(int(s) for s in cfg.SAMPLER.INPUT_SIZE)


def network_input_key(cfg: CfgNode) -> str:
    """The config key of :func:`network_input_size`."""
    if cfg.SAMPLER.SAMPLE_MODE == "patch_bias":
        return "SAMPLER.PATCH.SAMPLE_PATCH_SIZE"
    return "SAMPLER.INPUT_SIZE"


class ArchitecturePlanning:
    """Class methods that a trainer may override; the defaults suit a network that keeps its
    input's resolution and supervises one output."""

    # Config keys this architecture never reads: a non-default value is logged as unused.
    unused_config_keys: tuple[str, ...] = ()

    @classmethod
    def check_config(cls, cfg: CfgNode) -> None:
        """Raise ConfigError naming the key for a value this architecture cannot honour."""

    @classmethod
    def planned_input_multiple(cls, cfg: CfgNode) -> int:
        """What the input's sides must be divisible by (the network's down-sampling)."""
        return 1

    @classmethod
    def plan_input_size(cls, cfg: CfgNode, median_size: tuple[float, float]) -> tuple[int, int]:
        """SAMPLER.INPUT_SIZE "auto": the median image (H, W) scaled to at most
        SAMPLER.MAX_INPUT_PIXELS, sides rounded to :meth:`planned_input_multiple`."""
        return auto_input_size(
            median_size, int(cfg.SAMPLER.MAX_INPUT_PIXELS), multiple=cls.planned_input_multiple(cfg)
        )

    @classmethod
    def supervised_levels(cls, cfg: CfgNode) -> int:
        """How many outputs of halving resolution get a loss (deep supervision); 1 = one. With
        SOLVER.NUM_RES_SUPERVISIONS and MODEL.GAUSS_SIGMA both "auto": the most it may get
        (sigma is planned for them, then :meth:`plan_supervised_levels` fits them to it)."""
        return 1

    @classmethod
    def plan_init_features(cls, cfg: CfgNode, num_landmarks: int) -> tuple[int, str]:
        """MODEL.UNET.INIT_FEATURES "auto" for ``num_landmarks`` landmarks, and the reason; an
        architecture without a U-Net does not read it (the default stands in)."""
        default = int(get_cfg_defaults().MODEL.UNET.INIT_FEATURES)
        return default, f"{cls.__name__} has no U-Net: not read"

    @classmethod
    def plan_supervised_levels(cls, cfg: CfgNode) -> tuple[int, str]:
        """SOLVER.NUM_RES_SUPERVISIONS "auto" (MODEL.GAUSS_SIGMA already a number) and the
        reason; an architecture without deep supervision does not read it."""
        return 1, f"{cls.__name__} has no deep supervision: not read"

    @classmethod
    def plan_sigma(
        cls,
        cfg: CfgNode,
        median_size: tuple[float, float],
        whole_input_size: tuple[int, int],
        landmarks_rel: np.ndarray,
    ) -> tuple[float, str]:
        """MODEL.GAUSS_SIGMA "auto" and the reason. Whole images: wide enough for the
        coarsest supervised level (trainer/auto_rules.auto_gauss_sigma). Patches: the width
        in original pixels that whole-image training would use (a 256-pixel patch of a
        cephalogram at full resolution learned with sigma 20 and not with 8; see
        docs/methods.md).

        Args:
            median_size: (H, W) of the median training image.
            whole_input_size: (H, W) whole-image training would resize to (SAMPLER.INPUT_SIZE
                "auto"'s choice); used for patches only.
            landmarks_rel: (N, K, 2) the training landmarks in unit-image coordinates (the
                fingerprint's ``training_landmarks_rel``): the reason says when neighbouring
                targets overlap.
        """
        if cfg.SAMPLER.SAMPLE_MODE == "patch_bias":
            return cls._plan_patch_sigma(cfg, median_size, whole_input_size, landmarks_rel)
        levels = cls.supervised_levels(cfg)
        size = network_input_size(cfg)
        sigma = auto_gauss_sigma(size, levels)
        median_h, median_w = median_size
        input_h, input_w = size
        reason = (
            f"{levels} supervised level(s) of input {list(size)}: sigma / 2^{levels - 1} = "
            f"{sigma / 2 ** (levels - 1):g} px at the coarsest; {sigma * median_w / input_w:.1f}"
            f" x {sigma * median_h / input_h:.1f} original px (x, y)"
        )
        spacing = landmark_spacing(landmarks_rel, size)
        if sigma > spacing / 3:  # measured on spine X-rays: see docs/benchmarks.md
            reason += (
                f"; wider than a third of the landmarks' median spacing ({spacing:.1f} input "
                "px): neighbouring targets overlap"
            )
        return sigma, reason

    @classmethod
    def _plan_patch_sigma(
        cls,
        cfg: CfgNode,
        median_size: tuple[float, float],
        whole_input_size: tuple[int, int],
        landmarks_rel: np.ndarray,
    ) -> tuple[float, str]:
        whole = cfg.clone()
        whole.defrost()
        whole.SAMPLER.SAMPLE_MODE = "full"
        whole.SAMPLER.INPUT_SIZE = list(whole_input_size)
        whole_sigma, _ = cls.plan_sigma(whole, median_size, whole_input_size, landmarks_rel)
        median_h, median_w = median_size
        whole_h, whole_w = whole_input_size
        original = whole_sigma * math.sqrt(median_h * median_w / (whole_h * whole_w))
        if cfg.SAMPLER.PATCH.RESOLUTION_TO_SAMPLE_FROM == "full":
            scale = 1.0
        else:
            input_h, input_w = (int(s) for s in cfg.SAMPLER.INPUT_SIZE)
            scale = math.sqrt(input_h * input_w / (median_h * median_w))
        levels = cls.supervised_levels(cfg)
        patch = network_input_size(cfg)
        floor = sigma_level_floor(levels)
        sigma = round(max(floor, min(original * scale, min(patch) / 8)), 1)
        return sigma, (
            f"whole-image training would use {whole_sigma:g} px at {whole_h} x {whole_w} = "
            f"{original:.1f} original px; {original * scale:.1f} px where patches are cut, "
            f"within [{floor:g} ({levels} supervised levels), 1/8 of the patch side "
            f"{min(patch) / 8:g}]"
        )
