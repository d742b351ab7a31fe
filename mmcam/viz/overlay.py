"""Heatmaps over images: coloured and blended as batched tensor ops on the maps' device."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from mmcam.engine.resize import upsample

LEVELS = 256  # entries of a matplotlib colormap's lookup table


def resize_map(heatmap: Tensor, size: tuple[int, int]) -> Tensor:
    """A (h, w) map in [0, 1] resized to ``size`` = (H, W), bilinear."""
    return upsample(heatmap.detach().float().cpu(), size).clamp(0, 1)


@cache
def _table(colormap: str) -> Tensor:
    """The (256, 3) RGB lookup table of a matplotlib colormap, in [0, 1] (float64, as matplotlib's)."""
    return torch.from_numpy(colormaps[colormap](np.arange(LEVELS))[:, :3])


def overlays(image: Tensor, maps: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Tensor:
    """``image`` (H, W, 3) uint8 blended with each of ``maps`` (K, h, w) in [0, 1], on the maps' device:
    (K, H, W, 3) uint8, ``round(255 * ((1 - alpha) * image / 255 + alpha * table[min(floor(256 m), 255)]))``
    where m is the map resized to (H, W) (bilinear, clamped to [0, 1]) and ``table`` the colormap's 256
    colours, as matplotlib's ``Colormap.__call__`` picks them. The blend is in float64 where the device
    has it (not MPS), so the pixels are those of matplotlib's colours blended with NumPy."""
    height, width = image.shape[:2]
    precise = torch.float32 if maps.device.type == "mps" else torch.float64
    resized = upsample(maps.detach().float(), (height, width)).clamp(0, 1)
    index = (resized * LEVELS).long().clamp(max=LEVELS - 1)
    colored = _table(colormap).to(maps.device, precise)[index]
    base = (image.to(maps.device).float() / 255).to(precise)
    return ((1 - alpha) * base + alpha * colored).mul(255).round().to(torch.uint8)


def image_tensor(image: Image.Image) -> Tensor:
    """A PIL image as an (H, W, 3) uint8 tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())


def overlay(image: Image.Image, heatmap: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """``image`` blended with ``heatmap`` (any size, values in [0, 1]) drawn in ``colormap``."""
    blended = overlays(image_tensor(image), heatmap.detach().cpu()[None], alpha, colormap)[0]
    return Image.fromarray(blended.numpy())


def peak_in_image(heatmap: Tensor, size: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the map's maximum once resized to an image of ``size`` = (H, W)."""
    resized = resize_map(heatmap, size)
    flat = int(torch.argmax(resized))
    return flat % size[1], flat // size[1]
