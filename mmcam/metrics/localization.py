"""Weakly supervised localization, the Grad-CAM paper's protocol (Selvaraju et al., arXiv 1610.02391, §4.1,
after Zhou et al.'s CAM, arXiv 1512.04150): threshold the map, box its largest blob, compare with the object's box."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmcam.metrics.contract import Case, Metric

THRESHOLD = 0.15  # of each map's maximum, as in the Grad-CAM paper
IOU_HIT = 0.5


def component_labels(regions: Tensor) -> Tensor:
    """(N, H, W) boolean regions -> (N, H, W) long labels of their 8-connected components, -1 outside.

    Every foreground pixel starts with its own flat index and repeatedly takes the largest label among
    its 3x3 foreground neighbours until nothing changes: each component ends labelled by its largest
    member index (unique across the batch).
    """
    batch, height, width = regions.shape
    inside = regions.bool()
    start = torch.arange(batch * height * width, device=regions.device).reshape(batch, height, width)
    labels = torch.where(inside, start, -1).double()[
        :, None
    ]  # float64: max-pool needs floats, exact to 2**53
    while True:
        grown = torch.where(inside[:, None], F.max_pool2d(labels, 3, stride=1, padding=1), -1.0)
        if torch.equal(grown, labels):
            return labels[:, 0].long()
        labels = grown


def largest_component_boxes(maps: Tensor, threshold: float = THRESHOLD) -> Tensor:
    """(N, H, W) maps -> (N, 4) float boxes (x0, y0, x1, y1), x1/y1 exclusive, around the largest
    8-connected component of {x : L(x) >= threshold * max L}. An all-zero map selects every pixel."""
    batch, height, width = maps.shape
    peaks = maps.flatten(1).amax(dim=1)[:, None, None]
    labels = component_labels(maps >= threshold * peaks)
    sizes = torch.bincount(labels.flatten().clamp(min=0), minlength=batch * height * width)
    sizes[0] -= int((labels.flatten() < 0).sum())  # background pixels were counted under label 0
    largest = sizes.reshape(batch, height * width).argmax(dim=1) + torch.arange(batch, device=maps.device) * (
        height * width
    )
    chosen = labels == largest[:, None, None]
    rows, columns = chosen.any(dim=2), chosen.any(dim=1)
    return torch.cat([_span(columns), _span(rows)], dim=1)[:, [0, 2, 1, 3]].float()


def _span(present: Tensor) -> Tensor:
    """(N, L) boolean -> (N, 2) first index and last index + 1 where present."""
    positions = torch.arange(present.shape[1], device=present.device)
    first = torch.where(present, positions, present.shape[1]).amin(dim=1)
    last = torch.where(present, positions, -1).amax(dim=1) + 1
    return torch.stack([first, last], dim=1)


def box_iou(first: Tensor, second: Tensor) -> Tensor:
    """IoU of boxes (..., 4) and (..., 4) (x0, y0, x1, y1; x1/y1 exclusive), broadcast: |A ∩ B| / |A ∪ B|.
    A zero-area box has IoU 0 with everything (so zero rows can pad a list of boxes)."""
    low = torch.maximum(first[..., :2], second[..., :2])
    high = torch.minimum(first[..., 2:], second[..., 2:])
    intersection = (high - low).clamp(min=0).prod(dim=-1)
    area_a = (first[..., 2:] - first[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (second[..., 2:] - second[..., :2]).clamp(min=0).prod(dim=-1)
    union = area_a + area_b - intersection
    return torch.where(union > 0, intersection / torch.where(union > 0, union, 1), 0.0)


def localization_errors(
    maps: Tensor, boxes: Tensor, threshold: float = THRESHOLD, iou: float = IOU_HIT
) -> Tensor:
    """(N, H, W) maps and (N, J, 4) ground-truth boxes (J boxes of the target's class; zero rows pad)
    -> (N,) bool: the localization error of the Grad-CAM paper,

        error = max_j IoU(box(largest component of {L >= threshold * max L}), B_j) < iou.
    """
    predicted = largest_component_boxes(maps, threshold)
    overlaps = box_iou(predicted[:, None], boxes.to(predicted.device, torch.float32))
    return overlaps.amax(dim=1) < iou


class LocalizationError(Metric):
    """``localization_errors`` of the maps against each target's boxes."""

    name, label, better = "localization", "localization error (IoU<0.5)", "lower"
    needs = frozenset({"truth"})

    def __call__(self, case: Case) -> Tensor:
        return localization_errors(case.maps, case.truth.boxes).float()
