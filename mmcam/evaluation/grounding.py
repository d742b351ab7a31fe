"""Which objects of a shapes-world record a caption word or a question's answer is about.

The one place that walks a caption's phrases to objects and picks the questions about one object;
``mmcam eval``, the acceptance pointing of ``mmcam.evaluation.pointing``, the demo and the notebooks
all read it.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmcam.zoo.world import COLORS, SHAPES, SIZES

WORD_KINDS = {**{c: "color" for c in COLORS}, **{s: "shape" for s in SHAPES}, **{z: "size" for z in SIZES}}
SINGLE_OBJECT_QUESTIONS = ("color", "shape", "size")  # and "exists" answered "yes"


def word_objects(
    words: Sequence[str], true_words: Sequence[str], true_links: Sequence[int]
) -> list[tuple[int, str, int | None]]:
    """(position, kind, object) for each color, shape and size word of ``words``, a caption of the scene
    whose true caption is ``true_words`` with ``true_links`` (the object each word names, -1 for none).

    ``words`` may be generated, so not the true caption: the j-th "a ..." phrase of ``words`` names the
    j-th object the true caption names (the world captions objects left to right, one phrase each);
    a word of a phrase beyond the scene's objects is about no object (None).
    """
    named = list(dict.fromkeys(link for link in true_links if link >= 0))  # objects in caption order
    found, phrase = [], -1
    for position, word in enumerate(words):
        phrase += word == "a"
        if word in WORD_KINDS:
            found.append((position, WORD_KINDS[word], named[phrase] if 0 <= phrase < len(named) else None))
    return found


def is_single_object(kind: str, answer: str) -> bool:
    """Whether a question's answer is about exactly one object: color, shape and size questions, and
    "is there a ...?" answered yes."""
    return kind in SINGLE_OBJECT_QUESTIONS or (kind == "exists" and answer == "yes")
