"""Train the bundled shapes-world captioner and write mmcam/zoo/weights/shapes-captioner.*.

Every epoch draws fresh training scenes from the world (seeds 0, 1, ... < 1000). The loss adds four parts:
the teacher-forced caption cross-entropy (with label smoothing, which keeps word log-probabilities from
saturating, so their gradients stay informative for Grad-CAM), the pointer's mass off the object each word is
about (``pointer_targets``), the per-cell classifiers (``grounding.cell_loss``) and the per-cell object
centers (``center_targets``). The final model captions 1000 unseen scenes (seed 10_000) greedily and is
scored by exact match with the world's caption.

    python tasks/caption/train.py            # about 14 minutes on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mmcam.zoo import models
from mmcam.zoo.captioner import (
    DEFAULT_CONFIG,
    CaptionProcessor,
    ShapesCaptioner,
    build_captioner,
    center_loss,
    center_targets,
    pointer_loss,
    pointer_targets,
)
from mmcam.zoo.grounding import attribute_kind, cell_loss, cell_targets
from mmcam.zoo.tokenizer import BOS, PAD, WordTokenizer
from mmcam.zoo.world import Scene, make_scenes

NAME = "shapes-captioner"
EVAL_SEED = 10_000
EVAL_SCENES = 1000
VALIDATION_SEED = 10_001


class Batch:
    """Model inputs and training targets of a list of scenes."""

    def __init__(self, scenes: list[Scene], processor: CaptionProcessor):
        batch = processor([s.image for s in scenes], [s.caption.text for s in scenes])
        self.images = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        self.input_ids = batch["input_ids"]
        self.cells = torch.stack([cell_targets(s) for s in scenes])
        self.centers = torch.stack([center_targets(s) for s in scenes])
        self.pointers = torch.zeros(
            len(scenes), self.input_ids.shape[1], self.cells.shape[1], dtype=torch.bool
        )
        for row, scene in zip(self.pointers, scenes):
            targets = pointer_targets(scene)
            row[: len(targets)] = targets


def batches(scenes: list[Scene], processor: CaptionProcessor, batch_size: int) -> Iterator[Batch]:
    """Shuffled full batches of ``scenes``."""
    order = torch.randperm(len(scenes)).tolist()
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield Batch([scenes[i] for i in order[start : start + batch_size]], processor)


def smoothed_targets(vocab: list[str], smoothing: float) -> torch.Tensor:
    """Row ``i``: the training distribution for target word ``i``, ``1 - smoothing`` on it and ``smoothing``
    spread over the words of its kind (sizes, colors, shapes, or the plain words that can be generated).

    Smoothing within the kind keeps the word log-probabilities from saturating, so their gradients stay
    informative for Grad-CAM, while a word's gradient stays a contrast with its own alternatives ("red"
    rather than "blue") instead of picking up every other word of the vocabulary.
    """
    kinds = [attribute_kind(word) or ("plain" if word not in (PAD, BOS) else None) for word in vocab]
    same = torch.tensor([[kind is not None and kind == other for other in kinds] for kind in kinds])
    same |= torch.eye(len(vocab), dtype=torch.bool)
    return (1 - smoothing) * torch.eye(len(vocab)) + smoothing * same / same.sum(1, keepdim=True)


def caption_loss(logits: torch.Tensor, input_ids: torch.Tensor, pad_id: int, targets: torch.Tensor):
    """Teacher-forced loss and token accuracy: ``logits[:, t]`` predicts ``input_ids[:, t + 1]``, whose training
    distribution is the row of ``targets`` (``smoothed_targets``)."""
    logits, words = logits[:, :-1], input_ids[:, 1:]
    real = words != pad_id
    loss = F.cross_entropy(logits[real], targets[words[real]])
    accuracy = (logits[real].argmax(-1) == words[real]).float().mean()
    return loss, accuracy.item()


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then a cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))

    return factor


def train(args: argparse.Namespace, tokenizer: WordTokenizer) -> tuple[ShapesCaptioner, float]:
    """Train for ``args.epochs`` epochs of fresh scenes; returns the model and the seconds spent."""
    model, processor = build_captioner({"config": DEFAULT_CONFIG, "vocab": tokenizer.vocab})
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = args.scenes_per_epoch // args.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.epochs * steps_per_epoch, 100))
    soft_targets = smoothed_targets(tokenizer.vocab, args.smoothing)
    validation = make_scenes(200, VALIDATION_SEED)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        data_seed = args.seed + epoch
        assert data_seed < 1000, "training scenes must come from seeds < 1000"
        model.train()
        totals: Counter = Counter()
        for step, batch in enumerate(
            batches(make_scenes(args.scenes_per_epoch, data_seed), processor, args.batch_size), start=1
        ):
            memory = model.memory(model.encoder(batch.images))
            logits, pointers = model.decode(memory, batch.input_ids)
            words, accuracy = caption_loss(logits, batch.input_ids, tokenizer.pad_id, soft_targets)
            parts = {
                "words": words,
                "pointer": pointer_loss(pointers, batch.pointers),
                "cells": cell_loss(memory.cells, batch.cells),
                "centers": center_loss(memory.offsets, batch.centers),
            }
            loss = sum(parts.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            totals.update({name: part.item() for name, part in parts.items()})
            totals["token accuracy"] += accuracy
            if step % 25 == 0 or step == steps_per_epoch:
                shown = " ".join(f"{name} {value / step:.3f}" for name, value in totals.items())
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{steps_per_epoch} {shown} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        metrics, _ = evaluate(model, processor, validation)
        print(f"epoch {epoch + 1}: validation exact match {metrics['exact_match']:.3f}", flush=True)
    return model, time.perf_counter() - start


def first_error(generated: list[str], truth: list[str]) -> str:
    """What the first wrong word of a caption should have been: an attribute kind, a relation or the end."""
    for made, expected in zip([*generated, "<eos>"], [*truth, "<eos>"]):
        if made != expected:
            return attribute_kind(expected) or ("end" if expected == "<eos>" else "relation or 'a'")
    return "none"


@torch.no_grad()
def evaluate(
    model: ShapesCaptioner, processor: CaptionProcessor, scenes: list[Scene], batch_size: int = 100
) -> tuple[dict[str, float], Counter]:
    """Exact-match accuracy of greedy captions, overall and by number of objects, and the misses' first errors."""
    model.eval()
    hits: dict[int, list[bool]] = {}
    errors: Counter = Counter()
    for start in range(0, len(scenes), batch_size):
        chosen = scenes[start : start + batch_size]
        generated = processor.batch_decode(
            model.generate(processor([s.image for s in chosen])["pixel_values"])
        )
        for scene, caption in zip(chosen, generated):
            hits.setdefault(len(scene.objects), []).append(caption == scene.caption.text)
            if caption != scene.caption.text:
                errors[first_error(caption.split(), scene.caption.words)] += 1
    everything = [hit for per_count in hits.values() for hit in per_count]
    result = {"exact_match": float(np.mean(everything))}
    result.update({f"exact_match_{n}_objects": float(np.mean(hits[n])) for n in sorted(hits)})
    return result, errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--scenes-per-epoch", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads; 1 is several times faster on a contended CPU"
    )
    parser.add_argument("--weights-dir", default=str(models.WEIGHTS_DIR))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = WordTokenizer.from_texts(s.caption.text for s in make_scenes(2000, args.seed))
    print(f"vocabulary ({len(tokenizer)}): {' '.join(tokenizer.vocab)}")

    model, seconds = train(args, tokenizer)
    model = model.to(memory_format=torch.contiguous_format).eval()
    metrics, errors = evaluate(model, CaptionProcessor(tokenizer), make_scenes(EVAL_SCENES, EVAL_SEED))
    print(f"trained in {seconds:.0f} s; on {EVAL_SCENES} fresh scenes:")
    for key, value in metrics.items():
        print(f"  {key:24s} {value:.4f}")
    print("  first wrong word of the misses: " + ", ".join(f"{k} {v}" for k, v in errors.most_common()))

    spec = {
        "architecture": "ShapesCaptioner",
        "config": DEFAULT_CONFIG,
        "vocab": tokenizer.vocab,
        "default_layer": model.default_layer,
    }
    models.save_trained(model, NAME, spec, args, seconds, metrics, EVAL_SCENES, EVAL_SEED)


if __name__ == "__main__":
    main()
