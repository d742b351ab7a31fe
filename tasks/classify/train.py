"""Train the bundled shapes-world classifier and write mmcam/zoo/weights/shapes-classifier.*.

Every epoch draws fresh training scenes from the world (seeds 0, 1, ... < 1000); the final model
is scored on 1000 unseen scenes (seed 10_000) by mean per-class F1 at a 0.5 sigmoid threshold.

    python tasks/classify/train.py            # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmcam.zoo import models
from mmcam.zoo.classifier import DEFAULT_CONFIG, ShapesClassifier
from mmcam.zoo.processing import pixel_values
from mmcam.zoo.world import CLASS_NAMES, make_scenes

NAME = "shapes-classifier"
EVAL_SEED = 10_000
EVAL_SCENES = 1000


def scene_tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel values and multi-hot labels of ``make_scenes(n, seed)``."""
    scenes = make_scenes(n, seed)
    images = pixel_values([s.image for s in scenes])
    labels = torch.from_numpy(np.stack([s.labels for s in scenes]))
    return images, labels


def per_class_f1(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """F1 of each class at a 0.5 sigmoid threshold (1.0 for a class never present nor predicted)."""
    predicted = logits > 0
    truth = labels > 0.5
    tp = (predicted & truth).sum(0).double()
    wrong = (predicted ^ truth).sum(0).double()
    f1 = torch.where(tp + wrong > 0, 2 * tp / (2 * tp + wrong).clamp(min=1), torch.ones_like(tp))
    return f1.numpy()


@torch.no_grad()
def predict(model: ShapesClassifier, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits of ``images`` in eval mode, a batch at a time."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def warmup_cosine(total_steps: int, warmup_steps: int = 50) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then a cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))

    return factor


def train(args: argparse.Namespace) -> tuple[ShapesClassifier, float]:
    """Train for ``args.epochs`` epochs of fresh scenes; returns the model and the seconds spent."""
    model = ShapesClassifier(DEFAULT_CONFIG["blocks"])
    with torch.no_grad():  # start at the prior: about 2 of the 20 classes are present
        model.head.bias.fill_(float(np.log(2 / 18)))
    # The average pool divides an object's evidence by the 256 grid cells, so the head's weights
    # must grow large; at Adam's base rate that takes thousands of steps, hence a faster head.
    head = list(model.head.parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.AdamW(
        [{"params": body}, {"params": head, "lr": args.lr * args.head_lr_scale, "weight_decay": 0.0}],
        lr=args.lr,
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = args.scenes_per_epoch // args.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.epochs * steps_per_epoch))
    val_images, val_labels = scene_tensors(200, EVAL_SEED + 1)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        data_seed = args.seed + epoch
        assert data_seed < 1000, "training scenes must come from seeds < 1000"
        images, labels = scene_tensors(args.scenes_per_epoch, data_seed)
        flip = torch.rand(len(images)) < 0.5  # a mirrored scene has the same labels
        images[flip] = images[flip].flip(-1)
        order = torch.randperm(len(images))
        model.train()
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            loss = F.binary_cross_entropy_with_logits(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            if (step + 1) % 50 == 0 or step + 1 == steps_per_epoch:
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step + 1}/{steps_per_epoch} "
                    f"loss {total / (step + 1):.4f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        print(
            f"epoch {epoch + 1}: validation F1 {per_class_f1(predict(model, val_images), val_labels).mean():.3f}"
        )
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scenes-per-epoch", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--head-lr-scale", type=float, default=30.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=str(models.WEIGHTS_DIR))
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    model, seconds = train(args)
    images, labels = scene_tensors(EVAL_SCENES, EVAL_SEED)
    f1 = per_class_f1(predict(model, images), labels)
    print(f"trained in {seconds:.0f} s; mean per-class F1 on {EVAL_SCENES} fresh scenes: {f1.mean():.4f}")
    for name, value in zip(CLASS_NAMES, f1):
        print(f"  {name:16s} {value:.3f}")

    spec = {
        "architecture": "ShapesClassifier",
        "config": DEFAULT_CONFIG,
        "labels": CLASS_NAMES,
        "default_layer": model.default_layer,
    }
    models.save_trained(
        model.eval(), NAME, spec, args, seconds, {"mean_f1": f1.mean()}, EVAL_SCENES, EVAL_SEED
    )


if __name__ == "__main__":
    main()
