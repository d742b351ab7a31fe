"""The shapes world as a dissection probe set: the 5 colors, 4 shapes and 2 sizes, each with its pixels."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from mmcam.zoo.world import COLORS, SHAPES, SIZES, Scene

CONCEPTS = [*COLORS, *SHAPES, *SIZES]


def concept_masks(scene: Scene) -> np.ndarray:
    """(11, H, W) bool: for each concept, the union of the masks of the objects that have it."""
    masks = np.zeros((len(CONCEPTS), *scene.image.shape[:2]), dtype=bool)
    for obj in scene.objects:
        for attribute in (obj.color, obj.shape, obj.size):
            masks[CONCEPTS.index(attribute)] |= obj.mask
    return masks


def probe_batches(
    scenes: Sequence[Scene], preprocess: Callable, batch_size: int = 16
) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """A re-iterable source of (pixel_values, concept masks) batches over ``scenes``."""

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(scenes), batch_size):
            chunk = scenes[start : start + batch_size]
            masks = torch.from_numpy(np.stack([concept_masks(scene) for scene in chunk]))
            yield preprocess([scene.image for scene in chunk]), masks

    return batches
