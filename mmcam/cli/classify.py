"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse

from mmcam.cli.common import add_explain_options, check_top, explanation_record, for_each_image, output_folder
from mmcam.images import load_image


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
    parser.add_argument(
        "--concepts",
        action="store_true",
        help="name the units behind each class (the layer's concept table, built on first use: mmcam dissect)",
    )
    add_explain_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.adapters.classification import load_classifier

    check_top(arguments)
    classifier = load_classifier(arguments.model)
    explainer = classifier.explainer(arguments.layer, arguments.method)
    table = None
    if arguments.concepts:
        from mmcam.text.sentences import describe
        from mmcam.text.tables import shapes_table

        layer = arguments.layer or classifier.layer
        if layer == "auto" or arguments.method not in ("gradcam", "gradcam++", "xgradcam", "counterfactual"):
            raise ValueError(
                "--concepts needs a named --layer and a method with channel weights (e.g. gradcam)"
            )
        table = shapes_table(classifier.name, classifier.model, layer, classifier.preprocess)
    output = output_folder(arguments)

    def explain_one(path: str) -> dict:
        image = load_image(path)
        pixels = classifier.preprocess([image])
        explanation = explainer(pixels, classifier.top_classes(pixels, arguments.top))
        record = explanation_record("classify", classifier.name, path, image, explanation, output)
        if table is not None:
            for k, target in enumerate(record["targets"]):
                described = describe(target["label"], explanation.weights[0, k], table)
                target["concepts"], target["text"] = described.as_json(), described.text
        return record

    return for_each_image(arguments.images, explain_one, arguments.json)
