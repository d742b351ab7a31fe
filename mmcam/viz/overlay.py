"""Heatmaps over images."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from mmcam.engine.resize import upsample


def resize_map(heatmap: Tensor, size: tuple[int, int]) -> Tensor:
    """A (h, w) map in [0, 1] resized to ``size`` = (H, W), bilinear."""
    return upsample(heatmap.detach().float().cpu(), size).clamp(0, 1)


def overlay(image: Image.Image, heatmap: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """``image`` blended with ``heatmap`` (any size, values in [0, 1]) drawn in ``colormap``."""
    resized = resize_map(heatmap, (image.height, image.width)).numpy()
    colored = colormaps[colormap](resized)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    blended = (1 - alpha) * base + alpha * colored
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def peak_in_image(heatmap: Tensor, size: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the map's maximum once resized to an image of ``size`` = (H, W)."""
    resized = resize_map(heatmap, size)
    flat = int(torch.argmax(resized))
    return flat % size[1], flat // size[1]
