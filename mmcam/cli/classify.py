"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse

from mmcam.cli.choices import FUSIONS
from mmcam.cli.common import (
    add_batch_options,
    add_concept_options,
    add_concepts,
    add_explain_options,
    add_smoothing_options,
    check_top,
    chosen_method,
    comma_separated,
    concept_table_of,
    for_each_input,
    output_folder,
    record_job,
    smoothing,
)

LAYERCAM_GAMMA = 2.0  # LayerCAM's tanh scale before fusing layers (Jiang et al., eq. 9; torch-cam's default)


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
    parser.add_argument(
        "--against-similar",
        action="store_true",
        help="explain each class against the 3 classes whose scores are nearest it (Finer-CAM): what tells "
        "them apart",
    )
    parser.add_argument(
        "--fuse-layers",
        type=comma_separated,
        default=None,
        metavar="L,L,...",
        help="explain at each of these layers and fuse the maps at the finest grid (see --fuse-by); "
        "instead of --layer",
    )
    parser.add_argument(
        "--fuse-by",
        choices=FUSIONS,
        default="maximum",
        help="--fuse-layers: the maximum of the maps (torch-cam's fuse_cams; LayerCAM maps tanh-scaled "
        "first; default) or the product of the min-max scaled maps (RefineCAM)",
    )
    parser.add_argument("--frames", type=int, default=16, help="--video: frames sampled evenly (default 16)")
    add_concept_options(parser)
    add_explain_options(parser)
    add_smoothing_options(parser)
    add_batch_options(parser)
    parser.set_defaults(run=run)


def layer_explainer(arguments: argparse.Namespace, classifier):
    """The explainer of ``--layer``, or with ``--fuse-layers`` one per layer, their maps fused."""
    from mmcam.engine.fusion import fused_explainer
    from mmcam.engine.methods import get_method

    if not arguments.fuse_layers:
        return classifier.explainer(arguments.layer, arguments.method, **smoothing(arguments))
    if arguments.layer or arguments.concepts:
        raise ValueError(
            "--fuse-layers names the layers itself and its fused maps have no channel weights: drop "
            + ("--layer" if arguments.layer else "--concepts")
        )
    explainers = [
        classifier.explainer(layer, arguments.method, **smoothing(arguments))
        for layer in arguments.fuse_layers
    ]
    gamma = LAYERCAM_GAMMA if get_method(arguments.method).name == "layercam" else None
    return fused_explainer(explainers, gamma, arguments.fuse_by)


def run(arguments: argparse.Namespace) -> int:
    from functools import partial

    import torch

    from mmcam.adapters.classification import top_targets
    from mmcam.evaluation.distributed import start_processes
    from mmcam.explanation import split_samples
    from mmcam.images import load_image
    from mmcam.loading import load_classifier
    from mmcam.targets import SimilarClassContrast
    from mmcam.videos import load_clip

    check_top(arguments)
    processes = start_processes(arguments.device)
    classifier = load_classifier(arguments.model, arguments.trust_pickle)
    classifier.model.to(processes.device)
    arguments.method = chosen_method(arguments, classifier)
    explainer = layer_explainer(arguments, classifier)
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

    def finish(explanation):
        """What only this process adds to an input's record: the concepts behind its classes."""

        def finished(record: dict) -> dict:
            if table is not None:
                add_concepts(record, explanation.weights[0], table, "predicted")
            return record

        return finished

    def explain_batch(loaded: list) -> list:
        """One forward and one backward for the batch: the --class classes, else each input's top ones."""
        pixels = torch.cat([item.inputs for item in loaded])
        if arguments.against_similar:  # each class against its nearest classes (Finer-CAM)
            targets = [SimilarClassContrast(c) for c in chosen] or [
                SimilarClassContrast(rank=r) for r in range(arguments.top)
            ]
        else:
            targets = [chosen] * len(loaded) if chosen else top_targets(arguments.top)
        explanations = split_samples(explainer(pixels, targets).cpu())
        return [
            (
                record_job(arguments, output, "classify", classifier.name, item, one, arguments.video),
                finish(one),
            )
            for item, one in zip(loaded, explanations)
        ]

    if arguments.video:
        load, prepare = (
            partial(load_clip, frames=arguments.frames),
            lambda frames: classifier.preprocess([frames]),
        )
    else:
        load, prepare = load_image, lambda image: classifier.preprocess([image])
    return for_each_input(arguments, processes, load, prepare, explain_batch, output, clips=arguments.video)
