"""Class discrimination: the map of one present class should not point at another present class's object."""

from __future__ import annotations

from torch import Tensor

from mmcam.metrics.pointing import peak_hit_shares


def peaks_on_others(maps: Tensor, other_masks: Tensor, tolerance: int = 0) -> Tensor:
    """(N, H, W) maps of N targets and boolean (N, H, W) masks of the *other* present objects of each
    target's image -> (N,) share of each map's peak on them (lower is more class-discriminative; the
    Grad-CAM paper's §5 "class-discriminative" criterion made measurable):

        confusion = |argmax L ∩ dilate(M_other, tolerance)| / |argmax L|
    """
    return peak_hit_shares(maps, other_masks, tolerance)
