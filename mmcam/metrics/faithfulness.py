"""Faithfulness: does the model's score follow the map? Deletion / insertion curves (Petsiuk et al., RISE,
arXiv 1806.07421) and the occlusion test of the Grad-CAM paper (Selvaraju et al., arXiv 1610.02391, §5.3:
rank correlation with occlusion maps, after Zeiler & Fergus, arXiv 1311.2901).

All functions take one input and its K targets' maps, and a ``scorer``: a batch of M perturbed copies of
the input (M, C, H, W) -> (M, K) the K targets' scores (probabilities, for the curves' AUC to be comparable).
Perturbed copies go through the model ``batch_size`` at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from mmcam.engine.methods.perturbation import filling
from mmcam.metrics.contract import Case, Metric
from mmcam.metrics.ranks import spearman

Scorer = Callable[[Tensor], Tensor]
BLUR_SIGMA = 5.0  # px, RISE's insertion baseline is a blurred copy of the image
PERTURBATIONS = ("blur", "zero", "background")  # what removed pixels become
# Noise for max-sensitivity (uniform, this radius) and infidelity (Gaussian, this standard deviation), as a
# share of each input's value range, so that pixels in 0-255 and normalized images are moved alike.
SENSITIVITY_RADIUS = 0.01
INFIDELITY_SIGMA = 0.05


def baseline_image(image: Tensor, kind: str = "blur") -> Tensor:
    """What removed pixels become: ``blur``, a Gaussian blur (sigma 5 px) of the (C, H, W) input,
    ``zero``, the value 0 of the model's input space (the dataset mean color for normalized inputs), or
    ``background``, the per-image background estimate occlusion fills with (``filling``: each channel's
    median over the image's frame), so deletion removes cells as occlusion does."""
    if kind == "blur":
        kernel = int(4 * BLUR_SIGMA) | 1
        return gaussian_blur(image[None], [kernel, kernel], [BLUR_SIGMA, BLUR_SIGMA])[0]
    if kind == "zero":
        return torch.zeros_like(image)
    if kind == "background":
        return filling(image[None], "background")[0].clone()
    raise ValueError(f"unknown perturbation baseline '{kind}'; choose one of: {', '.join(PERTURBATIONS)}")


def importance_order(maps: Tensor, seed: int = 0) -> Tensor:
    """(K, H, W) maps -> (K, H*W) pixel indices, most important first; ties in a seeded random order (so a
    constant map deletes pixels at random, not in raster order)."""
    flat = maps.flatten(1)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(flat.shape[0])])
    shuffle = shuffle.to(flat.device)
    by_value = flat.gather(1, shuffle).sort(dim=1, descending=True, stable=True).indices
    return shuffle.gather(1, by_value)


def perturbation_curves(
    scorer: Scorer,
    image: Tensor,
    maps: Tensor,
    baseline: Tensor,
    steps: int = 16,
    insertion: bool = False,
    batch_size: int = 64,
    seed: int = 0,
) -> Tensor:
    """Deletion (or insertion) curves: (C, H, W) input, (K, h, w) maps -> (K, steps + 1) scores; maps on
    a coarser grid than the input (cells) move each cell as one block (nearest upsampling).

    At step s = 0..S the n_s = round(s/S * hw) most important cells of map k are replaced by the
    baseline's (deletion: x_s = x with those pixels from the baseline) or taken from the input onto the
    baseline (insertion: x_s = baseline with those pixels from x); curve_k[s] = score_k(x_s). Tied
    pixels go in an order drawn with ``seed``.
    """
    if steps < 1:
        raise ValueError(f"the curves need at least 1 step, got {steps}")
    targets, height, width = maps.shape
    order = importance_order(maps, seed)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    counts = torch.round(torch.linspace(0, height * width, steps + 1, device=maps.device))
    source, destination = (baseline, image) if insertion else (image, baseline)
    curves = torch.empty(targets * (steps + 1), device=maps.device)
    for begin in range(0, len(curves), batch_size):
        rows = torch.arange(begin, min(begin + batch_size, len(curves)), device=maps.device)
        target, step = rows // (steps + 1), rows % (steps + 1)
        moved = (ranks[target] < counts[step][:, None]).reshape(-1, 1, height, width)
        if (height, width) != tuple(image.shape[-2:]):
            moved = F.interpolate(moved.float(), size=tuple(image.shape[-2:]), mode="nearest") > 0
        copies = torch.where(moved, destination, source)
        curves[rows] = scorer(copies).float().gather(1, target[:, None])[:, 0]
    return curves.reshape(targets, steps + 1)


def curve_area(curves: Tensor) -> Tensor:
    """(K, S + 1) curves over fractions 0, 1/S, ..., 1 -> (K,) area under each (trapezoid rule):

        AUC = 1/S sum_{s=1..S} (c_{s-1} + c_s) / 2.

    Deletion: lower is more faithful (the score falls as soon as the top pixels go); insertion: higher.
    """
    return ((curves[:, 1:] + curves[:, :-1]) / 2).mean(dim=1)


def occlusion_maps(
    scorer: Scorer, image: Tensor, baseline: Tensor, patch: int = 16, stride: int = 8, batch_size: int = 64
) -> Tensor:
    """Occlusion sensitivity (Zeiler & Fergus): slide a ``patch`` x ``patch`` window of the baseline over
    the (C, H, W) input with ``stride``; -> (K, h, w) score drops per window position,

        O_k(i, j) = score_k(x) - score_k(x with window (i, j) from the baseline).
    """
    _, height, width = image.shape
    if patch > min(height, width):
        raise ValueError(f"the occlusion patch ({patch} px) is larger than the input ({height}x{width})")
    tops = range(0, height - patch + 1, stride)
    lefts = range(0, width - patch + 1, stride)
    windows = torch.zeros(len(tops) * len(lefts), 1, height, width, dtype=torch.bool, device=image.device)
    for index, (top, left) in enumerate((t, u) for t in tops for u in lefts):
        windows[index, :, top : top + patch, left : left + patch] = True
    clean = scorer(image[None]).float()
    drops = []
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        drops.append(clean - scorer(torch.where(chunk, baseline, image)).float())
    return torch.cat(drops).T.reshape(-1, len(tops), len(lefts))


def occlusion_correlation(maps: Tensor, occlusion: Tensor, patch: int = 16, stride: int = 8) -> Tensor:
    """(K, H, W) maps and (K, h, w) occlusion maps -> (K,) Spearman rank correlation between each map's
    mean over every occlusion window and the score drop of occluding that window (higher: more faithful)."""
    pooled = F.avg_pool2d(maps[:, None].float(), patch, stride=stride)[:, 0]
    return spearman(pooled, occlusion)


def confidence_changes(scorer: Scorer, image: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
    """Average drop and increase in confidence (Chattopadhay et al., Grad-CAM++, arXiv 1710.11063, §6.1):
    the image multiplied by each target's map, (C, H, W) and (K, H, W) maps in [0, 1] -> two (K,) tensors,

    drop_k = max(0, Y_k - O_k) / Y_k,   increase_k = [O_k > Y_k],

    Y_k the target's score on the image, O_k on image * L_k (one forward for the K masked copies).
    Averaged over samples they are the paper's Average Drop (lower is better) and Increase in Confidence.
    """
    clean = scorer(image[None]).float()[0]
    masked = scorer(image[None] * maps[:, None].to(image.dtype)).float().diagonal()
    drop = torch.clamp(clean - masked, min=0) / clean
    return drop, (masked > clean).float()


def max_sensitivity(
    explain: Callable[[Tensor], Tensor],
    image: Tensor,
    maps: Tensor,
    radius: float = 0.02,
    samples: int = 10,
    seed: int = 0,
) -> Tensor:
    """Max-sensitivity (Yeh et al., arXiv 1901.09392; captum's ``sensitivity_max``): how far the maps move
    when the input moves a little, (C, H, W) image and its (K, H, W) maps -> (K,),

    SENS_k = max_i ||L_k(x + d_i) - L_k(x)||_F / ||L_k(x)||_F,  d_i ~ U[-r, r] per element, i = 1..n,

    ``explain`` maps a batch of n perturbed images to their (n, K, H, W) maps: one call for all of them.
    Lower is better; an all-zero map divides by 1.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand((samples, *image.shape), generator=generator) * 2 - 1) * radius
    moved = explain(image[None] + noise.to(image.device, image.dtype)).float()
    distance = (moved - maps[None].float()).flatten(2).norm(dim=2)
    norm = maps.float().flatten(1).norm(dim=1)
    return (distance / torch.where(norm > 0, norm, 1)).amax(dim=0)


def infidelity(
    scorer: Scorer, image: Tensor, maps: Tensor, sigma: float = 0.1, samples: int = 10, seed: int = 0
) -> Tensor:
    """Infidelity (Yeh et al., arXiv 1901.09392; captum's ``infidelity`` with ``normalize=True``): how
    badly the map, read as a linear model of the score, predicts the score's change under noise,
    (C, H, W) image and (K, H, W) maps in place of per-element attributions (the same for every channel)
    -> (K,),

    INFD_k = 1/n sum_i (beta_k I_i . L_k - (y_k(x) - y_k(x - I_i)))^2,  I_i ~ N(0, sigma^2) per element,
    beta_k = sum_i (I_i . L_k)(y_k(x) - y_k(x - I_i)) / sum_i (I_i . L_k)^2, the scale that fits best
    (maps in [0, 1] have no unit). Lower is better; the n noisy copies share one batch.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.randn((samples, *image.shape), generator=generator) * sigma).to(image.device, image.dtype)
    change = scorer(image[None]).float() - scorer(image[None] - noise).float()  # (n, K)
    dots = torch.einsum("nhw,khw->nk", noise.float().sum(dim=1), maps.float())
    squares = (dots**2).sum(dim=0)
    beta = torch.where(squares > 0, (dots * change).sum(dim=0) / torch.where(squares > 0, squares, 1), 0)
    return ((beta * dots - change) ** 2).mean(dim=0)


def value_span(image: Tensor) -> float:
    """The input's value range, max - min (1 for a constant input)."""
    span = float(image.max() - image.min())
    return span if span > 0 else 1.0


class PixelCurve(Metric):
    """The area under the deletion (or insertion) curve of ``perturbation_curves``, pixels in the map's
    order, removed pixels taken from the run's baseline image."""

    insertion: bool
    needs = frozenset({"settings", "score"})

    def __call__(self, case: Case) -> Tensor:
        settings = case.settings
        curves = perturbation_curves(
            case.score,
            case.image,
            case.maps,
            baseline_image(case.image, settings.baseline),
            settings.steps,
            self.insertion,
            settings.batch_size,
            settings.seed,
        )
        return curve_area(curves)


class Deletion(PixelCurve):
    name, label, better, insertion = "deletion", "deletion AUC", "lower", False


class Insertion(PixelCurve):
    name, label, better, insertion = "insertion", "insertion AUC", "higher", True


class GridCurve(Metric):
    """The area under the deletion (or insertion) curve on the token / patch grid: each map averaged over
    cells of ``patch`` px (16: the patch grid of the bundled ViT-style models), cells removed in the map's
    order and filled as occlusion fills them, with the per-image background estimate
    (``baseline_image(kind="background")``); ``steps`` points per curve. A constant map (the ``uniform``
    baseline) removes cells in a seeded random order: the random reference."""

    insertion: bool
    needs = frozenset({"settings", "score"})

    def __call__(self, case: Case) -> Tensor:
        settings = case.settings
        height, width = case.image.shape[-2:]
        cells = (-(-height // settings.patch), -(-width // settings.patch))
        pooled = F.adaptive_avg_pool2d(case.maps[:, None].float(), cells)[:, 0]
        curves = perturbation_curves(
            case.score,
            case.image,
            pooled,
            baseline_image(case.image, "background"),
            settings.steps,
            self.insertion,
            settings.batch_size,
            settings.seed,
        )
        return curve_area(curves)


class GridDeletion(GridCurve):
    name, label, better, insertion = (
        "deletion-grid",
        "deletion AUC, patch cells to background",
        "lower",
        False,
    )


class GridInsertion(GridCurve):
    name, label, better, insertion = (
        "insertion-grid",
        "insertion AUC, patch cells from background",
        "higher",
        True,
    )


class OcclusionCorrelation(Metric):
    """``occlusion_correlation`` with the input's occlusion maps (computed once for every method)."""

    name, label, better = "occlusion", "occlusion rank corr.", "higher"
    needs = frozenset({"settings", "score", "shared"})

    def __call__(self, case: Case) -> Tensor:
        settings = case.settings

        def reference() -> Tensor:
            baseline = baseline_image(case.image, settings.baseline)
            return occlusion_maps(
                case.score, case.image, baseline, settings.patch, settings.stride, settings.batch_size
            )

        occlusion = case.once_per_input(("occlusion", settings), reference)
        return occlusion_correlation(case.maps, occlusion, settings.patch, settings.stride)


class ConfidenceDrop(Metric):
    """The average drop of ``confidence_changes``."""

    name, label, better = "drop", "average drop in confidence", "lower"
    needs = frozenset({"score"})

    def __call__(self, case: Case) -> Tensor:
        return case.once("confidence", lambda: confidence_changes(case.score, case.image, case.maps))[0]


class ConfidenceIncrease(Metric):
    """The increase in confidence of ``confidence_changes``."""

    name, label, better = "increase", "increase in confidence", "higher"
    needs = frozenset({"score"})

    def __call__(self, case: Case) -> Tensor:
        return case.once("confidence", lambda: confidence_changes(case.score, case.image, case.maps))[1]


class MaxSensitivity(Metric):
    """``max_sensitivity``, radius ``SENSITIVITY_RADIUS`` of the input's value range."""

    name, label, better = "sensitivity", "max-sensitivity", "lower"
    needs = frozenset({"settings", "maps_of"})

    def __call__(self, case: Case) -> Tensor:
        radius = SENSITIVITY_RADIUS * value_span(case.image)
        return max_sensitivity(case.maps_of, case.image, case.maps, radius=radius, seed=case.settings.seed)


class Infidelity(Metric):
    """``infidelity``, noise sigma ``INFIDELITY_SIGMA`` of the input's value range."""

    name, label, better = "infidelity", "infidelity", "lower"
    needs = frozenset({"settings", "score"})

    def __call__(self, case: Case) -> Tensor:
        sigma = INFIDELITY_SIGMA * value_span(case.image)
        return infidelity(case.score, case.image, case.maps, sigma=sigma, seed=case.settings.seed)
