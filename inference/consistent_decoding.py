"""Consistent decoding: one candidate per landmark (or none) that heatmaps and shape agree on.

Each landmark comes with candidates (transforms/decoding.py ``heatmap_candidates``): candidate
0 is the plain decoding, the others are further local maxima of its heatmap. The objective is
the heatmap evidence plus the shape log-likelihood, ``sum_k log a_k + log N(aligned shape)``.
The exact search over C^K combinations is not cheap; this is a principled approximation, in
the manner of RANSAC-free robust fitting:

1. start from the plain decoding; align it robustly to the shape model;
2. test every landmark against its conditional Gaussian given the other inliers (leave one
   out, :meth:`~inference.shape_model.ShapeModel.conditional`): its squared Mahalanobis
   residual is chi-square with 2 degrees of freedom under the model, so it is implausible when
   above ``-2 ln p`` (p = INFERENCE.SHAPE_OUTLIER_P);
3. remove the worst implausible landmark from the inliers, re-align, and repeat 2-3 until all
   inliers are plausible (at most half of the landmarks are removed);
4. re-pick the removed landmarks given the inliers. A removed landmark's options are "none"
   (the conditional mean), which scores as a virtual candidate at the limits of evidence and
   plausibility, ``log(0.05 a_max) - threshold/2`` (a_max: the image's strongest landmark
   activation), and its candidates that carry evidence (activation above 0.05 a_max) and score
   better than "none" on their own, ``log a - d²/2`` with d² given the inliers: like an
   outlier component in a mixture, a strong peak may sit a little beyond the threshold (the
   flagged plain candidate itself may so come back), a far one never. Where the removed
   landmarks' combinations of options number at most ``MAX_COMBINATIONS``, every combination
   is scored exactly: ``sum log a - d²/2`` with d² the chosen candidates' joint Mahalanobis
   residual given the inliers (typically one to three removed landmarks). Otherwise greedily,
   worst first, each landmark given the inliers, rejoining them once chosen (exact for one).
   Landmarks left with "none" get the conditional mean given the inliers and the chosen ones.

If no landmark fails the test in step 2, nothing moves: the result is the plain decoding,
bit for bit. A landmark also stays where it is when its own plain candidate wins in step 4.
Coordinates are in pixels of the original image, where the shape model was fitted.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from inference.shape_model import ShapeModel, to_complex, to_xy

EVIDENCE_FRACTION = 0.05  # a peak below this fraction of the image's strongest is no evidence
MAX_COMBINATIONS = 64  # joint choices scored exactly; beyond, one landmark at a time


@dataclass
class LayoutResult:
    """One image's landmarks after the layout check: coords (K, 2) x,y in original-image
    pixels; replaced (K,) bool, True where the plain decoding was replaced; residual (K,) the
    final squared Mahalanobis residual of each landmark given the others; covariance
    (K, 2, 2) each landmark's conditional covariance given the others, original pixels²;
    activation (K,) the heatmap activation at the chosen candidate (0 for a conditional mean)."""

    coords: np.ndarray
    replaced: np.ndarray
    residual: np.ndarray
    covariance: np.ndarray
    activation: np.ndarray


def outlier_threshold(p_value: float) -> float:
    """The squared Mahalanobis radius a 2D Gaussian exceeds with probability ``p_value``."""
    return -2.0 * math.log(p_value)


def shape_residuals(
    model: ShapeModel,
    coords: np.ndarray,
    observed: np.ndarray | None = None,
    noise_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each landmark's squared Mahalanobis residual (K,) given the others, and its conditional
    covariance (K, 2, 2) in pixels² of ``coords`` (K, 2); ``observed`` (K,) marks landmarks
    that count as evidence (default all); an unobserved landmark's residual is 0;
    ``noise_px`` as in :func:`consistent_decode`."""
    observed = np.ones(len(coords), bool) if observed is None else observed
    transform, _, covariance, d2 = model.residuals(coords, observed, noise_px)
    return np.where(observed, d2, 0.0), transform.inverse_covariance(covariance)


def consistent_decode(
    model: ShapeModel,
    candidates: np.ndarray,
    activations: np.ndarray,
    p_value: float,
    noise_px: float = 0.0,
) -> LayoutResult:
    """Choose one candidate (or the conditional mean) per landmark; see the module docstring.

    Args:
        model: the shape model (fitted in the same pixels as ``candidates``).
        candidates: (K, C, 2) x,y; candidate 0 is the plain decoding.
        activations: (K, C) heatmap values at the candidates (higher = stronger).
        p_value: a landmark is implausible when its residual has a smaller probability.
        noise_px: standard deviation (pixels of ``candidates``) of the predictions' own
            localisation error, added to the shape model's covariance in every direction.
    """
    k = len(candidates)
    threshold = outlier_threshold(p_value)
    coords = candidates[:, 0].copy()
    chosen_activation = activations[:, 0].astype(np.float64).copy()
    inliers = np.ones(k, bool)
    removed: list[int] = []
    while len(removed) < k // 2:
        *_, d2 = model.residuals(coords, inliers, noise_px)
        d2 = np.where(inliers, d2, -np.inf)
        worst = int(np.argmax(d2))
        if d2[worst] <= threshold:
            break
        inliers[worst] = False
        removed.append(worst)
    strongest = max(float(activations[:, 0].max()), 0.0)
    floor = EVIDENCE_FRACTION * strongest
    none_score = math.log(max(floor, 1e-300)) - threshold / 2
    choice = dict.fromkeys(removed)  # landmark -> candidate index, or None: conditional mean
    if removed:
        transform, mean, covariance, _ = model.residuals(coords, inliers, noise_px)
        options = {}
        for landmark in removed:
            aligned = to_xy(transform.apply(to_complex(candidates[landmark])))
            offset = aligned - mean[landmark]
            d2 = np.einsum("ci,ij,cj->c", offset, np.linalg.inv(covariance[landmark]), offset)
            evidence = activations[landmark].astype(np.float64)
            usable = (evidence > floor) & (evidence > 0)
            usable &= np.log(np.where(usable, evidence, 1.0)) - d2 / 2 > none_score
            options[landmark] = [int(c) for c in np.flatnonzero(usable)]
        if math.prod(len(o) + 1 for o in options.values()) <= MAX_COMBINATIONS:
            choice = _joint_choice(
                model, candidates, activations, coords, inliers, options, none_score, noise_px
            )
        else:
            choice = _greedy_choice(
                model, candidates, activations, coords, inliers, options, none_score, noise_px
            )
    replaced = np.zeros(k, bool)
    for landmark, best in choice.items():
        if best is not None:
            coords[landmark] = candidates[landmark, best]
            chosen_activation[landmark] = activations[landmark, best]
            inliers[landmark] = True
        replaced[landmark] = best != 0
    unfilled = [landmark for landmark, best in choice.items() if best is None]
    if unfilled:
        transform, mean, _, _ = model.residuals(coords, inliers, noise_px)
        for landmark in unfilled:
            coords[landmark] = to_xy(transform.invert(to_complex(mean[landmark])))
            chosen_activation[landmark] = 0.0
    conditional_only = np.zeros(k, bool)
    conditional_only[unfilled] = True
    residual, covariance = shape_residuals(model, coords, ~conditional_only, noise_px)
    return LayoutResult(coords, replaced, residual, covariance, chosen_activation)


def _joint_choice(model, candidates, activations, coords, inliers, options, none_score, noise_px):
    """The best combination of options (a candidate index or None per removed landmark) by
    ``sum log a - d²/2``, d² the chosen candidates' joint residual given the inliers."""
    transform = model.align(coords, inliers.astype(np.float64))
    aligned_inliers = to_xy(transform.apply(to_complex(coords)))
    noise = (noise_px * abs(transform.scale_rotation)) ** 2
    mean, covariance = model.joint_conditional(aligned_inliers, inliers, noise)
    order = list(np.flatnonzero(~inliers))  # rows of the joint conditional
    landmarks = list(options)
    best, best_score = dict.fromkeys(landmarks), -math.inf
    for combination in itertools.product(*[[*options[lm], None] for lm in landmarks]):
        chosen = [(lm, c) for lm, c in zip(landmarks, combination, strict=True) if c is not None]
        score = none_score * (len(landmarks) - len(chosen))
        if chosen:
            rows = [order.index(lm) for lm, _ in chosen]
            dims = np.ravel([[2 * r, 2 * r + 1] for r in rows])
            points = np.stack([candidates[lm, c] for lm, c in chosen])
            offset = (to_xy(transform.apply(to_complex(points))) - mean[rows]).reshape(-1)
            d2 = offset @ np.linalg.solve(covariance[np.ix_(dims, dims)], offset)
            score += sum(math.log(activations[lm, c]) for lm, c in chosen) - d2 / 2
        if score > best_score:
            best, best_score = dict(zip(landmarks, combination, strict=True)), score
    return best


def _greedy_choice(model, candidates, activations, coords, inliers, options, none_score, noise_px):
    """Worst first, each removed landmark's best usable candidate (``log a - d²/2``) given the
    inliers and the landmarks chosen before it, or None where none beats ``none_score``."""
    coords, inliers, choice = coords.copy(), inliers.copy(), {}
    for landmark, usable in options.items():
        transform, mean, covariance, _ = model.residuals(coords, inliers, noise_px)
        choice[landmark] = None
        if not usable:
            continue
        aligned = to_xy(transform.apply(to_complex(candidates[landmark, usable])))
        offset = aligned - mean[landmark]
        d2 = np.einsum("ci,ij,cj->c", offset, np.linalg.inv(covariance[landmark]), offset)
        score = np.log(activations[landmark, usable].astype(np.float64)) - d2 / 2
        if score.max() <= none_score:
            continue
        choice[landmark] = usable[int(np.argmax(score))]
        coords[landmark] = candidates[landmark, choice[landmark]]
        inliers[landmark] = True
    return choice
