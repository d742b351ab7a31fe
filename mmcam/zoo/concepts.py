"""The shapes world as a dissection probe set: the 5 colors, 4 shapes and 2 sizes, each with its pixels."""

from __future__ import annotations

import numpy as np

from mmcam.zoo.world import COLORS, SHAPES, SIZES, Scene

CONCEPTS = [*COLORS, *SHAPES, *SIZES]


def concept_masks(scene: Scene) -> np.ndarray:
    """(11, H, W) bool: for each concept, the union of the masks of the objects that have it."""
    masks = np.zeros((len(CONCEPTS), *scene.image.shape[:2]), dtype=bool)
    for obj in scene.objects:
        for attribute in (obj.color, obj.shape, obj.size):
            masks[CONCEPTS.index(attribute)] |= obj.mask
    return masks
