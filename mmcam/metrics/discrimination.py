"""Class discrimination: the map of one present class should not point at another present class's object."""

from __future__ import annotations

import torch
from torch import Tensor

from mmcam.metrics.contract import Case, Metric
from mmcam.metrics.pointing import peak_hit_shares


def peaks_on_others(maps: Tensor, other_masks: Tensor, tolerance: int = 0) -> Tensor:
    """(N, H, W) maps of N targets and boolean (N, H, W) masks of the *other* present objects of each
    target's image -> (N,) share of each map's peak on them (lower is more class-discriminative; the
    Grad-CAM paper's §5 "class-discriminative" criterion made measurable):

        confusion = |argmax L ∩ dilate(M_other, tolerance)| / |argmax L|
    """
    return peak_hit_shares(maps, other_masks, tolerance)


class Discrimination(Metric):
    """``peaks_on_others`` with the run's tolerance; NaN for a target alone in its scene."""

    name, label, better = "discrimination", "peak on another object", "lower"
    needs = frozenset({"truth", "settings"})

    def __call__(self, case: Case) -> Tensor:
        others = case.truth.others.to(case.maps.device)
        confusion = peaks_on_others(case.maps, others, case.settings.tolerance)
        return torch.where(others.flatten(1).any(1), confusion, torch.nan)
