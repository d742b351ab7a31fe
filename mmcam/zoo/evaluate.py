"""Localization of the bundled models' explanations on fresh shapes scenes, where the right answer is known.

Each function returns hit counts per category; ``rate`` turns them into shares. Tests assert the
acceptance thresholds on them and the recipes in ``tasks/`` print them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mmcam.metrics.pointing import peak_hits
from mmcam.zoo.world import COLORS, SHAPES, SIZES, Scene

WORD_CLASSES = {**{c: "color" for c in COLORS}, **{s: "shape" for s in SHAPES}, **{z: "size" for z in SIZES}}


def rate(hits: Counter, totals: Counter) -> dict[str, float]:
    return {key: hits[key] / totals[key] for key in totals}


def classifier_pointing(classifier, scenes: Sequence[Scene], batch_size: int = 64) -> tuple[Counter, Counter]:
    """Grad-CAM of each present class: does its peak fall inside that object? Scenes with the same
    number of objects are explained together, every present class of a batch in one pass."""
    explainer = classifier.explainer()
    hits, totals = Counter(), Counter()
    for count in sorted({len(scene.objects) for scene in scenes}):
        group = [scene for scene in scenes if len(scene.objects) == count]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            pixels = classifier.preprocess([Image.fromarray(scene.image) for scene in batch])
            explanation = explainer(pixels, [[obj.class_index for obj in scene.objects] for scene in batch])
            masks = torch.stack([torch.from_numpy(obj.mask) for scene in batch for obj in scene.objects])
            hits["class"] += int(peak_hits(explanation.maps.flatten(0, 1), masks).sum())
            totals["class"] += len(masks)
    return hits, totals


def phrase_objects(scene: Scene) -> list[int]:
    """The object each "a <size> <color> <shape>" phrase of the scene's caption names, in caption order."""
    return [link for word, link in zip(scene.caption.words, scene.caption.links) if word in SHAPES]


def word_peak_hits(scene: Scene, words: Sequence[str], maps: torch.Tensor) -> list[tuple[int, str, bool]]:
    """(position, word class, peak inside its object) for each size, color and shape word of a caption of
    ``scene`` (generated, so not necessarily the true one), ``maps[position]`` being that word's map; one
    batched ``peak_hits``. The j-th "a ..." phrase names the j-th object of the true caption's order (the
    world captions left to right); a word of a phrase beyond the scene's objects is a miss."""
    objects, phrase, found = phrase_objects(scene), -1, []
    for position, word in enumerate(words):
        phrase += word == "a"
        if word in WORD_CLASSES:
            found.append(
                (position, WORD_CLASSES[word], objects[phrase] if 0 <= phrase < len(objects) else None)
            )
    if not found:
        return []
    nothing = np.zeros(scene.image.shape[:2], dtype=bool)
    masks = torch.from_numpy(np.stack([nothing if o is None else scene.objects[o].mask for _, _, o in found]))
    inside = peak_hits(maps[[position for position, _, _ in found]], masks).tolist()
    return [(position, kind, hit) for (position, kind, _), hit in zip(found, inside)]


def caption_pointing(captioner, scenes: Sequence[Scene]) -> tuple[Counter, Counter]:
    """For every size, color and shape word of the *generated* caption: does the word's map peak inside
    the object it names (``word_peak_hits``)? Also scores the whole-caption map against the same objects,
    the comparison of the Grad-CAM paper's captioning study."""
    from mmcam.adapters.captioning import explain_caption

    explainer = captioner.explainer()
    hits, totals = Counter(), Counter()
    for scene in scenes:
        image = Image.fromarray(scene.image)
        result = explain_caption(captioner, image, words="all", whole_caption=True, explainer=explainer)
        maps = result.explanation.maps[0]
        whole = maps[-1].expand(len(result.words), -1, -1)
        for suffix, word_maps in (("", maps), (" (whole-caption map)", whole)):
            for _, kind, hit in word_peak_hits(scene, result.words, word_maps):
                hits[kind + suffix] += hit
                totals[kind + suffix] += 1
    return hits, totals


def vqa_pointing(vqa, scenes: Sequence[Scene]) -> tuple[Counter, Counter]:
    """Questions about one object (color, shape, size, "is there" answered yes): does the predicted
    answer's map peak inside it? And for "what color is the <shape>?" with two or more objects: does the
    map of a wrong color present in the scene peak on the object that has that color?"""
    from mmcam.adapters.vqa import explain_answers

    hits, totals = Counter(), Counter()
    for scene in scenes:
        image = Image.fromarray(scene.image)
        for question in scene.questions:
            single = question.type in ("color", "shape", "size") or (
                question.type == "exists" and question.answer == "yes"
            )
            if not single:
                continue
            subject = scene.objects[question.objects[0]]
            others = [o for o in scene.objects if o is not subject and o.color != subject.color]
            contrast = question.type == "color" and others
            asked = [others[0].color] if contrast else []
            result = explain_answers(vqa, image, question.text, answers=asked)
            maps = result.explanation.maps[0]
            totals[question.type] += 1
            hits[question.type] += int(peak_hits(maps[:1], torch.from_numpy(subject.mask)[None]))
            if contrast:
                totals["wrong color, on its object"] += 1
                painted = [torch.from_numpy(o.mask) for o in scene.objects if o.color == others[0].color]
                hits["wrong color, on its object"] += int(
                    peak_hits(maps[-1:], torch.stack(painted).any(0)[None])
                )
    return hits, totals
