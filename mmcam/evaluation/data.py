"""The samples an evaluation runs on: shapes-world scenes or a user's ``datasets.Dataset`` in the shapes
schema (``mmcam.zoo.dataset.FEATURES``), as records, and their objects' ground truth at a model's input size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from mmcam.zoo.dataset import scene_record
from mmcam.zoo.world import make_scenes, without_object

SHAPES_SEED = 30_000  # scenes no bundled model was trained or validated on (those use seeds < 30_000)
REACH_OBJECTS = ("agent", "goal", "distractors")  # the masks of a ShapesReach record, in this order

COLUMNS = {
    "classify": ("image", "masks", "boxes"),
    "caption": ("image", "masks", "boxes", "colors", "shapes", "sizes"),
    "vqa": (
        "image",
        "masks",
        "boxes",
        "colors",
        "shapes",
        "sizes",
        "questions",
        "question_types",
        "answers",
        "question_objects",
    ),
}


class Records:
    """Indexable samples: ``records[i]`` is a dict of the shapes schema with a PIL ``image``."""

    def __init__(self, source: Sequence[dict], name: str):
        self.source = source
        self.name = name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        record = dict(self.source[index])
        image = record["image"]
        record["image"] = (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB")
        return record


def shapes_records(count: int, seed: int = SHAPES_SEED) -> Records:
    """``count`` fresh shapes-world scenes (scene i is the same for any count), each with its
    ``background`` (the image before any object was painted: ``without_each_object`` reads it)."""
    records = [{**scene_record(scene), "background": scene.background} for scene in make_scenes(count, seed)]
    return Records(records, f"shapes:{count}@{seed}")


def without_each_object(record: dict) -> list[Image.Image] | None:
    """The record's scene re-rendered without each of its objects, in order (``world.without_object``), or
    None for a record without a ``background`` (a dataset's row, a ShapesReach state)."""
    if record.get("background") is None:
        return None
    image, background = np.asarray(record["image"]), np.asarray(record["background"])
    return [Image.fromarray(without_object(image, background, mask)) for mask in record["masks"]]


def reach_records(count: int, seed: int = SHAPES_SEED) -> Records:
    """``count`` ShapesReach start states (``reset(seed=seed + i)``) as records: the observation as
    ``image``, and the masks and boxes of the agent, the goal and the distractors (``REACH_OBJECTS``)."""
    from mmcam.zoo.reach import ShapesReach

    environment, records = ShapesReach(), []
    for index in range(count):
        observation, info = environment.reset(seed=seed + index)
        masks = [info["masks"][name] for name in REACH_OBJECTS]
        records.append({"image": observation, "masks": masks, "boxes": [mask_box(mask) for mask in masks]})
    return Records(records, f"reach:{count}@{seed}")


def mask_box(mask: np.ndarray) -> list[int]:
    """(x0, y0, x1, y1), x1/y1 exclusive, around a boolean mask's pixels ([0, 0, 0, 0] when empty)."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0, 0, 0, 0]
    return [int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1]


def dataset_records(path: str, task: str, limit: int | None = None) -> Records:
    """The first ``limit`` rows (all if None) of a dataset saved with ``save_to_disk`` at ``path``; one
    clear error when it is missing or lacks the columns ``task`` needs."""
    import datasets

    try:
        dataset = datasets.load_from_disk(path)
    except FileNotFoundError as error:
        raise ValueError(f"no dataset saved with save_to_disk at {path}") from error
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(f"{path} holds several splits ({', '.join(dataset)}); pass one split's folder")
    missing = [column for column in COLUMNS[task] if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the dataset at {path} lacks the column(s) {', '.join(missing)} that --task {task} needs "
            "(see mmcam.zoo.dataset.FEATURES)"
        )
    rows = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
    return Records(rows, f"dataset:{path}")


def object_masks(record: dict, size: tuple[int, int]) -> Tensor:
    """(O, H, W) bool masks of the record's objects at the model input's ``size`` (nearest resize)."""
    masks = torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in record["masks"]]))
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0
    return masks


def object_boxes(record: dict, size: tuple[int, int]) -> Tensor:
    """(O, 4) float boxes (x0, y0, x1, y1) of the record's objects, scaled to the model input's ``size``."""
    width, height = record["image"].size
    scale = torch.tensor([size[1] / width, size[0] / height] * 2)
    return torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4) * scale
