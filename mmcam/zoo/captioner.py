"""A small image captioner for the shapes world: CNN grid encoder, GRU decoder and a pointer over grid cells.

The decoder sees the image only through a pointer, a softmax over the encoder's grid cells that it moves at
every step, never through a pooled summary. Every cell of the grid also gets

* the per-cell classifiers of ``grounding`` (object class and attributes), and
* a regression of the center of the object it lies on (``center_targets``), so that a pointer resting on an
  object reads that object's position to a pixel or so, though the grid's cells are 8 pixels wide.

The pointer scores a cell from its features, the decoder's state, and where the cell's object lies relative
to the position the pointer read at the previous step; so "move to the next object on the right" and "stay on
this object" are simple functions it learns, supervised by the caption's word links (``pointer_targets``).

The output layer has three parts:

* an MLP of the decoder's state, the read and the move of the pointer scores the plain words ("a", "above",
  "to", ..., ``<eos>``): "above" or "to the left of" is decided from the move from one object to the next;
* for attribute words (sizes, colors, shapes), the decoder's state, which has seen the words and not the
  image, scores only which *kind* comes next;
* which attribute it is comes from the per-cell object-class detectors read at the pointer (``ClassEvidence``).

So "red" in "a small red circle" is scored by the cells of that small red circle, through the feature
direction that detects that object's class, and the word's Grad-CAM map on ``default_layer`` mostly finds
that object (tasks/caption/README.md has the rates and why another red object sometimes wins). Nothing
normalizes the grid before it is read: a scale-invariant read makes Grad-CAM's channel weights orthogonal to the object's own
features and its maps meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcam.zoo.encoder import DEFAULT_BLOCKS, ConvEncoder
from mmcam.zoo.grounding import ATTRIBUTES, OBJECT_CLASSES, CellHeads, WordEvidence, attribute_kind
from mmcam.zoo.processing import ImageLike, pixel_values
from mmcam.zoo.tokenizer import SPECIAL_TOKENS, WordTokenizer
from mmcam.zoo.world import CANVAS, Scene

DEFAULT_CONFIG = {
    "blocks": DEFAULT_BLOCKS,
    "d_word": 32,
    "d_model": 128,
    "d_pointer": 32,
}
MOVE_SCALE = CANVAS / 8  # positions are in [-1, 1]; moves are fed in units of 4 px (half a grid cell)
CELL_PRIOR = -4.0  # initial logit of every per-cell detector: most cells detect nothing
START = (-1.0, 0.0)  # where the pointer "was" before the first step: the middle of the left edge


def cell_centers(side: int) -> torch.Tensor:
    """Centers (x, y) in [-1, 1] of the cells of a ``side x side`` grid, row-major: (side * side, 2)."""
    centers = (torch.arange(side) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(centers, centers, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def cell_coverage(scene: Scene, cell: int = 8) -> np.ndarray:
    """Share of each grid cell (row-major) that each object covers: (objects, cells)."""
    side = CANVAS // cell
    masks = np.stack([obj.mask for obj in scene.objects]).reshape(-1, side, cell, side, cell)
    return masks.mean(axis=(2, 4)).reshape(len(scene.objects), -1)


def center_targets(scene: Scene, cell: int = 8) -> torch.Tensor:
    """Where each cell's object center lies, as an offset from the cell's center in cells: (cells, 2), or NaN.

    A cell at least half covered by an object points at that object's box center, a cell no object reaches
    at its own center (offset 0), and a cell an object covers only partly is left out (NaN).
    """
    coverage = torch.from_numpy(cell_coverage(scene, cell))
    cells = cell_centers(CANVAS // cell) * (CANVAS / 2) + CANVAS / 2  # in pixels
    targets = torch.zeros(coverage.shape[1], 2)
    targets[(coverage > 0).any(dim=0)] = torch.nan
    for obj, share in zip(scene.objects, coverage):
        on = share >= 0.5
        targets[on] = (torch.tensor(obj.center, dtype=torch.float32) - cells[on]) / cell
    return targets


def pointer_targets(scene: Scene, cell: int = 8) -> torch.Tensor:
    """Cells the pointer should rest on when predicting each word of the caption and ``<eos>``: (words + 1, cells).

    A word about an object, and the "a" and relation words before it, point at that object's cells (those at
    least half covered, or all it touches if none is); ``<eos>`` points at the background.
    """
    coverage = cell_coverage(scene, cell)
    on_object = [share >= 0.5 if (share >= 0.5).any() else share > 0 for share in coverage]
    links = scene.caption.links
    targets = np.zeros((len(links) + 1, coverage.shape[1]), dtype=bool)
    targets[-1] = ~(coverage > 0).any(axis=0)
    following = -1
    for i in reversed(range(len(links))):
        following = links[i] if links[i] >= 0 else following
        targets[i] = on_object[following]
    return torch.from_numpy(targets)


class ClassEvidence(WordEvidence):
    """Evidence for attribute ``words`` from the object-class scores alone, read at a pointer:
    ``evidence(word) = logsumexp_{classes k with the word} read_k``.

    Without ``grounding.WordEvidence``'s attribute-head term, whose feature direction ("red") is shared by
    every red object, a word's gradient goes almost all to the class of the object the pointer rests on.
    Its log-probability still contrasts it with its rivals' best classes ("small blue circle" at a small red
    circle), where the parts two linear class detectors share cancel; that is why a word's Grad-CAM map
    sometimes peaks on another object with the same attribute.
    """

    def forward(self, read: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(read[..., None, : len(OBJECT_CLASSES)] + self.log_members, dim=-1)


class Memory(NamedTuple):
    """What the decoder reads of a batch of images, one row per grid cell."""

    keys: torch.Tensor  # the cells' part of the pointer scores, key_c + W_m center_c (B, cells, d_pointer)
    table: torch.Tensor  # what the pointer reads: values (d_model), center (2), cell scores (B, cells, ...)
    cells: torch.Tensor  # per-cell classifier scores (B, cells, head columns), see ``grounding.CellHeads``
    offsets: torch.Tensor  # predicted offset of the cell's object center from the cell center, in cells


class Step(NamedTuple):
    """One decoding step: next-token logits (B, V), the pointer (B, cells) and the center it read (B, 2)."""

    logits: torch.Tensor
    pointer: torch.Tensor
    center: torch.Tensor


class ShapesCaptioner(nn.Module):
    """``model(pixel_values, input_ids) -> logits (B, T, V)``, teacher forced; ``generate`` decodes greedily.

    ``input_ids`` start with ``<bos>``; ``logits[:, t]`` scores the token that follows ``input_ids[:, :t + 1]``.
    ``vocab`` is the tokenizer's; its attribute words are scored by the pointer (see the module docstring).
    The GRU reads the words only: the image reaches the scores through the pointer and what it reads alone.
    """

    def __init__(self, vocab: list[str], blocks: list[list[int]], d_word: int, d_model: int, d_pointer: int):
        super().__init__()
        self.encoder = ConvEncoder(blocks)
        channels = self.encoder.out_channels
        side = CANVAS // self.encoder.stride
        self.register_buffer("cell_xy", cell_centers(side), persistent=False)
        self.register_buffer("start", torch.tensor(START), persistent=False)
        self.cell_heads = CellHeads(channels)
        nn.init.constant_(self.cell_heads.bias, CELL_PRIOR)
        self.center_head = nn.Linear(channels, 2)
        self.value_proj = nn.Linear(channels, d_model)
        self.key_proj = nn.Linear(channels, d_pointer)

        self.embed = nn.Embedding(len(vocab), d_word)
        self.gru = nn.GRU(d_word, d_model, batch_first=True)
        self.pointer_query = nn.Linear(d_model, d_pointer)
        self.pointer_move = nn.Linear(2, d_pointer, bias=False)
        self.pointer_score = nn.Linear(d_pointer, 1)

        kinds = [attribute_kind(word) for word in vocab]
        plain = [i for i, kind in enumerate(kinds) if kind is None]
        attribute = [i for i, kind in enumerate(kinds) if kind is not None]
        self.plain_head = nn.Sequential(
            nn.Linear(2 * d_model + 2, d_model), nn.ReLU(), nn.Linear(d_model, len(plain))
        )
        self.kind_head = nn.Linear(d_model, len(ATTRIBUTES))
        self.evidence = ClassEvidence([vocab[i] for i in attribute])
        word_kind = [list(ATTRIBUTES).index(kinds[i]) for i in attribute]
        self.register_buffer("word_kind", torch.tensor(word_kind), persistent=False)
        self.register_buffer("vocab_order", torch.tensor(plain + attribute).argsort(), persistent=False)

        self.pad_id, self.bos_id, self.eos_id = (vocab.index(t) for t in SPECIAL_TOKENS[:3])
        self.default_layer = f"encoder.{self.encoder.last_block}"

    def memory(self, grid: torch.Tensor) -> Memory:
        """Everything the decoder reads of encoder grids (B, C, H, W).

        ``centers = cell_xy + offsets * cell width``, the object center each cell predicts.
        """
        features = grid.flatten(2).transpose(1, 2)
        offsets = self.center_head(features)
        centers = self.cell_xy + offsets * (2 / self.cell_xy.shape[0] ** 0.5)
        keys = self.key_proj(features) + self.pointer_move(centers * MOVE_SCALE)
        cells = self.cell_heads(grid)
        return Memory(keys, torch.cat([self.value_proj(features), centers, cells], dim=-1), cells, offsets)

    def step(self, memory: Memory, hidden: torch.Tensor, center: torch.Tensor) -> Step:
        """Move the pointer and score the next token, given the GRU state (B, d_model) after the last token
        and the center (B, 2) the pointer read at the previous step.

        With ``move_c = (center_c - center) * MOVE_SCALE``, ``pointer = softmax_c(w . relu(key_c + W_q hidden
        + W_m move_c))``. Plain words are scored by an MLP of ``hidden``, the values read at the pointer and
        the move of the read center; an attribute word by its kind's score (from ``hidden``) plus the evidence
        of the cell classifiers read at the pointer.
        """
        query = self.pointer_query(hidden) - self.pointer_move(center * MOVE_SCALE)  # W_m is linear
        pointer = self.pointer_score(torch.relu(memory.keys + query[:, None]))[..., 0].softmax(dim=-1)
        read, read_center, cells = (pointer[:, None] @ memory.table)[:, 0].split(
            [self.gru.hidden_size, 2, memory.cells.shape[-1]], dim=-1
        )
        plain = self.plain_head(torch.cat([hidden, read, (read_center - center) * MOVE_SCALE], dim=-1))
        attribute = self.evidence(cells) + self.kind_head(hidden)[:, self.word_kind]
        logits = torch.cat([plain, attribute], dim=-1)[:, self.vocab_order]
        return Step(logits, pointer, read_center)

    def decode(self, memory: Memory, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced next-token logits (B, T, V) and pointers (B, T, cells) for every prefix of ``input_ids``."""
        hidden, _ = self.gru(self.embed(input_ids))
        center = self.start.expand(len(input_ids), 2)
        logits, pointers = [], []
        for state in hidden.unbind(dim=1):
            out = self.step(memory, state, center)
            logits.append(out.logits)
            pointers.append(out.pointer)
            center = out.center
        return torch.stack(logits, dim=1), torch.stack(pointers, dim=1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(self.memory(self.encoder(pixel_values)), input_ids)[0]

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, max_length: int = 24) -> torch.Tensor:
        """Greedy captions (B, T) without ``<bos>``: each row ends at ``<eos>`` and is padded after it.

        ``max_length`` counts generated tokens, ``<eos>`` included (the world's longest caption is 20 words).
        """
        memory = self.memory(self.encoder(pixel_values))
        batch, device = len(pixel_values), pixel_values.device
        tokens = torch.full((batch,), self.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        center, state, generated = self.start.expand(batch, 2), None, []
        for _ in range(max_length):
            hidden, state = self.gru(self.embed(tokens[:, None]), state)
            out = self.step(memory, hidden[:, 0], center)
            tokens = out.logits.argmax(-1).masked_fill(done, self.pad_id)
            generated.append(tokens)
            center = out.center
            done |= tokens == self.eos_id
            if done.all():
                break
        return torch.stack(generated, dim=1)


def pointer_loss(pointers: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the supervised steps of ``-log sum_{c in target} pointer_c``.

    ``pointers`` (B, T, cells); ``targets`` (B, T, cells) boolean, a step with no target cell is skipped.
    """
    kept = targets.any(dim=-1)
    mass = (pointers * targets).sum(dim=-1)[kept]
    return -mass.clamp_min(1e-12).log().mean()


def center_loss(offsets: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smooth L1 (in cells) between predicted and target center offsets, over the cells with a target."""
    kept = ~targets.isnan().any(dim=-1)
    return F.smooth_l1_loss(offsets[kept], targets[kept], beta=0.1)


class CaptionProcessor:
    """``processor(images) -> {"pixel_values"}``; with ``text`` also the teacher-forcing ``input_ids``.

    ``processor.tokenizer`` is the word-level tokenizer of the captions.
    """

    def __init__(self, tokenizer: WordTokenizer):
        self.tokenizer = tokenizer

    def __call__(
        self, images: ImageLike | Sequence[ImageLike], text: str | Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": pixel_values(images)}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            batch["input_ids"] = self.tokenizer.pad([self.tokenizer.encode(t) for t in texts])
        return batch

    def batch_decode(self, ids: torch.Tensor) -> list[str]:
        """Captions of generated id rows."""
        return [self.tokenizer.decode(row) for row in ids.tolist()]


def build_captioner(spec: dict) -> tuple[ShapesCaptioner, CaptionProcessor]:
    """An untrained captioner and its processor from a spec with ``config`` and ``vocab`` (see ``models``)."""
    return ShapesCaptioner(spec["vocab"], **spec["config"]), CaptionProcessor(WordTokenizer(spec["vocab"]))
