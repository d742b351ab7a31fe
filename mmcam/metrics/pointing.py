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


TOLERANCE_AT_224 = 15  # px: the pointing game's tolerance at a 224 px input (Zhang et al.)


def tolerance_px(size: tuple[int, int]) -> float:
    """The tolerant pointing game's radius for an input of ``size`` (H, W): 15 px at 224 px, scaled with
    the input's short side, r = 15 min(H, W) / 224."""
    return TOLERANCE_AT_224 * min(size) / 224


def within_distance(masks: Tensor, radius: float) -> Tensor:
    """(N, H, W) boolean masks -> (N, H, W): the pixels whose centre lies within ``radius`` px (Euclidean)
    of a pixel of the mask (the mask dilated by a disk)."""
    masks = masks.bool()
    reach = int(radius)
    if reach < 1:
        return masks
    offsets = torch.arange(-reach, reach + 1, device=masks.device, dtype=torch.float32)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    grown = F.conv2d(masks[:, None].float(), disk[None, None], padding=reach)[:, 0]
    return grown > 0.5


def hallucination_nan(values: Tensor, case: Case, unambiguous: bool = False) -> Tensor:
    """``values`` with NaN for the targets that name no object of the scene (and, with ``unambiguous``,
    for those about several objects): they are counted apart, not scored against a neighbour."""
    keep = case.truth.described
    if unambiguous:
        keep = [described and one for described, one in zip(keep, case.truth.unambiguous)]
    return torch.where(torch.tensor(keep, device=values.device), values, torch.nan)


class PeakPointing(Metric):
    """The pointing game (``peak_hit_shares``) against each target's objects: a hit when the map's peak
    lies inside one of them (``strict``; the run's ``--tolerance`` px if given) or within
    ``tolerance_px`` of one (``tolerant``, Zhang et al.'s 15 px at 224 px). A target about several
    objects (an attribute they share) hits on any of them; ``unambiguous`` scores only the targets
    about exactly one. Targets about no object of the scene (hallucinated phrases) are NaN."""

    name, label, better = "pointing", "pointing game, strict (peak in the object)", "higher"
    needs = frozenset({"truth", "settings"})
    tolerant, unambiguous = False, False

    def __call__(self, case: Case) -> Tensor:
        if self.tolerant:
            near = within_distance(case.truth.masks.to(case.maps.device), tolerance_px(case.maps.shape[-2:]))
            hits = peak_hit_shares(case.maps, near)
        else:
            hits = peak_hit_shares(case.maps, case.truth.masks, case.settings.tolerance)
        return hallucination_nan(hits, case, self.unambiguous)


class TolerantPointing(PeakPointing):
    name, label, tolerant = "pointing-tolerant", "pointing game, tolerant (15 px at 224)", True


class UnambiguousPointing(PeakPointing):
    name, label, unambiguous = "pointing-unambiguous", "pointing game, strict, one-object targets", True


class UnambiguousTolerantPointing(PeakPointing):
    name, label = "pointing-tolerant-unambiguous", "pointing game, tolerant, one-object targets"
    tolerant, unambiguous = True, True


class Hallucinated(Metric):
    """1 for a target that names no object of the scene (a generated phrase no object matches), else 0:
    the share of hallucinated words, counted apart from the pointing game."""

    name, label, better = "hallucinated", "share of targets naming no object of the scene", "lower"
    needs = frozenset({"truth"})

    def __call__(self, case: Case) -> Tensor:
        return 1 - torch.tensor(case.truth.described, dtype=torch.float32)


class EnergyPointing(Metric):
    """``energy_inside`` each target's objects."""

    name, label, better = "energy", "energy pointing", "higher"
    needs = frozenset({"truth"})

    def __call__(self, case: Case) -> Tensor:
        return energy_inside(case.maps, case.truth.masks)
