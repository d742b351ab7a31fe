"""The shapes world as a dissection probe set: the 5 colors, 4 shapes and 2 sizes, each with its pixels, and
the atoms of compositional labels: those and the object's position (left or right, top or bottom half)."""

from __future__ import annotations

import numpy as np

from mmcam.zoo.world import CANVAS, COLORS, SHAPES, SIZES, Scene

CONCEPTS = [*COLORS, *SHAPES, *SIZES]
POSITIONS = ["left", "right", "top", "bottom"]
ATOMS = [*CONCEPTS, *POSITIONS]


def position(obj) -> tuple[str, str]:
    """The halves of the canvas holding the object's box center: ("left" | "right", "top" | "bottom")."""
    x, y = obj.center
    return ("left" if x < CANVAS / 2 else "right"), ("top" if y < CANVAS / 2 else "bottom")


def concept_masks(scene: Scene, concepts: list[str] = CONCEPTS) -> np.ndarray:
    """(K, H, W) bool: for each of ``concepts`` (CONCEPTS or ATOMS), the union of the masks of the objects
    that have it."""
    masks = np.zeros((len(concepts), *scene.image.shape[:2]), dtype=bool)
    for obj in scene.objects:
        for attribute in (obj.color, obj.shape, obj.size, *position(obj)):
            if attribute in concepts:
                masks[concepts.index(attribute)] |= obj.mask
    return masks
