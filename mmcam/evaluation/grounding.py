"""Which objects of a shapes-world scene a caption word or a question's answer is about.

The one place that walks a caption's phrases to objects and picks the questions about one object;
``mmcam eval``, the acceptance pointing of ``mmcam.evaluation.pointing``, the demo and the notebooks
all read it. Objects are given by their attributes (``{"color": ..., "shape": ..., "size": ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mmcam.zoo.world import COLORS, SHAPES, SIZES

WORD_KINDS = {**{c: "color" for c in COLORS}, **{s: "shape" for s in SHAPES}, **{z: "size" for z in SIZES}}
SINGLE_OBJECT_QUESTIONS = ("color", "shape", "size")  # and "exists" answered "yes"
Attributes = Mapping[str, str]


@dataclass(frozen=True)
class Grounded:
    """One attribute word of a caption: its ``position`` among the caption's words, its ``kind`` (color,
    shape, size), the objects it is about (``about``: every object of the scene with that attribute, so a
    word several objects share hits on any of them) and whether its phrase ``described`` an object of the
    scene at all (False: a hallucinated phrase, about no object)."""

    position: int
    kind: str
    about: list[int]
    described: bool


def record_objects(record: Mapping) -> list[dict[str, str]]:
    """The attributes of a shapes-schema record's objects (its ``colors``, ``shapes``, ``sizes``)."""
    return [
        {"color": color, "shape": shape, "size": size}
        for color, shape, size in zip(record["colors"], record["shapes"], record["sizes"])
    ]


def phrase_objects(phrase: Mapping[str, str], objects: Sequence[Attributes]) -> list[int]:
    """The objects a phrase's attributes (``{kind: word}``) describe: those that have every one of them."""
    return [o for o, found in enumerate(objects) if all(found[kind] == word for kind, word in phrase.items())]


def word_objects(words: Sequence[str], objects: Sequence[Attributes]) -> list[Grounded]:
    """Each color, shape and size word of ``words`` (a caption, possibly generated, of the scene whose
    objects are ``objects``) with the objects it is about.

    The caption is cut into phrases at each "a" (the world's captions: "a small red circle to the left of
    a ..."). A phrase is matched by its attributes, not its position: it describes the objects that have
    all of its attribute words; a phrase that describes none (or names two colors) is hallucinated and its
    words are about no object. A word of a described phrase is about every object that has its attribute.
    """
    phrases: list[list[int]] = [[]]
    for position, word in enumerate(words):
        if word == "a":
            phrases.append([])
        if word in WORD_KINDS:
            phrases[-1].append(position)
    found = []
    for positions in phrases:
        kinds = [WORD_KINDS[words[p]] for p in positions]
        phrase = {kind: words[p] for kind, p in zip(kinds, positions)}
        described = len(phrase) == len(positions) and bool(phrase_objects(phrase, objects))
        for position, kind in zip(positions, kinds):
            about = phrase_objects({kind: words[position]}, objects) if described else []
            found.append(Grounded(position, kind, about, described))
    return found


def answer_objects(kind: str, answer: str, asked: Sequence[int], objects: Sequence[Attributes]) -> list[int]:
    """The objects a single-object question's true ``answer`` is about: the ``asked`` object and, for a
    color, shape or size answer, every other object that has that attribute (any of them counts)."""
    sharing = phrase_objects({kind: answer}, objects) if kind in SINGLE_OBJECT_QUESTIONS else []
    return sorted(set(asked) | set(sharing))


def is_single_object(kind: str, answer: str) -> bool:
    """Whether a question's answer is about exactly one object: color, shape and size questions, and
    "is there a ...?" answered yes."""
    return kind in SINGLE_OBJECT_QUESTIONS or (kind == "exists" and answer == "yes")
