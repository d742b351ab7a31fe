"""Invariants of the shapes-world generator and its dataset wrapper."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from mmcam.zoo import shapes_dataset
from mmcam.zoo.world import (
    ANSWERS,
    CLASS_NAMES,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    box_gap,
    make_scenes,
    render_scene,
)

# The contract, spelled out here rather than imported, so a changed constant fails the tests.
CANVAS = 128
MIN_GAP = 4
SIDE_RANGES = {"small": (18, 24), "large": (32, 40)}
COLOR_JITTER = 20
BASE_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
}


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(300, seed=10_000)


def test_vocabularies():
    assert len(CLASS_NAMES) == 20 and CLASS_NAMES[:2] == ["red circle", "red square"]
    assert len(ANSWERS) == 16 == len(set(ANSWERS))  # 5 colors, 4 shapes, yes/no, 2 sizes, 3 counts
    assert QUESTION_TYPES == ("color", "shape", "exists", "size", "count")
    assert COLORS == BASE_COLORS and SIZES == ("small", "large")
    assert SHAPES == ("circle", "square", "triangle", "diamond")


def test_image_and_object_counts(scenes):
    counts = set()
    for scene in scenes:
        assert scene.image.shape == (CANVAS, CANVAS, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 3
        counts.add(len(scene.objects))
    assert counts == {1, 2, 3}


def test_n_objects_restricts_the_count():
    assert {len(s.objects) for s in make_scenes(30, seed=1, n_objects=2)} == {2}
    assert {len(s.objects) for s in make_scenes(60, seed=1, n_objects=(1, 3))} == {1, 3}
    assert len(render_scene(np.random.default_rng(0), 3).objects) == 3
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), 4)


def test_layout(scenes):
    for scene in scenes:
        objects = scene.objects
        assert len({(o.color, o.shape) for o in objects}) == len(objects)
        for i, obj in enumerate(objects):
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= CANVAS and 0 <= y0 < y1 <= CANVAS
            low, high = SIDE_RANGES[obj.size]
            assert x1 - x0 == y1 - y0 and low <= x1 - x0 <= high
            assert obj.mask.shape == (CANVAS, CANVAS) and obj.mask.dtype == bool
            outside = obj.mask.copy()
            outside[y0:y1, x0:x1] = False
            assert obj.mask.any() and not outside.any()
            for other in objects[i + 1 :]:
                assert box_gap(obj.box, other.box) >= MIN_GAP


def test_masks_are_the_painted_pixels(scenes):
    for scene in scenes[:100]:
        covered = np.zeros((CANVAS, CANVAS), dtype=bool)
        for obj in scene.objects:
            pixels = scene.image[obj.mask].astype(int)
            assert (pixels == pixels[0]).all(), "an object is painted in one flat color"
            assert np.abs(pixels[0] - np.array(BASE_COLORS[obj.color])).max() <= COLOR_JITTER
            covered |= obj.mask
        background = scene.image[~covered].astype(int)
        assert (background[:, 0] == background[:, 1]).all() and (background[:, 1] == background[:, 2]).all()
        assert 140 <= background.mean() <= 240


def test_shape_masks_have_their_geometry():
    for scene in make_scenes(200, seed=10_001, n_objects=1):
        obj = scene.objects[0]
        x0, y0, x1, y1 = obj.box
        local = obj.mask[y0:y1, x0:x1]
        fill = local.mean()
        expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "diamond": 0.5}[obj.shape]
        assert abs(fill - expected) < 0.08, (obj.shape, fill)
        if obj.shape == "triangle":  # apex up: the top row is narrower than the bottom row
            assert local[1].sum() < local[-1].sum()


def test_labels(scenes):
    for scene in scenes[:50]:
        assert scene.labels.dtype == np.float32 and scene.labels.shape == (20,)
        assert sorted(np.flatnonzero(scene.labels)) == sorted(o.class_index for o in scene.objects)
        for obj in scene.objects:
            assert CLASS_NAMES[obj.class_index] == f"{obj.color} {obj.shape}"


def _described_objects(words: list[str], links: list[int]) -> list[tuple[int, list[str]]]:
    """Parse "a <size> <color> <shape> (<relation> a <size> <color> <shape>)*" into (object, words)."""
    relations = (["to", "the", "left", "of"], ["above"], ["below"])
    described, i = [], 0
    while True:
        assert words[i] == "a" and links[i] == -1
        phrase = words[i + 1 : i + 4]
        assert phrase[0] in SIZES and phrase[1] in COLORS and phrase[2] in SHAPES
        assert len(set(links[i + 1 : i + 4])) == 1 and links[i + 1] >= 0
        described.append((links[i + 1], phrase))
        i += 4
        if i == len(words):
            return described
        relation = next(r for r in relations if words[i : i + len(r)] == r)
        assert links[i : i + len(relation)] == [-1] * len(relation)
        i += len(relation)


def test_caption_grammar_links_and_order(scenes):
    for scene in scenes:
        caption = scene.caption
        assert caption.words == caption.text.split() and len(caption.links) == len(caption.words)
        described = _described_objects(caption.words, caption.links)
        assert sorted(i for i, _ in described) == list(range(len(scene.objects)))
        for index, (size, color, shape) in described:
            obj = scene.objects[index]
            assert (size, color, shape) == (obj.size, obj.color, obj.shape)
        centers_x = [scene.objects[i].center[0] for i, _ in described]
        assert centers_x == sorted(centers_x)


def test_caption_relations():
    for scene in make_scenes(100, seed=10_002, n_objects=2):
        (left, _), (right, _) = _described_objects(scene.caption.words, scene.caption.links)
        (ax, ay), (bx, by) = scene.objects[left].center, scene.objects[right].center
        if abs(by - ay) > bx - ax:
            expected = "above" if ay < by else "below"
        else:
            expected = "to the left of"
        assert f" {expected} " in scene.caption.text


def test_questions_are_answered_correctly(scenes):
    seen = {t: set() for t in QUESTION_TYPES}
    for scene in scenes:
        objects = scene.objects
        types = [q.type for q in scene.questions]
        assert types == [t for t in QUESTION_TYPES if t in types], "one per type, in order"
        shapes, colors = [o.shape for o in objects], [o.color for o in objects]
        assert ("color" in types) == any(shapes.count(s) == 1 for s in shapes)
        assert ("shape" in types) == any(colors.count(c) == 1 for c in colors)
        assert {"exists", "size", "count"} <= set(types)
        for q in scene.questions:
            assert q.answer in ANSWERS
            seen[q.type].add(q.answer)
            about = [objects[i] for i in q.objects]
            if q.type == "color":
                assert shapes.count(about[0].shape) == 1
                assert q.text == f"what color is the {about[0].shape}?" and q.answer == about[0].color
            elif q.type == "shape":
                assert colors.count(about[0].color) == 1
                assert q.text == f"what shape is the {about[0].color} object?" and q.answer == about[0].shape
            elif q.type == "exists":
                color, shape = q.text.removeprefix("is there a ").removesuffix("?").split()
                present = any((o.color, o.shape) == (color, shape) for o in objects)
                assert q.answer == ("yes" if present else "no")
                assert [(o.color, o.shape) for o in about] == ([(color, shape)] if present else [])
            elif q.type == "size":
                assert q.text == f"what size is the {about[0].color} {about[0].shape}?"
                assert q.answer == about[0].size
            else:
                assert q.text == "how many objects are there?"
                assert q.answer == str(len(objects)) and q.objects == list(range(len(objects)))
    assert seen["exists"] == {"yes", "no"} and seen["count"] == {"1", "2", "3"}
    assert seen["size"] == set(SIZES) and seen["color"] == set(COLORS) and seen["shape"] == set(SHAPES)


def test_exists_answers_are_balanced(scenes):
    answers = [q.answer for s in scenes for q in s.questions if q.type == "exists"]
    assert 0.35 < answers.count("no") / len(answers) < 0.65


def test_deterministic_from_seed():
    a, b, c = make_scenes(20, seed=7), make_scenes(20, seed=7), make_scenes(20, seed=8)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert [x.caption for x in a] == [y.caption for y in b]
    assert [x.questions for x in a] == [y.questions for y in b]
    assert not all(np.array_equal(x.image, z.image) for x, z in zip(a, c))
    assert np.array_equal(make_scenes(5, seed=7)[4].image, a[4].image), "scene i does not depend on n"


def test_dataset_columns_and_round_trip(tmp_path):
    ds = shapes_dataset(12, seed=10_003)
    assert set(ds.column_names) == {
        "image", "masks", "boxes", "colors", "shapes", "sizes", "labels", "caption", "caption_words",
        "caption_links", "questions", "question_types", "answers", "question_objects",
    }  # fmt: skip
    scenes = make_scenes(12, seed=10_003)
    ds.save_to_disk(str(tmp_path / "shapes"))
    loaded = datasets.load_from_disk(str(tmp_path / "shapes"))
    assert len(loaded) == 12
    for row, scene in zip(loaded, scenes):
        assert np.array_equal(np.asarray(row["image"]), scene.image)
        assert len(row["masks"]) == len(scene.objects)
        for mask, obj in zip(row["masks"], scene.objects):
            assert np.array_equal(np.asarray(mask, dtype=bool), obj.mask)
        assert row["boxes"] == [list(o.box) for o in scene.objects]
        assert row["colors"] == [o.color for o in scene.objects]
        assert row["labels"] == scene.labels.tolist()
        assert row["caption"] == scene.caption.text and row["caption_links"] == scene.caption.links
        assert row["answers"] == [q.answer for q in scene.questions]
        assert row["question_objects"] == [q.objects for q in scene.questions]


def test_a_scene_rerendered_without_an_object_is_its_background_there_and_unchanged_elsewhere():
    from mmcam.zoo.world import make_scenes

    scene = make_scenes(1, seed=5, n_objects=3)[0]
    for index, obj in enumerate(scene.objects):
        without = scene.without(index)
        assert (without[obj.mask] == scene.background[obj.mask]).all()
        assert (without[~obj.mask] == scene.image[~obj.mask]).all()
        assert (scene.image[obj.mask] != scene.background[obj.mask]).any(axis=-1).all()  # it was painted
