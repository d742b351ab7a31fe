"""The pointing game: does a map's maximum fall on the object it should be about? And its energy variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmcam.metrics.contract import Case, Metric


def _dilated(masks: Tensor, tolerance: int) -> Tensor:
    masks = masks.bool()
    if tolerance <= 0:
        return masks
    size = 2 * tolerance + 1
    return F.max_pool2d(masks[:, None].float(), size, stride=1, padding=tolerance)[:, 0] > 0


def peak_hit_shares(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """The pointing game with ties: (N, H, W) maps and masks -> (N,) expected hit of a peak drawn
    uniformly among the map's maxima (Zhang et al., "Top-down neural attention by excitation backprop",
    arXiv 1608.00507):

        hit = |argmax L ∩ dilate(M, tolerance)| / |argmax L|

    1 or 0 when the maximum is unique; a constant map scores the (dilated) mask's share of the image
    instead of whatever pixel ``argmax`` returns first.
    """
    masks = _dilated(masks.to(maps.device), tolerance).flatten(1)
    flat = maps.flatten(1)
    at_peak = flat == flat.amax(dim=1, keepdim=True)
    return (at_peak & masks).sum(dim=1) / at_peak.sum(dim=1)


def energy_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, arXiv 1910.01279, §4.2): (N, H, W) maps >= 0
    and boolean masks -> (N,) share of the map's mass inside the mask,

        energy = sum_x L(x) M(x) / sum_x L(x)   (0 for an all-zero map).
    """
    maps = maps.float()
    total = maps.sum(dim=(-2, -1))
    inside = (maps * masks.to(maps.device, maps.dtype)).sum(dim=(-2, -1))
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1), 0.0)


class PeakPointing(Metric):
    """``peak_hit_shares`` against each target's objects, with the run's tolerance in px."""

    name, label, better = "pointing", "pointing game", "higher"
    needs = frozenset({"truth", "settings"})

    def __call__(self, case: Case) -> Tensor:
        return peak_hit_shares(case.maps, case.truth.masks, case.settings.tolerance)


class EnergyPointing(Metric):
    """``energy_inside`` each target's objects."""

    name, label, better = "energy", "energy pointing", "higher"
    needs = frozenset({"truth"})

    def __call__(self, case: Case) -> Tensor:
        return energy_inside(case.maps, case.truth.masks)
