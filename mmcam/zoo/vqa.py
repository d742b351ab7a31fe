"""A small VQA model for the shapes world, in the spirit of the LSTM-CNN VQA model of the Grad-CAM paper.

A CNN encodes the image into a grid of cells and a GRU encodes the question. Unlike the paper's model, which
pools the image before fusing it with the question, this one never pools the grid: every cell gets the
per-cell classifiers of ``grounding`` (one detector per object class, size, color and shape), the question
says which object classes it names, and the answer is read at the cells where those classes are detected.
With ``h(j)`` the classifier scores of cell ``j`` (columns: classes, sizes, colors, shapes) and

    S_c(j) = h_c(j) + h_size(c)(j) + h_color(c)(j) + h_shape(c)(j)     object class c, with its attributes
    log pi(q) = log_softmax( sum_w E[w] )                               classes the question's words name

(``pi`` is uniform over the circles for "what color is the circle?", over the red ones for "what shape is the
red object?", over the two red circles for "is there a red circle?"):

    pointer   p_j = softmax_j( logsumexp_c( log pi_c(q) + S_c(j) ) )
    read      r = sum_j p_j h(j)
    score(a)  = kind(q)[kind of a] + evidence(a)

where ``kind`` (from the GRU state) says whether a color, shape, size, yes/no or count is asked, and

* colors, shapes, sizes: ``grounding.WordEvidence`` of the read (attribute score + log-sum-exp of the
  scores of the object classes with that attribute);
* yes / no: a linear function of ``match = logsumexp_c(log pi_c(q) + S_c(r))``, how well the pointed-at
  cells are the class the question names;
* counts 1, 2, 3: ``-s (n - count)^2`` with ``n = sum_j sigmoid(center(j))``, from a per-cell detector of
  object centers trained so that each object adds one.

So the evidence for an answer about "the circle" is taken from the circle's cells, through the detector of
the circle's class, and Grad-CAM on ``default_layer`` shows it on the circle rather than on another object
of the same color; the score of a color the circle does *not* have is led by that color's detector, and its
map shows the object that has that color. The attribute-summed ``S`` only finds the cells (pointer, match):
in the answers' evidence it would carry the pointed-at object's shape and size into every color's map. No
layer norm sits between the grid and the scores: a scale-invariant read makes Grad-CAM's channel weights
orthogonal to the object's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mmcam.zoo.encoder import DEFAULT_BLOCKS, ConvEncoder
from mmcam.zoo.grounding import (
    ATTRIBUTES,
    HEAD_SIZES,
    OBJECT_CLASSES,
    CellHeads,
    WordEvidence,
    attribute_kind,
)
from mmcam.zoo.processing import ImageLike, pixel_values
from mmcam.zoo.tokenizer import WordTokenizer
from mmcam.zoo.world import ANSWERS, QUESTION_TYPES

ANSWER_KINDS = {"yes": "exists", "no": "exists", "1": "count", "2": "count", "3": "count"}
COUNTS = ("1", "2", "3")

DEFAULT_CONFIG = {"blocks": DEFAULT_BLOCKS, "d_word": 32, "d_model": 64}


class ImageCells(NamedTuple):
    """What the answer reads from images: the classifier scores and the center detector of every cell."""

    scores: torch.Tensor  # (B, cells, sum(HEAD_SIZES)): object classes, sizes, colors, shapes
    centers: torch.Tensor  # (B, cells): center detector logits


class Answer(NamedTuple):
    """Answer logits and the pointer over cells they were read at."""

    logits: torch.Tensor  # (B, answers)
    pointer: torch.Tensor  # (B, cells), sums to 1


def class_sum_matrix() -> torch.Tensor:
    """(sum(HEAD_SIZES), classes) 0/1 with ``h @ matrix = S``: object class ``c`` scores its own column plus
    its size, color and shape columns, ``S_c = h_c + h_size(c) + h_color(c) + h_shape(c)``."""
    matrix = torch.zeros(sum(HEAD_SIZES), len(OBJECT_CLASSES))
    starts = np.cumsum(HEAD_SIZES)  # where the size, color and shape columns start
    for c, attributes in enumerate(OBJECT_CLASSES):  # (size, color, shape), the order of ATTRIBUTES
        matrix[c, c] = 1
        for start, (kind, value) in zip(starts, zip(ATTRIBUTES, attributes)):
            matrix[start + ATTRIBUTES[kind].index(value), c] = 1
    return matrix


class ShapesVQA(nn.Module):
    """``model(pixel_values, input_ids) -> answer logits (B, len(answers))``.

    ``input_ids`` are question word ids, right-padded with ``pad_id``; ``answers`` are the world's ANSWERS
    (any order).
    """

    def __init__(
        self,
        vocab_size: int,
        blocks: list[list[int]],
        d_word: int,
        d_model: int,
        answers: Sequence[str] = ANSWERS,
        pad_id: int = 0,
    ):
        super().__init__()
        self.encoder = ConvEncoder(blocks)
        channels = self.encoder.out_channels
        self.cell_heads = CellHeads(channels)
        self.center = nn.Linear(channels, 1)
        self.embed = nn.Embedding(vocab_size, d_word, padding_idx=pad_id)
        self.question_rnn = nn.GRU(d_word, d_model, batch_first=True)
        self.kind_head = nn.Linear(d_model, len(QUESTION_TYPES))
        self.class_words = nn.Embedding(vocab_size, len(OBJECT_CLASSES), padding_idx=pad_id)
        self.yes_no = nn.Linear(1, 2)
        self.count_sharpness = nn.Parameter(torch.tensor(1.0))
        nn.init.constant_(self.center.bias, -5.0)  # start near "no object anywhere"
        nn.init.zeros_(self.class_words.weight)  # start with pi uniform over the classes
        self.register_buffer("class_sum", class_sum_matrix(), persistent=False)
        self.register_buffer("counts", torch.tensor([float(n) for n in COUNTS]), persistent=False)

        attribute = [a for a in answers if attribute_kind(a)]
        self.evidence = WordEvidence(attribute)
        order = [*attribute, "yes", "no", *COUNTS]
        if sorted(order) != sorted(answers):
            raise ValueError(f"answers must be attribute words, yes, no and {COUNTS}; got {list(answers)}")
        kinds = [attribute_kind(a) or ANSWER_KINDS[a] for a in order]
        self.register_buffer("answer_kind", torch.tensor([QUESTION_TYPES.index(k) for k in kinds]), False)
        self.register_buffer("answer_order", torch.tensor([order.index(a) for a in answers]), False)
        self.pad_id = pad_id
        self.default_layer = f"encoder.{self.encoder.last_block}"

    def cells(self, grid: torch.Tensor) -> ImageCells:
        """Per-cell classifier scores and center logits of encoder grids (B, C, H, W)."""
        return ImageCells(self.cell_heads(grid), self.center(grid.flatten(2).transpose(1, 2))[..., 0])

    def encode_question(self, input_ids: torch.Tensor) -> torch.Tensor:
        """GRU state after the last real word of each question (B, d_model)."""
        states, _ = self.question_rnn(self.embed(input_ids))
        last = (input_ids != self.pad_id).sum(1).clamp(min=1) - 1
        return states[torch.arange(len(input_ids), device=input_ids.device), last]

    def asked_classes(self, input_ids: torch.Tensor) -> torch.Tensor:
        """log pi(q) (B, classes): each word votes for object classes, ``log_softmax(sum_w E[w])``."""
        return self.class_words(input_ids).sum(dim=1).log_softmax(dim=-1)

    def answer(self, cells: ImageCells, input_ids: torch.Tensor) -> Answer:
        """Answer logits for questions (B, T) about images whose ``cells`` are given row by row."""
        question = self.encode_question(input_ids)
        asked = self.asked_classes(input_ids)
        pointer = torch.logsumexp(asked[:, None] + cells.scores @ self.class_sum, dim=-1).softmax(dim=-1)
        read = (pointer[:, None] @ cells.scores)[:, 0]
        match = torch.logsumexp(asked + read @ self.class_sum, dim=-1, keepdim=True)
        count = cells.centers.sigmoid().sum(dim=1, keepdim=True)
        count_evidence = -self.count_sharpness.abs() * (count - self.counts) ** 2
        evidence = torch.cat([self.evidence(read), self.yes_no(match), count_evidence], dim=-1)
        scores = evidence + self.kind_head(question)[:, self.answer_kind]
        return Answer(scores[:, self.answer_order], pointer)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.answer(self.cells(self.encoder(pixel_values)), input_ids).logits


class VQAProcessor:
    """``processor(images, questions) -> {"pixel_values", "input_ids"}`` (questions right-padded).

    ``processor.answers`` names the model's outputs; ``processor.tokenizer`` is the question tokenizer.
    """

    def __init__(self, tokenizer: WordTokenizer, answers: Sequence[str] = ANSWERS):
        self.tokenizer = tokenizer
        self.answers = list(answers)

    def __call__(
        self, images: ImageLike | Sequence[ImageLike], questions: str | Sequence[str]
    ) -> dict[str, torch.Tensor]:
        questions = [questions] if isinstance(questions, str) else list(questions)
        pixels = pixel_values(images)
        if len(pixels) != len(questions):
            raise ValueError(
                f"got {len(pixels)} images but {len(questions)} questions; pass one of each per row"
            )
        return {"pixel_values": pixels, "input_ids": self.encode(questions)}

    def encode(self, questions: Sequence[str]) -> torch.Tensor:
        """Word ids of ``questions``, right-padded (B, longest)."""
        return self.tokenizer.pad([self.tokenizer.encode(q, add_special_tokens=False) for q in questions])

    def decode(self, logits: torch.Tensor) -> list[str]:
        """The top answer of each row of ``logits``."""
        return [self.answers[i] for i in logits.argmax(-1).tolist()]


def build_vqa(spec: dict) -> tuple[ShapesVQA, VQAProcessor]:
    """An untrained VQA model and its processor from a spec with ``config``, ``vocab`` and ``answers``."""
    tokenizer = WordTokenizer(spec["vocab"])
    answers = spec.get("answers", ANSWERS)
    model = ShapesVQA(len(tokenizer), **spec["config"], answers=answers, pad_id=tokenizer.pad_id)
    return model, VQAProcessor(tokenizer, answers)
