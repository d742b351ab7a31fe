"""The shapes world: procedurally generated scenes of colored shapes with captions and questions.

A scene is a 128x128 RGB image of one to three non-overlapping objects on a light gray, slightly noisy
background. Each object is a (color, shape, size) triple with the exact mask of the pixels it painted, so
explanations can be scored against ground truth. Every scene also carries a caption whose attribute words
link to the objects they name, and one question per applicable type with the objects its answer is about.

Only numpy is used; everything is deterministic given the random generator (or seed) passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
CLASS_NAMES: list[str] = [f"{c} {s}" for c in COLORS for s in SHAPES]
ANSWERS: list[str] = [*COLORS, *SHAPES, "yes", "no", "small", "large", "1", "2", "3"]
QUESTION_TYPES = ("color", "shape", "exists", "size", "count")
CANVAS = 128

SIDE_RANGES: dict[str, tuple[int, int]] = {"small": (18, 24), "large": (32, 40)}  # inclusive, box side in px
COLOR_JITTER = 20  # max per-channel offset from the base color
BACKGROUND_RANGE = (170, 230)  # inclusive gray level range
MAX_NOISE_STD = 8.0
MIN_GAP = 4  # min distance in px between object bounding boxes

_MAX_OBJECTS = 3
_PLACEMENT_TRIES = 200


@dataclass(frozen=True, eq=False)
class ShapeObject:
    """One painted object; ``mask`` is exactly the set of pixels it painted."""

    color: str
    shape: str
    size: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    mask: np.ndarray  # bool (CANVAS, CANVAS)

    @property
    def class_index(self) -> int:
        """Index of this object's (color, shape) pair in ``CLASS_NAMES``."""
        return CLASS_NAMES.index(f"{self.color} {self.shape}")

    @property
    def center(self) -> tuple[float, float]:
        """Center (x, y) of the bounding box."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Caption:
    """A caption; ``links[i]`` is the object index that word ``i`` describes, or -1."""

    text: str
    words: list[str]
    links: list[int]


@dataclass(frozen=True)
class Question:
    """A question, its answer and the indices of the objects the answer is about."""

    text: str
    type: str
    answer: str
    objects: list[int]


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene with its objects, caption and questions, and the background they were painted on."""

    image: np.ndarray  # uint8 (CANVAS, CANVAS, 3)
    objects: list[ShapeObject]
    caption: Caption
    questions: list[Question]
    background: np.ndarray  # uint8 (CANVAS, CANVAS, 3), the image before any object was painted

    def without(self, index: int) -> np.ndarray:
        """The scene's image re-rendered without object ``index`` (``without_object``)."""
        return without_object(self.image, self.background, self.objects[index].mask)

    @property
    def labels(self) -> np.ndarray:
        """Multi-hot float32 vector over ``CLASS_NAMES``."""
        labels = np.zeros(len(CLASS_NAMES), dtype=np.float32)
        for obj in self.objects:
            labels[obj.class_index] = 1.0
        return labels


def without_object(image: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the object painted at ``mask`` left out: objects do not overlap and each painted
    exactly its mask's pixels, so this is the scene rendered without it, other objects and noise unchanged."""
    return np.where(np.asarray(mask, dtype=bool)[:, :, None], background, image)


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean ``side x side`` mask of ``shape`` filling its box, tested at pixel centers."""
    coords = np.arange(side) + 0.5
    x, y = coords[None, :], coords[:, None]
    half = side / 2
    if shape == "circle":
        return (x - half) ** 2 + (y - half) ** 2 <= half**2
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":  # apex at the top middle, base along the bottom edge
        return np.abs(x - half) <= y / 2
    if shape == "diamond":
        return np.abs(x - half) + np.abs(y - half) <= half
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def box_gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Distance in px between two boxes along the axis where they are farthest apart (<= 0: overlapping)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _place_boxes(rng: np.random.Generator, sides: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Place square boxes of the given sides inside the canvas, pairwise ``MIN_GAP`` apart, or None."""
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            if all(box_gap(box, other) >= MIN_GAP for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _jittered_color(rng: np.random.Generator, color: str) -> np.ndarray:
    base = np.array(COLORS[color], dtype=np.int16)
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Flat gray with per-pixel Gaussian noise (shared by the three channels, which keeps it cheap)."""
    level = rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1)
    std = rng.uniform(0.0, MAX_NOISE_STD)
    gray = rng.standard_normal((CANVAS, CANVAS), dtype=np.float32)
    gray *= std
    gray += level + 0.5  # + 0.5: round, not floor, on the cast below
    np.clip(gray, 0, 255, out=gray)
    return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)


def _relation(a: ShapeObject, b: ShapeObject) -> str:
    """How ``a`` sits relative to ``b``, given that ``a`` is not right of ``b``."""
    (ax, ay), (bx, by) = a.center, b.center
    if abs(by - ay) > bx - ax:
        return "above" if ay < by else "below"
    return "to the left of"


def make_caption(objects: list[ShapeObject]) -> Caption:
    """Describe the objects left to right, e.g. "a small red circle to the left of a large blue square"."""
    order = sorted(range(len(objects)), key=lambda i: objects[i].center[0])
    words: list[str] = []
    links: list[int] = []
    for pos, i in enumerate(order):
        if pos:
            relation = _relation(objects[order[pos - 1]], objects[i]).split()
            words += relation
            links += [-1] * len(relation)
        obj = objects[i]
        words += ["a", obj.size, obj.color, obj.shape]
        links += [-1, i, i, i]
    return Caption(text=" ".join(words), words=words, links=links)


def make_questions(rng: np.random.Generator, objects: list[ShapeObject]) -> list[Question]:
    """One question of each type in ``QUESTION_TYPES`` that applies to the scene."""
    questions: list[Question] = []
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]

    unique_shape = [i for i, s in enumerate(shapes) if shapes.count(s) == 1]
    if unique_shape:
        i = int(rng.choice(unique_shape))
        questions.append(Question(f"what color is the {shapes[i]}?", "color", colors[i], [i]))

    unique_color = [i for i, c in enumerate(colors) if colors.count(c) == 1]
    if unique_color:
        i = int(rng.choice(unique_color))
        questions.append(Question(f"what shape is the {colors[i]} object?", "shape", shapes[i], [i]))

    if rng.random() < 0.5:
        present = {o.class_index for o in objects}
        absent = [k for k in range(len(CLASS_NAMES)) if k not in present]
        name = CLASS_NAMES[int(rng.choice(absent))]
        questions.append(Question(f"is there a {name}?", "exists", "no", []))
    else:
        i = int(rng.integers(len(objects)))
        questions.append(Question(f"is there a {colors[i]} {shapes[i]}?", "exists", "yes", [i]))

    i = int(rng.integers(len(objects)))
    questions.append(Question(f"what size is the {colors[i]} {shapes[i]}?", "size", objects[i].size, [i]))

    everything = list(range(len(objects)))
    questions.append(Question("how many objects are there?", "count", str(len(objects)), everything))
    return questions


def render_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """Draw a random scene with ``n_objects`` objects (uniform over 1..3 when None)."""
    if n_objects is None:
        n_objects = int(rng.integers(1, _MAX_OBJECTS + 1))
    if not 1 <= n_objects <= _MAX_OBJECTS:
        raise ValueError(f"n_objects must be between 1 and {_MAX_OBJECTS}, got {n_objects}")

    pairs = rng.choice(len(CLASS_NAMES), size=n_objects, replace=False)
    sizes = [SIZES[k] for k in rng.integers(len(SIZES), size=n_objects)]
    sides = [int(rng.integers(SIDE_RANGES[s][0], SIDE_RANGES[s][1] + 1)) for s in sizes]
    boxes = _place_boxes(rng, sides)
    while boxes is None:  # rare with three objects: start the layout over
        boxes = _place_boxes(rng, sides)

    background = _background(rng)
    image = background.copy()
    objects = []
    for pair, size, side, box in zip(pairs, sizes, sides, boxes):
        color, shape = CLASS_NAMES[pair].split()
        local = shape_mask(shape, side)
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1][local] = _jittered_color(rng, color)
        mask = np.zeros((CANVAS, CANVAS), dtype=bool)
        mask[y0:y1, x0:x1] = local
        objects.append(ShapeObject(color=color, shape=shape, size=size, box=box, mask=mask))

    return Scene(image, objects, make_caption(objects), make_questions(rng, objects), background)


def make_scenes(n: int, seed: int, n_objects: int | tuple[int, ...] | None = None) -> list[Scene]:
    """``n`` scenes, deterministic in ``seed``; scene ``i`` does not depend on ``n``.

    ``n_objects``: None for uniform over 1..3, an int for a fixed count, or a tuple of allowed counts.
    """
    scenes = []
    for child in np.random.SeedSequence(seed).spawn(n):
        rng = np.random.default_rng(child)
        count = int(rng.choice(n_objects)) if isinstance(n_objects, tuple) else n_objects
        scenes.append(render_scene(rng, count))
    return scenes
