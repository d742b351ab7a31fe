"""Bring maps to the input's resolution and to [0, 1], batched on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (..., h, w) maps to (..., H, W) (half-pixel centres, as OpenCV and PIL)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*maps.shape[:-2], *size)


def normalize(maps: Tensor) -> Tensor:
    """Per-map min-max scaling to [0, 1]: (L - min L) / (max L - min L); a constant map becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return (maps - low) / torch.where(span > 0, span, 1)
