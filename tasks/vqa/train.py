"""Train the bundled shapes-world VQA model and write mmcam/zoo/weights/shapes-vqa.*.

Every epoch draws fresh training scenes from the world (seeds 0, 1, ... < 1000). Each image is encoded once
per step and answers all of its questions (one per applicable type). Besides the answers, the loss trains
the per-cell detectors directly (object classes and attributes, object centers), the question's classes pi
(cross-entropy to uniform over the classes that have every attribute word of the question) and the pointer
(for a question about one object, -log of the pointer's mass on the cells that object touches). The
trained model answers every question of 1000 unseen scenes (seed 10_000) and is scored by accuracy,
overall and per question type.

    python tasks/vqa/train.py            # see tasks/vqa/README.md for the time it takes
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from mmcam.zoo import models
from mmcam.zoo.grounding import OBJECT_CLASSES, attribute_kind, cell_targets
from mmcam.zoo.processing import pixel_values
from mmcam.zoo.tokenizer import WordTokenizer, split_words
from mmcam.zoo.vqa import DEFAULT_CONFIG, ImageCells, ShapesVQA, VQAProcessor, build_vqa
from mmcam.zoo.world import ANSWERS, QUESTION_TYPES, Scene, make_scenes

NAME = "shapes-vqa"
EVAL_SEED = 10_000
EVAL_SCENES = 1000
CELL = 8  # pixels per grid cell
ABOUT_ONE = ("color", "shape", "exists", "size")  # question types about one object ("exists": when yes)
# Parameters whose values must grow large: the word votes that make pi sharp and the yes/no and count
# scales. Adam moves a parameter by about lr per step, so at the base rate they would take thousands of steps.
FAST_PARAMETERS = ("class_words.", "yes_no.", "count_sharpness")


class Batch(NamedTuple):
    """Scenes' pixels and per-cell targets, and their questions flattened to rows."""

    pixels: torch.Tensor  # (scenes, 3, H, W)
    cells: torch.Tensor  # (scenes, cells, heads): ``cell_targets``
    centers: torch.Tensor  # (scenes, cells): ``center_targets``
    image_index: torch.Tensor  # (rows,) scene of each question
    input_ids: torch.Tensor  # (rows, T)
    answers: torch.Tensor  # (rows,) answer index
    subject: torch.Tensor  # (rows, cells) bool: cells touched by the one object a question is about
    named: torch.Tensor  # (rows, classes) bool: ``named_classes``
    types: list[str]


def center_targets(scene: Scene) -> torch.Tensor:
    """(cells,) each object's box center split bilinearly over the four nearest cell centers.

    Each object adds exactly 1, so ``sum_j sigmoid(center(j))`` counts objects when the detector fits.
    """
    side = scene.image.shape[0] // CELL
    targets = torch.zeros(side, side)
    for obj in scene.objects:
        x, y = (np.array(obj.center) / CELL - 0.5).clip(0, side - 1)  # in cell-center units
        x0, y0 = min(int(x), side - 2), min(int(y), side - 2)
        fx, fy = x - x0, y - y0
        targets[y0 : y0 + 2, x0 : x0 + 2] += torch.tensor(
            [[(1 - fy) * (1 - fx), (1 - fy) * fx], [fy * (1 - fx), fy * fx]]
        )
    return targets.flatten()


def named_classes(question: str) -> torch.Tensor:
    """(classes,) bool: the object classes that have every attribute word of ``question``."""
    words = {word for word in split_words(question) if attribute_kind(word)}
    return torch.tensor([words <= set(cls) for cls in OBJECT_CLASSES])


def touched_cells(mask: np.ndarray) -> torch.Tensor:
    """(cells,) bool: the grid cells that contain at least one pixel of ``mask``."""
    side = mask.shape[0] // CELL
    return torch.from_numpy(mask.reshape(side, CELL, side, CELL).any(axis=(1, 3))).flatten()


def make_batch(scenes: list[Scene], processor: VQAProcessor) -> Batch:
    """Everything training and evaluation need from ``scenes``."""
    rows = [(i, q) for i, scene in enumerate(scenes) for q in scene.questions]
    no_subject = torch.zeros(len(touched_cells(scenes[0].objects[0].mask)), dtype=torch.bool)
    subject = [
        touched_cells(scenes[i].objects[q.objects[0]].mask)
        if q.type in ABOUT_ONE and q.objects
        else no_subject
        for i, q in rows
    ]
    return Batch(
        pixels=pixel_values([s.image for s in scenes]),
        cells=torch.stack([cell_targets(s, CELL) for s in scenes]),
        centers=torch.stack([center_targets(s) for s in scenes]),
        image_index=torch.tensor([i for i, _ in rows]),
        input_ids=processor.encode([q.text for _, q in rows]),
        answers=torch.tensor([processor.answers.index(q.answer) for _, q in rows]),
        subject=torch.stack(subject),
        named=torch.stack([named_classes(q.text) for _, q in rows]),
        types=[q.type for _, q in rows],
    )


def cell_loss(scores: torch.Tensor, targets: torch.Tensor, positive_weight: float) -> torch.Tensor:
    """``grounding.cell_loss`` with each detector's positives weighted by ``positive_weight``.

    A detector fires on a few percent of the cells (an object class on 1/40 of the object cells); unweighted,
    the detectors first learn "never" and fire on their objects only after many more steps.
    """
    kept = (targets >= 0).all(dim=-1)
    weight = torch.tensor(positive_weight)
    loss = F.binary_cross_entropy_with_logits(scores[kept], targets[kept], pos_weight=weight, reduction="sum")
    return loss / kept.sum()


def step_loss(
    model: ShapesVQA, batch: Batch, chosen: torch.Tensor, args: argparse.Namespace
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one step on the scenes ``chosen`` and all their questions; also the answer hits.

    answer cross-entropy + cell detectors + centers + pointer (-log mass on the subject's cells) + pi
    (-mean of log pi over the named classes).
    """
    position = torch.full((len(batch.pixels),), -1)
    position[chosen] = torch.arange(len(chosen))  # scene index -> row of this step's grid
    rows = (position[batch.image_index] >= 0).nonzero()[:, 0]
    cells = model.cells(model.encoder(batch.pixels[chosen]))
    image = position[batch.image_index[rows]]
    logits, pointer = model.answer(
        ImageCells(cells.scores[image], cells.centers[image]), batch.input_ids[rows]
    )
    answers, subject = batch.answers[rows], batch.subject[rows]
    about_one = subject.any(dim=1)
    on_subject = (pointer[about_one] * subject[about_one]).sum(dim=1)
    center = F.binary_cross_entropy_with_logits(cells.centers, batch.centers[chosen], reduction="sum")
    named = batch.named[rows].float()
    pi = -(model.asked_classes(batch.input_ids[rows]) * named).sum(dim=1) / named.sum(dim=1)
    loss = (
        F.cross_entropy(logits, answers, label_smoothing=args.smoothing)
        + args.cell_weight * cell_loss(cells.scores, batch.cells[chosen], args.positive_weight)
        + args.center_weight * center / len(chosen)
        - args.pointer_weight * on_subject.clamp(min=1e-6).log().mean()
        + pi.mean()
    )
    return loss, logits.argmax(-1) == answers


def train(args: argparse.Namespace, tokenizer: WordTokenizer) -> tuple[ShapesVQA, float]:
    """Train for ``args.epochs`` epochs of fresh scenes; returns the model and the seconds spent."""
    model, processor = build_vqa({"config": DEFAULT_CONFIG, "vocab": tokenizer.vocab, "answers": ANSWERS})
    fast = [p for name, p in model.named_parameters() if name.startswith(FAST_PARAMETERS)]
    slow = [p for name, p in model.named_parameters() if not name.startswith(FAST_PARAMETERS)]
    groups = [{"params": slow, "lr": args.lr}, {"params": fast, "lr": args.lr * args.fast_lr_scale}]
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    steps_per_epoch = args.scenes_per_epoch // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in groups],
        total_steps=args.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    start = time.perf_counter()
    for epoch in range(args.epochs):
        data_seed = args.seed + epoch
        assert data_seed < 1000, "training scenes must come from seeds < 1000"
        batch = make_batch(make_scenes(args.scenes_per_epoch, data_seed), processor)
        order = torch.randperm(len(batch.pixels))
        model.train()
        total_loss = total_accuracy = 0.0
        for step in range(1, steps_per_epoch + 1):
            loss, hits = step_loss(
                model, batch, order[(step - 1) * args.batch_size : step * args.batch_size], args
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
            total_accuracy += hits.float().mean().item()
            if step % 50 == 0 or step == steps_per_epoch:
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{steps_per_epoch} loss {total_loss / step:.4f} "
                    f"accuracy {total_accuracy / step:.4f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    return model, time.perf_counter() - start


@torch.no_grad()
def evaluate(
    model: ShapesVQA, processor: VQAProcessor, scenes: list[Scene], batch_size: int = 100
) -> dict[str, float]:
    """Answer accuracy over all questions of ``scenes``, overall and per question type."""
    model.eval()
    batch = make_batch(scenes, processor)
    pixels = batch.pixels
    parts = [
        model.cells(model.encoder(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)
    ]
    cells = ImageCells(*(torch.cat(part)[batch.image_index] for part in zip(*parts)))
    correct = (model.answer(cells, batch.input_ids).logits.argmax(-1) == batch.answers).numpy()
    types = np.array(batch.types)
    result = {"accuracy": float(correct.mean())}
    result.update({f"accuracy_{t}": float(correct[types == t].mean()) for t in QUESTION_TYPES})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scenes-per-epoch", type=int, default=6400)
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per step (all their questions)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--fast-lr-scale", type=float, default=10.0, help="lr multiplier of FAST_PARAMETERS")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--cell-weight", type=float, default=1.0, help="weight of the per-cell class loss")
    parser.add_argument("--center-weight", type=float, default=1.0, help="weight of the center loss")
    parser.add_argument(
        "--positive-weight", type=float, default=10.0, help="weight of a detector's positives"
    )
    parser.add_argument("--pointer-weight", type=float, default=1.0, help="weight of the pointer loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=str(models.WEIGHTS_DIR))
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    tokenizer = WordTokenizer.from_texts(q.text for s in make_scenes(2000, args.seed) for q in s.questions)
    print(f"vocabulary ({len(tokenizer)}): {' '.join(tokenizer.vocab)}")

    model, seconds = train(args, tokenizer)
    model = model.eval()
    processor = VQAProcessor(tokenizer, ANSWERS)
    metrics = evaluate(model, processor, make_scenes(EVAL_SCENES, EVAL_SEED))
    print(f"trained in {seconds:.0f} s; on all questions of {EVAL_SCENES} fresh scenes:")
    for key, value in metrics.items():
        print(f"  {key:18s} {value:.4f}")

    spec = {
        "architecture": "ShapesVQA",
        "config": DEFAULT_CONFIG,
        "vocab": tokenizer.vocab,
        "answers": ANSWERS,
        "default_layer": model.default_layer,
    }
    models.save_trained(model, NAME, spec, args, seconds, metrics, EVAL_SCENES, EVAL_SEED)


if __name__ == "__main__":
    main()
