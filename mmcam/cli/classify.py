"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse

from mmcam.cli.common import (
    add_concept_options,
    add_concepts,
    add_explain_options,
    check_top,
    chosen_method,
    concept_table_of,
    for_each_image,
    output_folder,
)


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
        help="shapes (bundled, default), a torchvision name (resnet50, r3d_18; add :random for random "
        "weights, or :DIR for your own safetensors checkpoint), or hf:<id or local dir>",
    )
    parser.add_argument(
        "--top", type=int, default=3, metavar="K", help="explain the K best classes (default 3)"
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="each IMAGE is a clip: a folder of frames, an animated GIF or a video file (OpenCV); needs a "
        "video model such as torchvision:r3d_18. Maps are per frame: (T, H, W) per class",
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="NAME|INDEX",
        help="explain this class (its name, any case, or its output number) instead of the top ones; repeatable",
    )
    parser.add_argument("--frames", type=int, default=16, help="--video: frames sampled evenly (default 16)")
    add_concept_options(parser)
    add_explain_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.cli.records import clip_record, explanation_record
    from mmcam.engine.devices import chosen_device
    from mmcam.images import load_image
    from mmcam.loading import load_classifier
    from mmcam.videos import load_clip

    check_top(arguments)
    device = chosen_device(arguments.device)
    classifier = load_classifier(arguments.model, arguments.trust_pickle)
    classifier.model.to(device)
    arguments.method = chosen_method(arguments, classifier)
    explainer = classifier.explainer(arguments.layer, arguments.method)
    table = concept_table_of(arguments, classifier.subject(arguments.layer))
    output = output_folder(arguments)

    if arguments.video != classifier.video:
        raise ValueError(
            f"{classifier.name} reads {'clips' if classifier.video else 'images'}: "
            + (
                "pass --video"
                if classifier.video
                else "--video needs a video model such as torchvision:r3d_18"
            )
        )

    chosen = [classifier.class_index(name) for name in arguments.classes]

    def targets(pixels) -> list[list[int]]:
        """The --class classes for every input, else each input's top classes."""
        return [chosen] * len(pixels) if chosen else classifier.top_classes(pixels, arguments.top)

    def explain_clip(path: str, stem: str) -> dict:
        frames = load_clip(path, arguments.frames)
        pixels = classifier.preprocess([frames])
        explanation = explainer(pixels, targets(pixels)).cpu()
        return clip_record(
            "classify", classifier.name, path, frames, explanation, output, stem, arguments.save_maps
        )

    def explain_one(path: str, stem: str) -> dict:
        image = load_image(path)
        pixels = classifier.preprocess([image])
        explanation = explainer(pixels, targets(pixels)).cpu()
        record = explanation_record(
            "classify",
            classifier.name,
            path,
            image,
            explanation,
            output,
            stem=stem,
            save_maps=arguments.save_maps,
        )
        if table is not None:
            add_concepts(record, explanation.weights[0], table, "predicted")
        return record

    if arguments.video:
        return for_each_image(arguments.images, explain_clip, arguments.json, output, clips=True)
    return for_each_image(arguments.images, explain_one, arguments.json, output)
