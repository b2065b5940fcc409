"""A statistical shape model of the landmarks: where they lie relative to each other.

Fitted at training time from the training annotations (x,y in pixels of the original images,
NaN where a landmark is missing) and stored in the checkpoint as plain tensors
(:meth:`ShapeModel.to_state`). Three steps:

1. **Generalised Procrustes alignment** (similarity: translation, rotation, isotropic scale):
   every shape is aligned to the mean by weighted least squares on its observed landmarks, the
   mean is re-estimated from the aligned shapes and normalised (centred, unit root sum of
   squares, rotation held to the previous mean), ten times. Missing landmarks have weight 0.
   Label slips are trimmed: a landmark whose aligned residual exceeds the 99.9 % quantile of a
   Rayleigh distribution, with a robust per-landmark scale (median residual / 1.177), gets
   weight 0 in the alignments, the mean and the covariance.
2. **A Gaussian in aligned coordinates**: the pairwise-complete weighted covariance S of the
   2K aligned coordinates (x0, y0, x1, y1, ...), projected onto the positive semi-definite
   cone, is shrunk towards its mean variance s² times the identity:
   ``(n S + p s² I) / (n + p)`` with n shapes and p = 2K, the posterior mean under an
   inverse-Wishart prior worth p pseudo-shapes. Small training sets therefore give a smooth,
   nearly isotropic model, large ones their sample covariance.
3. **Probabilistic PCA**: the first M eigenvectors (the fewest explaining ``variance_fraction``
   of the variance, at most ``max_modes`` and n - 1) keep their eigenvalues; every other
   direction gets the maximum-likelihood isotropic residual variance, the mean of the remaining
   eigenvalues (the 4 similarity directions, which alignment empties, excluded).

4. **Per-landmark calibration on held-out shapes**: the in-sample fit is overconfident for
   landmarks whose variation the modes miss (on 66 cephalograms, landmark 3 was flagged at
   p = 0.001 in 10 % of unseen true shapes). The shapes are split into folds; each fold's
   landmarks are tested against a model fitted without that fold (each landmark given the
   others, as inference does), and each landmark's rows and columns of the covariance are
   scaled by ``s_k`` so that the 90 % quantile of its held-out squared residuals is the
   chi-square's (2 degrees of freedom), ``-2 ln 0.1`` (three rounds; ``s_k`` at least 1, so
   calibration only ever widens a landmark, and at most 25). The 90 % quantile sees a
   heavy-tailed landmark (the median did not: it widened landmark 3 only 1.16 times and left
   it flagged) and is still estimated from a few dozen shapes, and barely moved by the rare
   label slips that remain.

Inference aligns the observed landmarks of one image to the mean, conditions the Gaussian on
them (:meth:`ShapeModel.conditional`) and maps the result back to the image; the alignment's
own uncertainty is ignored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from datasets.dataset_base import DatasetBase
from utils.errors import CheckpointError, DataError

logger = logging.getLogger(__name__)

_RAYLEIGH_MEDIAN = math.sqrt(2 * math.log(2))  # median / sigma of a 2D Gaussian's radius
_TRIM = math.sqrt(-2 * math.log(1e-3))  # radius beyond which a 2D Gaussian has 0.1 %
_STATE_KEYS = ("mean", "modes", "mode_variances", "residual_variance", "num_shapes")
# the held-out residuals' 90 % quantile is matched to a chi-square's with 2 degrees of freedom:
# far enough into the tail to see heavy-tailed landmarks, close enough to be estimated
_CALIBRATION_QUANTILE = 0.9
_CHI2_2_QUANTILE = -2 * math.log(1 - _CALIBRATION_QUANTILE)
_CALIBRATION_FOLDS = 5
_CALIBRATION_ROUNDS = 3
_MAX_LANDMARK_SCALE = 25.0


@dataclass(frozen=True)
class Similarity:
    """``u = scale_rotation * (z - source_centre) + target_centre`` on complex points z = x + iy."""

    scale_rotation: complex
    source_centre: complex
    target_centre: complex

    def apply(self, z: np.ndarray) -> np.ndarray:
        return self.scale_rotation * (z - self.source_centre) + self.target_centre

    def invert(self, u: np.ndarray) -> np.ndarray:
        return (u - self.target_centre) / self.scale_rotation + self.source_centre

    def inverse_covariance(self, covariance: np.ndarray) -> np.ndarray:
        """(..., 2, 2) covariances in target units mapped to source units (rotated, scaled)."""
        a = 1 / self.scale_rotation
        rotation = np.array([[a.real, -a.imag], [a.imag, a.real]])
        return rotation @ covariance @ rotation.T


def fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> Similarity:
    """Weighted least-squares similarity from complex (K,) ``source`` to ``target`` points."""
    w = weights / max(weights.sum(), 1e-300)
    cs, ct = (w * source).sum(), (w * target).sum()
    zs, zt = source - cs, target - ct
    denominator = (w * np.abs(zs) ** 2).sum()
    a = (w * np.conj(zs) * zt).sum() / denominator if denominator > 0 else 1.0 + 0j
    return Similarity(complex(a), complex(cs), complex(ct))


def to_complex(coords: np.ndarray) -> np.ndarray:
    """(..., 2) x,y → (...,) complex x + iy."""
    return coords[..., 0] + 1j * coords[..., 1]


def to_xy(z: np.ndarray) -> np.ndarray:
    """(...,) complex → (..., 2) x,y."""
    return np.stack([z.real, z.imag], axis=-1)


def _host_array(value) -> np.ndarray:
    """A float64 NumPy copy of a checkpoint value; tensors come back on the device the checkpoint
    was loaded to (``map_location="cuda"`` when testing on a GPU), so they go to the host first."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class ShapeModel:
    """A Gaussian over K landmarks in aligned (unit-size) coordinates.

    mean (K, 2) centred, unit root sum of squares; modes (2K, M) orthonormal principal
    directions over (x0, y0, x1, y1, ...); mode_variances (M,); residual_variance, the
    isotropic variance of every other direction; num_shapes, the training shapes used;
    landmark_scales (K,), the held-out calibration of each landmark's variance (None = 1).
    """

    mean: np.ndarray
    modes: np.ndarray
    mode_variances: np.ndarray
    residual_variance: float
    num_shapes: int
    landmark_scales: np.ndarray | None = None

    @property
    def num_landmarks(self) -> int:
        return len(self.mean)

    def covariance(self) -> np.ndarray:
        """(2K, 2K) model covariance in aligned units²."""
        projection = self.modes @ self.modes.T
        eye = np.eye(len(projection))
        cov = (self.modes * self.mode_variances) @ self.modes.T + self.residual_variance * (
            eye - projection
        )
        if self.landmark_scales is None:
            return cov
        root = np.sqrt(np.repeat(self.landmark_scales, 2))
        return root[:, None] * cov * root[None, :]

    def residuals(
        self, coords: np.ndarray, observed: np.ndarray, noise_px: float = 0.0
    ) -> tuple[Similarity, np.ndarray, np.ndarray, np.ndarray]:
        """The alignment of the ``observed`` (K,) landmarks of ``coords`` (K, 2, image pixels)
        and, in aligned units, each landmark's conditional mean (K, 2) and covariance
        (K, 2, 2) given the other observed ones, and its squared Mahalanobis residual (K,);
        ``noise_px``: the predictions' own localisation noise (std, image pixels)."""
        transform = self.align(coords, observed.astype(np.float64))
        aligned = to_xy(transform.apply(to_complex(coords)))
        noise = (noise_px * abs(transform.scale_rotation)) ** 2
        mean, covariance = self.conditional(aligned, observed, noise)
        offset = aligned - mean
        d2 = np.einsum("ki,kij,kj->k", offset, np.linalg.inv(covariance), offset)
        return transform, mean, covariance, d2

    def to_state(self) -> dict:
        """Plain tensors and numbers, loadable with ``torch.load(weights_only=True)``."""
        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "modes": torch.from_numpy(self.modes.copy()),
            "mode_variances": torch.from_numpy(self.mode_variances.copy()),
            "residual_variance": float(self.residual_variance),
            "num_shapes": int(self.num_shapes),
            "landmark_scales": torch.from_numpy(self._scales().copy()),
        }

    def _scales(self) -> np.ndarray:
        if self.landmark_scales is None:
            return np.ones(self.num_landmarks)
        return np.asarray(self.landmark_scales, dtype=np.float64)

    @classmethod
    def from_state(cls, state: dict, source: str = "checkpoint") -> ShapeModel:
        """The model of :meth:`to_state`'s dict; a malformed one raises CheckpointError."""
        try:
            mean, modes, variances = (
                _host_array(state[key]) for key in ("mean", "modes", "mode_variances")
            )
            # checkpoints saved before the held-out calibration have no landmark_scales
            scales = _host_array(state["landmark_scales"]) if "landmark_scales" in state else None
            model = cls(
                mean,
                modes,
                variances,
                float(state["residual_variance"]),
                int(state["num_shapes"]),
                scales,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{source}: malformed shape_model ({err!r}; keys {list(_STATE_KEYS)})"
            ) from None
        k = len(mean)
        if (
            mean.shape != (k, 2)
            or modes.ndim != 2
            or modes.shape[0] != 2 * k
            or variances.shape != (modes.shape[1],)
            or not model.residual_variance > 0
            or (scales is not None and (scales.shape != (k,) or not (scales > 0).all()))
        ):
            raise CheckpointError(f"{source}: malformed shape_model (inconsistent shapes)")
        return model

    def align(self, coords: np.ndarray, weights: np.ndarray, iterations: int = 3) -> Similarity:
        """Robust similarity from (K, 2) image ``coords`` to the mean (aligned units).

        ``weights`` (K,): 0 for landmarks to ignore. Iteratively reweighted: Cauchy weights on
        each residual's distance in units of its landmark's marginal standard deviation,
        relative to 2.5 times the median of these distances (a relative scale cannot collapse
        the fit), so that a few far-off landmarks barely move the alignment."""
        z, m = to_complex(coords), to_complex(self.mean)
        spread = np.sqrt(self.marginal_variance())
        w = weights.astype(np.float64)
        transform = _least_median_start(z, m, w, spread)
        for _ in range(iterations):
            distance = np.abs(transform.apply(z) - m) / spread
            scale = 2.5 * max(float(np.median(distance[w > 0])), 1e-12)
            transform = fit_similarity(z, m, w / (1 + (distance / scale) ** 2))
        return transform

    def marginal_variance(self) -> np.ndarray:
        """(K,) mean per-axis variance of each landmark in aligned units²."""
        diagonal = np.diag(self.covariance()).reshape(-1, 2)
        return diagonal.mean(axis=1)

    def conditional(
        self, aligned: np.ndarray, observed: np.ndarray, noise_variance: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each landmark's Gaussian given the observed others, in aligned coordinates.

        Args:
            aligned: (K, 2) landmarks in aligned coordinates (unobserved rows are ignored).
            observed: (K,) bool; at least one landmark.
            noise_variance: isotropic variance (aligned units²) added to every coordinate:
                the predictions' own localisation noise, which the training labels lack.
        Returns:
            mean (K, 2) and covariance (K, 2, 2): for an observed landmark, given the other
            observed ones (leave one out); for an unobserved one, given all observed ones.
        """
        k = self.num_landmarks
        cov = self.covariance() + noise_variance * np.eye(2 * k)
        dims = np.repeat(observed, 2)
        x = aligned.reshape(-1) - self.mean.reshape(-1)
        precision = np.linalg.inv(cov[np.ix_(dims, dims)])
        mean = np.empty((k, 2))
        covariance = np.empty((k, 2, 2))
        obs_index = np.flatnonzero(observed)
        # Observed: E[x_k | rest] = x_k - P_kk^-1 (P (x - mu))_k, Cov = P_kk^-1.
        weighted = precision @ x[dims]
        for j, landmark in enumerate(obs_index):
            block = slice(2 * j, 2 * j + 2)
            cov_k = np.linalg.inv(precision[block, block])
            covariance[landmark] = cov_k
            mean[landmark] = aligned[landmark] - cov_k @ weighted[block]
        missing = ~observed
        if missing.any():
            mean[missing], full = self._given(cov, precision, weighted, observed)
            for j, landmark in enumerate(np.flatnonzero(missing)):
                covariance[landmark] = full[2 * j : 2 * j + 2, 2 * j : 2 * j + 2]
        return mean, covariance

    def joint_conditional(
        self, aligned: np.ndarray, observed: np.ndarray, noise_variance: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The unobserved landmarks' joint Gaussian given the observed ones (aligned units):
        mean (U, 2) and covariance (2U, 2U), U unobserved landmarks in index order."""
        cov = self.covariance() + noise_variance * np.eye(2 * self.num_landmarks)
        dims = np.repeat(observed, 2)
        precision = np.linalg.inv(cov[np.ix_(dims, dims)])
        weighted = precision @ (aligned.reshape(-1) - self.mean.reshape(-1))[dims]
        return self._given(cov, precision, weighted, observed)

    def _given(self, cov, precision, weighted, observed) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian conditioning of the unobserved on the observed coordinates, from the
        observed block's ``precision`` and ``weighted`` = precision @ (x_O - mu_O)."""
        missing, dims = np.repeat(~observed, 2), np.repeat(observed, 2)
        cross = cov[np.ix_(missing, dims)]
        mean = (self.mean.reshape(-1)[missing] + cross @ weighted).reshape(-1, 2)
        return mean, cov[np.ix_(missing, missing)] - cross @ precision @ cross.T


def _least_median_start(
    z: np.ndarray, m: np.ndarray, weights: np.ndarray, spread: np.ndarray, max_pairs: int = 300
) -> Similarity:
    """The similarity through two landmarks that gives the smallest median residual (least
    median of squares): every pair of used landmarks, or ``max_pairs`` fixed random ones. A
    least-squares start would be dragged off by one gross miss and stay there."""
    used = np.flatnonzero(weights > 0)
    first, second = np.triu_indices(len(used), 1)
    if len(first) > max_pairs:
        pick = np.random.default_rng(0).choice(len(first), max_pairs, replace=False)
        first, second = first[pick], second[pick]
    i, j = used[first], used[second]
    step = z[j] - z[i]
    valid = np.abs(step) > 0
    if not valid.any():
        return fit_similarity(z, m, weights)
    i, j = i[valid], j[valid]
    a = (m[j] - m[i]) / (z[j] - z[i])
    shift = m[i] - a * z[i]
    distance = np.abs(a[:, None] * z[used] + shift[:, None] - m[used]) / spread[used]
    best = int(np.argmin(np.median(distance, axis=1)))
    return Similarity(complex(a[best]), 0j, complex(shift[best]))


def _normalise(mean: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Centre a complex (K,) mean, scale it to unit norm and (with a reference) rotate it onto
    the reference, so the GPA iterations do not drift."""
    mean = mean - mean.mean()
    if reference is not None:
        a = fit_similarity(mean, reference, np.ones(len(mean))).scale_rotation
        mean = mean * (a / abs(a))
    return mean / np.sqrt((np.abs(mean) ** 2).sum())


def _trim_weights(residual: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(N, K) 1/0 weights: observed landmarks whose residual is within the Rayleigh 99.9 %
    radius of a robust per-landmark scale."""
    masked = np.where(observed, residual, np.nan)
    scale = np.nanmedian(masked, axis=0) / _RAYLEIGH_MEDIAN
    return (observed & (residual <= _TRIM * np.maximum(scale, 1e-12))).astype(np.float64)


def fit_shape_model(
    coords: np.ndarray,
    variance_fraction: float = 0.9,
    max_modes: int = 10,
    iterations: int = 10,
    calibrate: bool = True,
) -> ShapeModel:
    """Fit a :class:`ShapeModel` to (N, K, 2) x,y landmarks (any pixels; NaN = missing).

    Shapes with fewer than 3 observed landmarks are skipped. Raises DataError when fewer than
    3 shapes remain or a landmark is observed in fewer than 2 of them. ``calibrate``: scale
    each landmark's variance on held-out shapes (step 4 of the module docstring; needs at
    least 2 shapes per fold, else the scales stay 1).
    """
    model = _fit_gaussian(coords, variance_fraction, max_modes, iterations)
    coords = np.asarray(coords, dtype=np.float64)
    observed = np.isfinite(coords).all(axis=-1)
    usable = observed.sum(axis=1) >= 3
    if not calibrate or usable.sum() < 2 * _CALIBRATION_FOLDS:
        return model

    def fit(subset: np.ndarray) -> ShapeModel:
        return _fit_gaussian(subset, variance_fraction, max_modes, iterations)

    return replace(model, landmark_scales=held_out_scales(coords[usable], fit))


def held_out_scales(coords: np.ndarray, fit: Callable[[np.ndarray], ShapeModel]) -> np.ndarray:
    """(K,) per-landmark variance scales from ``_CALIBRATION_FOLDS`` folds of the (N, K, 2)
    shapes ``coords`` (NaN = missing): ``fit`` (shapes -> ShapeModel) is fitted without each
    fold, and every landmark of the fold is tested given its other landmarks. Each round
    multiplies a landmark's scale by its held-out squared residuals' 90 % quantile over the
    chi-square's, within [1, ``_MAX_LANDMARK_SCALE``]."""
    n, k = coords.shape[:2]
    observed = np.isfinite(coords).all(axis=-1)
    fold_of = np.arange(n) % _CALIBRATION_FOLDS
    models = {}
    for fold in range(_CALIBRATION_FOLDS):
        try:
            models[fold] = fit(coords[fold_of != fold])
        except DataError:  # a landmark too rarely observed without this fold: skip it
            continue
    scales = np.ones(k)
    for _ in range(_CALIBRATION_ROUNDS):
        d2 = np.full((n, k), np.nan)
        for i in range(n):
            if fold_of[i] in models:
                model = replace(models[fold_of[i]], landmark_scales=scales)
                shape = np.nan_to_num(coords[i])  # missing landmarks have weight 0
                d2[i, observed[i]] = model.residuals(shape, observed[i])[3][observed[i]]
        tested = np.isfinite(d2).any(axis=0)
        ratio = np.ones(k)
        quantile = np.nanquantile(d2[:, tested], _CALIBRATION_QUANTILE, axis=0)
        ratio[tested] = quantile / _CHI2_2_QUANTILE
        scales = np.clip(scales * ratio, 1.0, _MAX_LANDMARK_SCALE)
    return scales


def _fit_gaussian(
    coords: np.ndarray, variance_fraction: float, max_modes: int, iterations: int
) -> ShapeModel:
    """Steps 1-3 of the module docstring (no held-out calibration)."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise DataError(f"shape model: landmarks must be (N, K, 2), got {coords.shape}")
    observed = np.isfinite(coords).all(axis=-1)
    keep = observed.sum(axis=1) >= 3
    coords, observed = coords[keep], observed[keep]
    n, k = observed.shape
    if n < 3 or (observed.sum(axis=0) < 2).any():
        raise DataError(
            f"shape model: needs at least 3 training shapes with 3 landmarks and every landmark "
            f"in 2 of them; got {n} shapes, per-landmark counts {observed.sum(axis=0).tolist()}"
        )
    z = np.where(observed, to_complex(np.nan_to_num(coords)), 0)
    weights = observed.astype(np.float64)
    reference = int(observed.sum(axis=1).argmax())
    mean = _normalise(z[reference], None)
    aligned = z
    for _ in range(iterations):
        aligned = np.stack([fit_similarity(z[i], mean, weights[i]).apply(z[i]) for i in range(n)])
        new_mean = (weights * aligned).sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-12)
        # A landmark missing from the reference starts from the others' aligned average.
        mean = _normalise(np.where(weights.sum(axis=0) > 0, new_mean, mean), mean)
        weights = _trim_weights(np.abs(aligned - mean), observed)
    vectors = to_xy(aligned - mean).reshape(n, 2 * k)
    w = np.repeat(weights, 2, axis=1)
    pair_weight = w.T @ w
    sample = ((w * vectors).T @ (w * vectors)) / np.maximum(pair_weight, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(sample)
    sample = (eigenvectors * np.clip(eigenvalues, 0, None)) @ eigenvectors.T
    p = 2 * k
    mean_variance = np.trace(sample) / p
    shrunk = (n * sample + p * mean_variance * np.eye(p)) / (n + p)
    eigenvalues, eigenvectors = np.linalg.eigh(shrunk)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    informative = max(p - 4, 1)  # alignment removes 4 similarity directions
    explained = np.cumsum(eigenvalues[:informative]) / eigenvalues[:informative].sum()
    modes = int(np.searchsorted(explained, variance_fraction) + 1)
    modes = max(0, min(modes, max_modes, n - 1, informative - 1))
    rest = eigenvalues[modes:informative]
    residual = float(rest.mean()) if len(rest) else float(eigenvalues[-1])
    residual = max(residual, 1e-6 * mean_variance, 1e-12)
    return ShapeModel(
        mean=to_xy(mean),
        modes=eigenvectors[:, :modes].copy(),
        mode_variances=eigenvalues[:modes].copy(),
        residual_variance=residual,
        num_shapes=n,
    )


def fit_dataset_shape_model(dataset: DatasetBase) -> ShapeModel | None:
    """The shape model of a dataset's annotated samples (original-image pixels, NaN where a
    landmark is missing); with too few of them, None and the reason logged (consistent
    decoding is then refused for checkpoints of this model)."""
    shapes = [s.coords for s in dataset.samples if s.has_annotation]
    coords = np.stack(shapes) if shapes else np.zeros((0, dataset.num_landmarks, 2))
    try:
        model = fit_shape_model(coords)
    except DataError as err:
        logger.warning("%s: no shape model for consistent decoding (%s)", dataset.json_path, err)
        return None
    logger.info(
        "shape model of %d training shapes: %d modes", model.num_shapes, len(model.mode_variances)
    )
    return model
