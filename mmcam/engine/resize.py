"""Bring maps to the input's resolution and to [0, 1] (or [-1, 1] when signed), batched on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

UPSAMPLING = ("bilinear", "nearest")


def upsample(maps: Tensor, size: tuple[int, ...], mode: str = "bilinear") -> Tensor:
    """Resize (..., h, w) maps to (..., H, W), or (..., t, h, w) to (..., T, H, W) when ``size`` has three axes.

    ``"bilinear"`` (trilinear for three axes) uses half-pixel centres, as OpenCV and PIL;
    ``"nearest"`` repeats cells, as ``torch.nn.functional.interpolate(mode="nearest")`` and captum's
    ``LayerAttribution.interpolate`` default.
    """
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling '{mode}'; use one of {', '.join(UPSAMPLING)}")
    axes = len(size)
    if tuple(maps.shape[-axes:]) == tuple(size):
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-axes:])
    if mode == "nearest":
        resized = F.interpolate(flat, size=size, mode="nearest")
    else:
        resized = F.interpolate(
            flat, size=size, mode="bilinear" if axes == 2 else "trilinear", align_corners=False
        )
    return resized.reshape(*maps.shape[:-axes], *size)


def normalize(maps: Tensor, axes: int = 2, signed: bool = False) -> Tensor:
    """Per-map scaling over the last ``axes`` axes; a constant map becomes 0.

    Unsigned: (L - min L) / (max L - min L), in [0, 1]. Signed: L / max |L|, in [-1, 1], so 0 stays 0
    and the sign of each cell is kept.
    """
    dims = tuple(range(-axes, 0))
    if signed:
        span = maps.abs().amax(dim=dims, keepdim=True)
        return maps / torch.where(span > 0, span, 1)
    low = maps.amin(dim=dims, keepdim=True)
    span = maps.amax(dim=dims, keepdim=True) - low
    return (maps - low) / torch.where(span > 0, span, 1)
