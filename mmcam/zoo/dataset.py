"""Shapes-world scenes as a Hugging Face ``datasets.Dataset``."""

from __future__ import annotations

import datasets
import numpy as np

from mmcam.zoo.world import CANVAS, CLASS_NAMES, Scene, make_scenes

FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "masks": datasets.List(datasets.Array2D((CANVAS, CANVAS), "uint8")),
        "boxes": datasets.List(datasets.List(datasets.Value("int32"), length=4)),
        "colors": datasets.List(datasets.Value("string")),
        "shapes": datasets.List(datasets.Value("string")),
        "sizes": datasets.List(datasets.Value("string")),
        "labels": datasets.List(datasets.Value("float32"), length=len(CLASS_NAMES)),
        "caption": datasets.Value("string"),
        "caption_words": datasets.List(datasets.Value("string")),
        "caption_links": datasets.List(datasets.Value("int32")),
        "questions": datasets.List(datasets.Value("string")),
        "question_types": datasets.List(datasets.Value("string")),
        "answers": datasets.List(datasets.Value("string")),
        "question_objects": datasets.List(datasets.List(datasets.Value("int32"))),
    }
)


def scene_record(scene: Scene) -> dict:
    """One dataset row for ``scene`` (objects in the scene's order, masks as 0/1 uint8)."""
    objects = scene.objects
    return {
        "image": scene.image,
        "masks": [o.mask.astype(np.uint8) for o in objects],
        "boxes": [list(o.box) for o in objects],
        "colors": [o.color for o in objects],
        "shapes": [o.shape for o in objects],
        "sizes": [o.size for o in objects],
        "labels": scene.labels.tolist(),
        "caption": scene.caption.text,
        "caption_words": scene.caption.words,
        "caption_links": scene.caption.links,
        "questions": [q.text for q in scene.questions],
        "question_types": [q.type for q in scene.questions],
        "answers": [q.answer for q in scene.questions],
        "question_objects": [q.objects for q in scene.questions],
    }


def shapes_dataset(n: int, seed: int, n_objects: int | tuple[int, ...] | None = None) -> datasets.Dataset:
    """``n`` shapes-world scenes from ``make_scenes(n, seed, n_objects)`` as a ``datasets.Dataset``."""
    records = [scene_record(scene) for scene in make_scenes(n, seed, n_objects)]
    return datasets.Dataset.from_list(records, features=FEATURES)
