"""Grounded attribute words, shared by the bundled captioner and VQA model.

Both models score a size, color or shape word (a caption word, a VQA answer) the same way: they point at
grid cells and read there the scores of linear classifiers that every cell of the encoder grid gets.

* an object-class head: one detector per size-color-shape class of the world (40);
* one head per attribute: a detector per size, per color, per shape.

A word's evidence is its attribute head's score plus the log-sum-exp of the scores of the object classes it
describes, both read at the pointer. The first part makes "blue" point at blue things; the second, whose
gradient goes almost all to the one class the pointed-at object belongs to, makes "red" in "a small red
circle" point at *that* small red circle rather than at another red object. Together they make the words'
Grad-CAM maps on the encoder's last block find the object the word is about.

The heads are also trained directly on the cells (``cell_targets``, ``cell_loss``) as independent
detectors (one sigmoid each, not a softmax over classes), so that a score means the same in every cell: high
on the objects it detects, low on the background and on every other object. Grad-CAM compares cells, so a
softmax-trained head, whose scores only rank the classes within a cell, would not do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcam.zoo.world import COLORS, SHAPES, SIZES, Scene

ATTRIBUTES: dict[str, tuple[str, ...]] = {"size": SIZES, "color": tuple(COLORS), "shape": SHAPES}
OBJECT_CLASSES: list[tuple[str, str, str]] = [(z, c, s) for z in SIZES for c in COLORS for s in SHAPES]
HEAD_SIZES = [len(OBJECT_CLASSES), *(len(values) for values in ATTRIBUTES.values())]


def attribute_kind(word: str) -> str | None:
    """``"size"``, ``"color"`` or ``"shape"`` for an attribute word, None for any other word."""
    return next((kind for kind, values in ATTRIBUTES.items() if word in values), None)


class CellHeads(nn.Linear):
    """All per-cell classifiers as one linear map: grid (B, C, H, W) -> scores (B, H * W, sum(HEAD_SIZES)).

    Score columns: object classes, then sizes, colors, shapes (``HEAD_SIZES``).
    """

    def __init__(self, channels: int):
        super().__init__(channels, sum(HEAD_SIZES))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return super().forward(grid.flatten(2).transpose(1, 2))


class WordEvidence(nn.Module):
    """Evidence for attribute ``words`` from cell scores read at a pointer: (..., sum(HEAD_SIZES)) -> (..., words)."""

    def __init__(self, words: Sequence[str]):
        super().__init__()
        kinds = [attribute_kind(word) for word in words]
        if None in kinds:
            raise ValueError(f"not attribute words: {[w for w, k in zip(words, kinds) if k is None]}")
        offsets = np.cumsum(HEAD_SIZES)  # where each attribute head's columns start
        columns = [offsets[list(ATTRIBUTES).index(k)] + ATTRIBUTES[k].index(w) for w, k in zip(words, kinds)]
        members = torch.tensor([[word in cls for cls in OBJECT_CLASSES] for word in words])
        self.register_buffer("columns", torch.tensor(columns), persistent=False)
        self.register_buffer(
            "log_members", torch.zeros(members.shape).masked_fill(~members, -torch.inf), False
        )

    def forward(self, read: torch.Tensor) -> torch.Tensor:
        classes = read[..., None, : len(OBJECT_CLASSES)] + self.log_members
        return read[..., self.columns] + torch.logsumexp(classes, dim=-1)


def cell_targets(scene: Scene, cell: int = 8) -> torch.Tensor:
    """What each head should detect in each grid cell (row-major): (cells, sum(HEAD_SIZES)) of 0/1, or -1.

    A cell at least half covered by an object detects its class and attributes, a cell no object reaches
    detects nothing, and a cell an object covers only partly is left out of the loss (all -1).
    """
    side = scene.image.shape[0] // cell
    offsets = np.cumsum([0, *HEAD_SIZES[:-1]])
    targets = torch.zeros(side * side, sum(HEAD_SIZES))
    for obj in scene.objects:
        coverage = torch.from_numpy(obj.mask.reshape(side, cell, side, cell).mean(axis=(1, 3))).flatten()
        targets[coverage > 0] = -1
        values = [OBJECT_CLASSES.index((obj.size, obj.color, obj.shape))]
        values += [ATTRIBUTES[kind].index(getattr(obj, kind)) for kind in ATTRIBUTES]
        targets[coverage >= 0.5] = 0
        targets[(coverage >= 0.5).nonzero(), torch.from_numpy(offsets) + torch.tensor(values)] = 1
    return targets


def cell_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the detectors, averaged over the cells ``cell_targets`` keeps.

    Summed, not averaged, over the 51 detectors: each cell has at most four positives, and averaging would
    let the detectors settle for "never" and barely fire on their objects.
    """
    kept = (targets >= 0).all(dim=-1)
    return F.binary_cross_entropy_with_logits(scores[kept], targets[kept], reduction="sum") / kept.sum()
