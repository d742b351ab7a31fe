"""Probe sets for naming a layer's units: the images shown to a model and the concepts they hold.

A probe set yields batches of (images, concept evidence) and says what kind the evidence is:

* ``masks`` (B, K, H, W) bool, for Network Dissection's IoU (``dissect``): the shapes world (5 colors,
  4 shapes, 2 sizes, each with its pixels) or a user's ``datasets.Dataset`` with per-object ``masks``
  and per-object concept columns (lists of strings as long as ``masks``, e.g. ``colors``, ``shapes``);
* ``labels`` (B, K) bool, image-level presence, for the AUC naming of ``name_from_labels``: a user's
  dataset with captions only, whose concepts are the lemmas of their nouns and adjectives (spaCy).

``mmcam.subject.Subject`` is the other half: the model, its layer, and how images become the model's
inputs (a captioner also needs text ids, a VQA model a question), so one table builder serves every task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmcam.concepts.compose import MAX_LENGTH
from mmcam.concepts.dissect import ConceptTable, dissect, name_from_labels
from mmcam.engine.devices import on_model_device
from mmcam.subject import Subject

ImageBatch = tuple[list[Image.Image], Tensor]


@dataclass
class ProbeSet:
    """``batches()`` yields (images, evidence) for ``size`` images; ``kind`` is "masks" or "labels".

    The images are what the subject's ``inputs`` takes: PIL images, or an RL agent's raw observations."""

    name: str
    batches: Callable[[], Iterator[ImageBatch]]
    concepts: list[str]
    kind: str
    size: int


def _rgb(image: Any) -> Image.Image:
    return (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("RGB")


def shapes_probe(
    probes: int = 200, seed: int = 60_000, batch_size: int = 16, positions: bool = True
) -> ProbeSet:
    """``probes`` fresh shapes-world scenes with the masks of their 11 concepts and, with ``positions``,
    of the 4 halves their objects sit in (``zoo.concepts.ATOMS``)."""
    from mmcam.zoo import make_scenes
    from mmcam.zoo.concepts import ATOMS, CONCEPTS, concept_masks

    scenes = make_scenes(probes, seed=seed)
    concepts = list(ATOMS if positions else CONCEPTS)

    def batches() -> Iterator[ImageBatch]:
        for start in range(0, len(scenes), batch_size):
            chunk = scenes[start : start + batch_size]
            masks = torch.from_numpy(np.stack([concept_masks(scene, concepts) for scene in chunk]))
            yield [Image.fromarray(scene.image) for scene in chunk], masks

    return ProbeSet("shapes" if positions else "shapes-attributes", batches, concepts, "masks", len(scenes))


def _object_columns(dataset) -> list[str]:
    """Columns holding, in every row, one string per mask of ``masks``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.data
    objects = pc.list_value_length(table.column("masks"))
    return [
        field.name
        for field in table.schema
        if field.name != "masks"
        and (pa.types.is_list(field.type) or pa.types.is_large_list(field.type))
        and pa.types.is_string(field.type.value_type)
        and pc.all(pc.equal(pc.list_value_length(table.column(field.name)), objects)).as_py()
    ]


def _caption_words(caption: str) -> set[str]:
    from mmcam.words import analyze

    words = [w.strip(".,;:!?\"'()").lower() for w in caption.split()]
    return {word.lemma for word in analyze([w for w in words if w]) if word.content}


def dataset_probe(dataset, name: str, batch_size: int = 16, min_images: int = 5) -> ProbeSet:
    """A user's dataset as a probe set: per-object masks and concept columns, else captions.

    With captions, a concept is a content-word lemma found in at least ``min_images`` images and
    missing from at least as many (a word in every caption tells no images apart).
    """
    columns = set(dataset.column_names)
    if "image" not in columns or not ({"masks", "caption"} & columns):
        raise ValueError(
            f"the probe dataset {name} needs an 'image' column and either 'masks' (one mask per object, "
            f"with per-object concept columns) or 'caption'; it has: {', '.join(sorted(columns))}"
        )
    if "masks" in columns:
        concept_columns = _object_columns(dataset)
        if not concept_columns:
            raise ValueError(
                f"the probe dataset {name} has 'masks' but no per-object concept column (a list of strings, one "
                "per mask, such as 'colors' or 'categories')"
            )
        concepts = sorted({c for column in concept_columns for row in dataset[column] for c in row})

        def evidence(rows: dict, start: int) -> Tensor:
            masks = []
            for index, objects in enumerate(rows["masks"]):
                objects = [np.asarray(m, dtype=bool) for m in objects]
                per_concept = np.zeros((len(concepts), *objects[0].shape), dtype=bool)
                for column in concept_columns:
                    for mask, concept in zip(objects, rows[column][index]):
                        per_concept[concepts.index(concept)] |= mask
                masks.append(per_concept)
            return torch.from_numpy(np.stack(masks))

        kind = "masks"
    else:
        words = [_caption_words(caption) for caption in dataset["caption"]]
        counts = Counter(word for row in words for word in row)
        concepts = sorted(w for w, n in counts.items() if min_images <= n <= len(words) - min_images)
        if not concepts:
            raise ValueError(f"no caption word of {name} is in {min_images} images and missing from as many")

        def evidence(rows: dict, start: int) -> Tensor:
            chunk = words[start : start + len(rows["image"])]
            return torch.tensor([[c in row for c in concepts] for row in chunk])

        kind = "labels"

    def batches() -> Iterator[ImageBatch]:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            yield [_rgb(image) for image in rows["image"]], evidence(rows, start)

    return ProbeSet(name, batches, concepts, kind, len(dataset))


def name_units(
    subject: Subject, probe: ProbeSet, progress: bool = True, max_length: int = MAX_LENGTH
) -> ConceptTable:
    """The concept table of ``subject``'s layer on ``probe``: IoU with masks (of formulas up to ``max_length``
    concepts long), or AUC with labels."""

    def batches() -> Iterator[tuple[Any, Tensor]]:
        for images, evidence in probe.batches():
            yield on_model_device(subject.inputs(images), subject.model), evidence

    common = {
        "model_name": subject.name,
        "progress": progress,
        "forward": subject.forward,
        "layout": subject.layout,
    }
    if probe.kind == "masks":
        return dissect(
            subject.model, subject.layer, batches, probe.concepts, probe.size, max_length=max_length, **common
        )
    return name_from_labels(subject.model, subject.layer, batches, probe.concepts, **common)


def array_probe(
    name: str, observations: np.ndarray, masks: Tensor, concepts: list[str], batch_size: int = 64
) -> ProbeSet:
    """Raw observations (N, ...) with their concept masks (N, K, H, W), such as an RL agent's own play
    with the object masks its environment gives: the images stay as they are, for the subject's
    ``inputs`` to read."""

    def batches() -> Iterator[tuple[list[np.ndarray], Tensor]]:
        for start in range(0, len(observations), batch_size):
            yield list(observations[start : start + batch_size]), masks[start : start + batch_size]

    return ProbeSet(name, batches, concepts, "masks", len(observations))
