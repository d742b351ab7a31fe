"""Is there anything to show? A map whose evidence is negligible against the score it explains, or that is
constant, would be scaled up to full range by ``resize.normalize`` and drawn as a confident spot (a blank
image's Grad-CAM: a raw maximum of 0.002 on a real scene's 1.5 becomes a red corner). Such maps are judged
here once per call, from quantities in the score's own units:

- a method whose map is a sum of first-order score contributions (Grad-CAM: sum_ij L_kij = sum_c alpha_kc
  sum_ij A_cij, which is y_k - y_k(A = 0) for a head that averages the grid) is judged on its own map:
  E_k = sum_ij (L_kij - min L_k), the part of the score the map's shape accounts for;
- occlusion and RISE, whose cells are score changes (the mean drop of the windows over a cell; the mean
  score of the masks that keep it), on max L - min L; perturbation saliency, whose cells are half squared
  score changes, on max sqrt(2 L) - min sqrt(2 L);
- every other method that reads gradients (units of gradients, relevance, attention) on the first-order
  evidence of its target at the same layer: E_k of HiResCAM's map ReLU(sum_c G_kcij A_cij);
- the methods without gradients (Eigen-CAM, KPCA-CAM, FEM, RandomCAM: the same map for every target;
  Score-CAM, IS-CAM, SS-CAM, Ablation-CAM: softmax or relative weights) have no score-unit measure in their
  result and are judged only on being constant.

E_k is in the score's units (nats for logits and log-probabilities). A log-probability near 0 (p close to
1) has a gradient scaled by 1 - p (d log p_i = sum_(j != i) p_j d(z_i - z_j)): a certain word's evidence
is judged in logit-margin units, E_k / (1 - p), so certainty is not mistaken for blindness (measured, not yet
applied: see ``negligible``). A map is negligible when that evidence is under ``NEGLIGIBLE`` or the map is
constant (a 1 x 1 grid, a blank input): the explanation says so (``Explanation.negligible``) and the command
line and report draw it empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext

# Score units (nats) below which a map shows nothing; calibrated on the trained fixtures (docs/python.md,
# "Negligible evidence"): real scenes' top-class maps start at 0.05, blank images' maps end at 0.004.
NEGLIGIBLE = 0.01

# A map whose range is under this share of its largest magnitude is constant to float32 precision.
CONSTANT = 1e-5


def spread(maps: Tensor) -> Tensor:
    """E = sum over the grid of (L - min L): (B, K, *grid) -> (B, K)."""
    flat = maps.flatten(2)
    return (flat - flat.amin(dim=-1, keepdim=True)).sum(dim=-1)


def span(maps: Tensor) -> Tensor:
    """max L - min L over the grid: (B, K, *grid) -> (B, K)."""
    flat = maps.flatten(2)
    return flat.amax(dim=-1) - flat.amin(dim=-1)


def first_order(ctx: CamContext) -> Tensor:
    """E of HiResCAM's map ReLU(sum_c G_kcij A_cij): the first-order score contributions of the layer's cells
    that vary over the grid, (B, K) in the score's units."""
    return spread(torch.relu((ctx.gradients * ctx.activations[:, None]).sum(dim=2)))


def constant(maps: Tensor) -> Tensor:
    """(B, K) True where a map (B, K, *grid) has one value up to float precision (a 1 x 1 grid, or all zero)."""
    flat = maps.flatten(2)
    span = flat.amax(dim=-1) - flat.amin(dim=-1)
    return span <= CONSTANT * flat.abs().amax(dim=-1)


def in_margin_units(evidence: Tensor, scores: Tensor, kinds: list[str]) -> Tensor:
    """Evidence for a log-probability score divided by 1 - p (p = exp(score)), other scores' as they are."""
    log_probability = torch.tensor([kind == "log-probability" for kind in kinds], device=scores.device)
    headroom = -torch.expm1(scores.clamp(max=0))  # 1 - p, exact near p = 1
    return torch.where(log_probability, evidence / headroom.clamp(min=1e-12), evidence)


def negligible(evidence: Tensor | None, raw: Tensor, scores: Tensor, kinds: list[str]) -> Tensor:
    """(B, K) True where a map shows nothing: constant, or its evidence (if the method has a measure of it)
    under ``NEGLIGIBLE`` for a score in logit units. Log-probabilities (caption words, generated answers) are
    judged only on being constant: trained fixtures' real maps (blip-vqa-shapes, llava-shapes) fell under the
    threshold even in margin units (``in_margin_units``), so it is not calibrated for them."""
    flat = constant(raw)
    if evidence is None:
        return flat
    logits = torch.tensor(["logit" in kind for kind in kinds], device=scores.device)
    return flat | (logits & (in_margin_units(evidence, scores, kinds) < NEGLIGIBLE))


def negligible_note(count: int, total: int) -> str:
    """The one line a user reads when ``count`` of ``total`` maps were drawn empty."""
    return (
        f"{count} of {total} maps show negligible evidence (constant, or accounting for under "
        f"{NEGLIGIBLE} of the score they explain) and are drawn empty: the input (blank, or smaller than "
        "the layer's grid) gives the model nothing to point at for those targets"
    )
