"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmcam.adapters.classification import load_classifier
from mmcam.cli.common import add_explain_options, for_each_image, slug, target_record
from mmcam.images import load_image
from mmcam.viz.figures import save_figure, targets_figure
from mmcam.viz.overlay import overlay, peak_in_image


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "classify",
        help="explain the top classes of an image classifier",
        description="Explain the top-K classes of each IMAGE: one heatmap per class, all from one pass.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    parser.add_argument(
        "--model",
        default="shapes",
        metavar="SPEC",
        help="shapes (bundled, default), a torchvision name (resnet50; add :random for random weights), "
        "or hf:<id or local dir>",
    )
    parser.add_argument(
        "--top", type=int, default=3, metavar="K", help="explain the K best classes (default 3)"
    )
    add_explain_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    if arguments.top < 1:
        raise ValueError("--top must be at least 1")
    classifier = load_classifier(arguments.model)
    explainer = classifier.explainer(arguments.layer, arguments.method)
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)

    def explain_one(path: str) -> dict:
        image = load_image(path)
        pixels = classifier.preprocess([image])
        explanation = explainer(pixels, classifier.top_classes(pixels, arguments.top))
        size = (image.height, image.width)
        stem = slug(Path(path).stem)
        targets = []
        for k, (label, index) in enumerate(zip(explanation.labels[0], explanation.indices[0])):
            heatmap = explanation.maps[0, k]
            map_path = output / f"{stem}-{k + 1}-{slug(label)}.png"
            overlay(image, heatmap).save(map_path)
            score = explanation.scores[0, k]
            targets.append(target_record(label, index, score, peak_in_image(heatmap, size), map_path))
        titles = [f"{t['label']} ({t['score']:.2f})" for t in targets]
        heading = f"{classifier.name} · {explanation.method} @ {explanation.layer}"
        save_figure(
            targets_figure(image, explanation.maps[0], titles, heading), output / f"{stem}-classify.png"
        )
        return {
            "task": "classify",
            "model": classifier.name,
            "layer": explanation.layer,
            "method": explanation.method,
            "image": str(path),
            "size": list(size),
            "targets": targets,
        }

    def describe(record: dict) -> str:
        lines = [f"{record['image']} ({record['method']} at {record['layer']}):"]
        for t in record["targets"]:
            lines.append(
                f"  {t['label']:<20} score {t['score']:8.3f}  peak at {tuple(t['peak'])}  -> {t['map']}"
            )
        return "\n".join(lines)

    return for_each_image(arguments.images, explain_one, arguments.json, describe)
