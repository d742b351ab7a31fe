"""The pointing game: does a map's maximum fall on the object it should be about?"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def peak_hits(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """(N, H, W) maps and boolean masks -> (N,) bool: the map's argmax lies inside the mask dilated
    by ``tolerance`` pixels (Zhang et al.'s pointing game uses 15 px on full-size images; 0 is strict)."""
    masks = masks.to(maps.device, torch.bool)
    if tolerance > 0:
        size = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), size, stride=1, padding=tolerance)[:, 0] > 0
    flat = maps.flatten(1).argmax(dim=1)
    return masks.flatten(1).gather(1, flat[:, None])[:, 0]
