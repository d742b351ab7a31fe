"""``mmcam classify``: where the evidence for the top classes of an image is."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mmcam.cli.choices import FUSIONS
from mmcam.cli.options import (
    BatchOptions,
    ConceptOptions,
    ExplainOptions,
    PerturbationOptions,
    SmoothingOptions,
    add_batch_options,
    add_concept_options,
    add_explain_options,
    add_perturbation_options,
    add_smoothing_options,
    capped_top,
    check_top,
    comma_separated,
    parsed,
)

LAYERCAM_GAMMA = 2.0  # LayerCAM's tanh scale before fusing layers (Jiang et al., eq. 9; torch-cam's default)


@dataclass(frozen=True)
class ClassifyOptions:
    """``mmcam classify``'s options, parsed once."""

    model: str
    top: int
    video: bool
    classes: list[str]
    against_similar: bool
    fuse_layers: list[str] | None
    fuse_by: str
    frames: int
    explain: ExplainOptions
    concepts: ConceptOptions
    smoothing: SmoothingOptions
    perturbation: PerturbationOptions
    batch: BatchOptions


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
    add_perturbation_options(parser)
    add_batch_options(parser)
    parser.set_defaults(run=run)


def layer_explainer(options: ClassifyOptions, method: str, classifier):
    """The explainer of ``--layer`` with ``method``, or with ``--fuse-layers`` one per layer, their maps
    fused."""
    from mmcam.cli.policy import configured, perturbation_settings, smoothing
    from mmcam.engine.fusion import fused_explainer
    from mmcam.engine.methods import get_method

    layer, smooth = options.explain.layer, smoothing(options.smoothing, method)
    built = configured(method, perturbation_settings(options.perturbation, [method]))
    if not options.fuse_layers:
        return classifier.explainer(layer, built, **smooth)
    if layer or options.concepts.concepts:
        raise ValueError(
            "--fuse-layers names the layers itself and its fused maps have no channel weights: drop "
            + ("--layer" if layer else "--concepts")
        )
    explainers = [classifier.explainer(fused, built, **smooth) for fused in options.fuse_layers]
    gamma = LAYERCAM_GAMMA if get_method(method).name == "layercam" else None
    return fused_explainer(explainers, gamma, options.fuse_by)


def run(arguments: argparse.Namespace) -> int:
    return classify(parsed(ClassifyOptions, arguments))


def classify(options: ClassifyOptions) -> int:
    """Explain the top (or ``--class``) classes of each input, as ``options`` ask."""
    from functools import partial

    import torch

    from mmcam.adapters.classification import top_targets
    from mmcam.cli.batches import for_each_input
    from mmcam.cli.concepts import add_concepts, concept_table_of
    from mmcam.cli.output import output_folder, record_job
    from mmcam.cli.policy import chosen_method
    from mmcam.engine.explainer import Explainer
    from mmcam.evaluation.distributed import distributed
    from mmcam.explanation import split_samples
    from mmcam.images import load_image
    from mmcam.loading import load_classifier
    from mmcam.targets import SimilarClassContrast
    from mmcam.videos import load_clip

    check_top(options.top)
    explain = options.explain
    with distributed(explain.device) as processes:
        classifier = load_classifier(options.model, explain.trust_pickle)
        classifier.model.to(processes.device)
        method = chosen_method(explain.method, options.concepts.concepts, classifier)
        explainer = layer_explainer(options, method, classifier)
        table = concept_table_of(options.concepts, method, classifier.subject(explain.layer))
        output = output_folder(explain.output, explain.overwrite)

        if options.video != classifier.video:
            raise ValueError(
                f"{classifier.name} reads {'clips' if classifier.video else 'images'}: "
                + (
                    "pass --video"
                    if classifier.video
                    else "--video needs a video model such as torchvision:r3d_18"
                )
            )

        chosen = [classifier.class_index(name) for name in options.classes]
        top = capped_top(options.top, classifier.class_names, "classes")

        def finish(explanation, inputs):
            """What only this process adds to an input's record: the concepts behind its classes, each
            sentence with the score drops of zeroing its units. A class is predicted where its multi-label
            logit is positive, else where it ranks first."""

            def finished(record: dict) -> dict:
                if table is not None:
                    from mmcam.concepts.ablation import sentence_drops

                    scores, classes = explanation.scores[0].tolist(), [explanation.indices[0]]
                    decided = [s > 0 if classifier.multi_label else None for s in scores]
                    if not classifier.multi_label and not chosen and not options.against_similar:
                        decided = [k == 0 for k in range(len(scores))]
                    ablate = (
                        None
                        if options.against_similar
                        else partial(sentence_drops, explainer, inputs, classes, table=table)
                    )
                    add_concepts(record, explanation.contributions[0], table, "predicted", decided, ablate)
                return record

            return finished

        def explain_batch(loaded: list) -> list:
            """One forward and one backward for the batch: the --class classes, else each input's top ones.
            While the layer is still to be found (``--layer auto``), the first input goes alone: the probe
            costs about two forwards of its batch (``Explainer.probes``), and what it finds holds for the rest."""
            if len(loaded) > 1 and isinstance(explainer, Explainer) and explainer.probes(loaded[0].inputs):
                return explain_batch(loaded[:1]) + explain_batch(loaded[1:])
            pixels = torch.cat([item.inputs for item in loaded])
            if options.against_similar:  # each class against its nearest classes (Finer-CAM)
                targets = [SimilarClassContrast(c) for c in chosen] or [
                    SimilarClassContrast(rank=r) for r in range(top)
                ]
            else:
                targets = [chosen] * len(loaded) if chosen else top_targets(top)
            explanations = split_samples(explainer(pixels, targets).cpu())
            figures = not options.batch.no_figures
            return [
                (
                    record_job(
                        output,
                        "classify",
                        classifier.name,
                        item,
                        one,
                        explain.save_maps,
                        figures,
                        options.video,
                    ),
                    finish(one, item.inputs),
                )
                for item, one in zip(loaded, explanations)
            ]

        if options.video:
            load, prepare = (
                partial(load_clip, frames=options.frames),
                lambda frames: classifier.preprocess([frames]),
            )
        else:
            load, prepare = load_image, lambda image: classifier.preprocess([image])
        return for_each_input(
            options.batch, explain.json, processes, load, prepare, explain_batch, output, clips=options.video
        )
