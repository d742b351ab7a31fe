"""The one result type every task, metric, figure and command consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class Explanation:
    """Maps for B samples and K targets each.

    maps:    (B, K, H, W) in [0, 1] (in [-1, 1], scaled by max |L|, for signed maps), at input
             resolution, on the input's device; (B, K, T, H, W) for video inputs.
    raw:     (B, K, h, w) unnormalized maps at the method's resolution (the layer's grid; the
             input's for the pixel-level guided methods, and for a layer of tiles, whose maps are
             stitched on the image); (B, K, t, h, w) for video.
    scores:  (B, K) the explained scalars.
    labels:  B lists of K names; indices: the output index each target read (class, answer, word).
    weights: (B, K, C) per-channel importance where the method has it (Grad-CAM's alpha; per tile, so
             None, on a layer of tiles), else None.
    contributions: (B, K, C) each channel's part in the target's score where the method has channel weights
             (``CamMethod.unit_contributions``): Grad-CAM's first-order sum_ij G_kcij A_cij (for a head that
             reads the layer linearly, exactly its part of the score), another method's w_kc * mean_ij A_cij;
             on a layer of tiles, the sum over an image's tiles; else None.
    token_weights: (B, K, L) gradient x input per token of a token layer (question words), if one was given.
    kinds:   K names of what each score is ("logit", "log-probability", "logit difference", ...), if known.
    evidence: (B, K) how much of each score the map accounts for, in the score's units (``engine.evidence``).
    negligible: (B, K) bool, True where the map shows nothing (constant, or evidence under
             ``engine.evidence.NEGLIGIBLE``): the command line and report draw it empty (``maps`` and ``raw``
             are kept, for metrics that compare maps).
    """

    maps: Tensor
    raw: Tensor
    scores: Tensor
    labels: list[list[str]]
    indices: list[list[int | None]]
    layer: str
    method: str
    weights: Tensor | None = None
    contributions: Tensor | None = None
    token_weights: Tensor | None = None
    kinds: list[str] | None = None
    evidence: Tensor | None = None
    negligible: Tensor | None = None

    def cpu(self) -> Explanation:
        """The same explanation with its tensors on the CPU (to draw, save or compare with masks)."""
        moved = {
            name: value.cpu()
            for name, value in vars(self).items()
            if isinstance(value, Tensor) and value.device.type != "cpu"
        }
        return replace(self, **moved) if moved else self

    def peaks(self) -> Tensor:
        """(B, K, 2) integer (x, y) input-pixel coordinates of each map's maximum."""
        width = self.maps.shape[-1]
        flat = self.maps.flatten(-2).argmax(dim=-1)
        return torch.stack((flat % width, flat // width), dim=-1)


TENSOR_FIELDS = (
    "maps",
    "raw",
    "scores",
    "weights",
    "contributions",
    "token_weights",
    "evidence",
    "negligible",
)


def _joined_tensor(parts: list[Explanation], name: str, dim: int) -> Tensor | None:
    values = [getattr(part, name) for part in parts]
    return None if any(v is None for v in values) else torch.cat(values, dim=dim)


def join_targets(parts: list[Explanation]) -> Explanation:
    """One Explanation holding the targets of several calls on the same inputs, side by side."""
    first = parts[0]
    batch = len(first.labels)
    return Explanation(
        maps=_joined_tensor(parts, "maps", 1),
        raw=_joined_tensor(parts, "raw", 1),
        scores=_joined_tensor(parts, "scores", 1),
        labels=[[label for part in parts for label in part.labels[b]] for b in range(batch)],
        indices=[[index for part in parts for index in part.indices[b]] for b in range(batch)],
        layer=first.layer,
        method=first.method,
        weights=_joined_tensor(parts, "weights", 1),
        contributions=_joined_tensor(parts, "contributions", 1),
        token_weights=_joined_tensor(parts, "token_weights", 1),
        evidence=_joined_tensor(parts, "evidence", 1),
        negligible=_joined_tensor(parts, "negligible", 1),
        kinds=None
        if any(p.kinds is None for p in parts)
        else [kind for part in parts for kind in part.kinds],
    )


def join_samples(parts: list[Explanation]) -> Explanation:
    """One Explanation holding the samples of several calls with the same targets, one after another."""
    first = parts[0]
    return Explanation(
        maps=_joined_tensor(parts, "maps", 0),
        raw=_joined_tensor(parts, "raw", 0),
        scores=_joined_tensor(parts, "scores", 0),
        labels=[labels for part in parts for labels in part.labels],
        indices=[indices for part in parts for indices in part.indices],
        layer=first.layer,
        method=first.method,
        weights=_joined_tensor(parts, "weights", 0),
        contributions=_joined_tensor(parts, "contributions", 0),
        token_weights=_joined_tensor(parts, "token_weights", 0),
        evidence=_joined_tensor(parts, "evidence", 0),
        negligible=_joined_tensor(parts, "negligible", 0),
        kinds=first.kinds,
    )


def split_samples(explanation: Explanation) -> list[Explanation]:
    """One Explanation per sample (B = 1 each), the inverse of ``join_samples``."""

    def row(value: Tensor | None, b: int) -> Tensor | None:
        return None if value is None else value[b : b + 1]

    return [
        replace(
            explanation,
            **{name: row(getattr(explanation, name), b) for name in TENSOR_FIELDS},
            labels=[explanation.labels[b]],
            indices=[explanation.indices[b]],
        )
        for b in range(len(explanation.labels))
    ]


def select_targets(explanation: Explanation, keep: Sequence[int]) -> Explanation:
    """The explanation of the targets numbered ``keep`` only, in that order (the same object when that
    is all of them)."""
    keep = list(keep)
    if keep == list(range(len(explanation.labels[0]))):
        return explanation

    def columns(value: Tensor | None) -> Tensor | None:
        return None if value is None else value[:, keep]

    return replace(
        explanation,
        **{name: columns(getattr(explanation, name)) for name in TENSOR_FIELDS},
        labels=[[labels[k] for k in keep] for labels in explanation.labels],
        indices=[[indices[k] for k in keep] for indices in explanation.indices],
        kinds=None if explanation.kinds is None else [explanation.kinds[k] for k in keep],
    )
