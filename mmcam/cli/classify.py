"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse

from mmcam.cli.common import (
    add_concept_options,
    add_concepts,
    add_explain_options,
    check_top,
    concept_table_of,
    for_each_image,
    output_folder,
)
from mmcam.cli.records import explanation_record
from mmcam.images import load_image


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "classify",
        help="explain the top classes of an image classifier",
        description="Explain the top-K classes of each IMAGE: one heatmap per class, all from one pass.",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG, JPEG, WebP, ...), folders of them or quoted glob patterns",
    )
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
    add_concept_options(parser)
    add_explain_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.loading import load_classifier

    check_top(arguments)
    classifier = load_classifier(arguments.model)
    explainer = classifier.explainer(arguments.layer, arguments.method)
    table = concept_table_of(arguments, classifier.subject(arguments.layer))
    output = output_folder(arguments)

    def explain_one(path: str) -> dict:
        image = load_image(path)
        pixels = classifier.preprocess([image])
        explanation = explainer(pixels, classifier.top_classes(pixels, arguments.top))
        record = explanation_record("classify", classifier.name, path, image, explanation, output)
        if table is not None:
            add_concepts(record, explanation.weights[0], table, "predicted")
        return record

    return for_each_image(arguments.images, explain_one, arguments.json, output)
