"""Image preprocessing shared by the bundled shapes-world models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mmcam.zoo.world import CANVAS, CLASS_NAMES

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25

ImageLike = Image.Image | np.ndarray


def to_canvas_array(image: ImageLike) -> np.ndarray:
    """``image`` as a ``CANVAS x CANVAS x 3`` uint8 array (converted to RGB and resized if needed)."""
    if isinstance(image, np.ndarray) and image.shape == (CANVAS, CANVAS, 3) and image.dtype == np.uint8:
        return image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if image.size != (CANVAS, CANVAS):
        image = image.resize((CANVAS, CANVAS), Image.BILINEAR)
    return np.asarray(image)


def pixel_values(images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
    """Normalized float tensor (B, 3, CANVAS, CANVAS) for one image or a list of them."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    batch = np.stack([to_canvas_array(image) for image in images])
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    return (tensor / 255.0 - PIXEL_MEAN) / PIXEL_STD


class ShapesProcessor:
    """Turns images (PIL or HxWx3 uint8 arrays, one or a list) into the classifier's ``pixel_values``."""

    labels: list[str] = CLASS_NAMES

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> dict[str, torch.Tensor]:
        return {"pixel_values": pixel_values(images)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={CANVAS}, mean={PIXEL_MEAN}, std={PIXEL_STD})"
