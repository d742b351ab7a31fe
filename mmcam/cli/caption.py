"""``mmcam caption``: where a captioning model looked for each word of its caption."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mmcam.cli.choices import WORD_CHOICES
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
    parsed,
)


@dataclass(frozen=True)
class CaptionOptions:
    """``mmcam caption``'s options, parsed once."""

    model: str
    prompt: str | None
    caption: str | None
    words: str
    whole: bool
    counterfactual: bool
    explain: ExplainOptions
    concepts: ConceptOptions
    smoothing: SmoothingOptions
    perturbation: PerturbationOptions
    batch: BatchOptions


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "caption",
        help="explain every word of an image's caption",
        description="Caption each IMAGE (or take --caption), then explain each word's log-probability under "
        "teacher forcing: one heatmap per word, all words from one forward and one backward.",
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
        help="shapes (the bundled captioner, default) or hf:<id or local dir> of a BLIP, GIT or "
        "VisionEncoderDecoder captioner or a chat model (LLaVA, LLaVA-NeXT, LLaVA-OneVision, PaliGemma, Gemma 3, Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM)",
    )
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        help='chat models: the request the caption answers (default "Describe the image.")',
    )
    parser.add_argument("--caption", metavar="TEXT", help="explain this caption instead of generating one")
    parser.add_argument(
        "--words",
        choices=WORD_CHOICES,
        default="all",
        help="all words, or content words (nouns and adjectives)",
    )
    parser.add_argument(
        "--whole", action="store_true", help="also explain the whole caption (sum of its words)"
    )
    parser.add_argument(
        "--counterfactual",
        action="store_true",
        help="explain the evidence against each word (negated targets)",
    )
    add_concept_options(parser)
    add_explain_options(parser)
    add_smoothing_options(parser)
    add_perturbation_options(parser)
    add_batch_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    return caption(parsed(CaptionOptions, arguments))


def caption(options: CaptionOptions) -> int:
    """Caption (or take ``--caption``) and explain every word of each input, as ``options`` ask."""
    import torch

    from mmcam.adapters.captioning import chosen_words, explain_captions, generate_captions
    from mmcam.cli.batches import for_each_input
    from mmcam.cli.concepts import add_concepts, concept_table_of, replayed_drops
    from mmcam.cli.output import output_folder, record_job, unknown_words_said
    from mmcam.cli.policy import chosen_method, configured, perturbation_settings, smoothing
    from mmcam.evaluation.distributed import distributed
    from mmcam.images import load_image
    from mmcam.loading import load_captioner

    explain = options.explain
    with distributed(explain.device) as processes:
        captioner = load_captioner(options.model, explain.trust_pickle, options.prompt)
        captioner.model.to(processes.device)
        method = chosen_method(explain.method, options.concepts.concepts, captioner)
        explainer = captioner.explainer(
            explain.layer,
            configured(method, perturbation_settings(options.perturbation, [method])),
            **smoothing(options.smoothing, method),
        )
        table = concept_table_of(options.concepts, method, captioner.subject(explain.layer))
        output = output_folder(explain.output, explain.overwrite)
        unknown = unknown_words_said(captioner.unknown_words, {"caption": options.caption})

        def finish(result):
            """What only this process adds to an input's record: the caption, its words, the concepts."""

            def finished(record: dict) -> dict:
                if table is not None:
                    decided = None if options.caption else [True] * len(record["targets"])  # its own words
                    ablate = replayed_drops(explainer, result.inputs, result.targets, table)
                    add_concepts(record, result.explanation.contributions[0], table, "wrote", decided, ablate)
                record = {**record, "caption": result.caption, "words": result.words}
                return {**record, "unknown_words": unknown} if unknown else record

            return finished

        def problem(caption: str) -> ValueError | None:
            """Why a caption cannot be explained (empty, no content words), or None."""
            try:
                chosen_words(captioner.tokenize(caption), options.words)
            except ValueError as error:
                return error
            return None

        def explain_batch(loaded: list) -> list:
            """The inputs of each prepared size explained together (a chat model that keeps each image's
            aspect, Qwen2-VL, prepares images of several sizes), in input order."""
            jobs: list = [None] * len(loaded)
            for shape in dict.fromkeys(item.inputs.shape for item in loaded):
                same = [i for i, item in enumerate(loaded) if item.inputs.shape == shape]
                for i, job in zip(same, explain_one_size([loaded[i] for i in same])):
                    jobs[i] = job
            return jobs

        def explain_one_size(loaded: list) -> list:
            """Caption the batch in one generation, then explain every word of every caption in one forward
            and one backward; an input whose caption has no word to explain fails alone."""
            pixels = torch.cat([item.inputs for item in loaded])
            if options.caption is None:
                captions = generate_captions(captioner, pixels)
            else:
                captions = [options.caption] * len(loaded)
            problems = [problem(caption) for caption in captions]
            fine = [i for i, error in enumerate(problems) if error is None]
            results = iter(
                explain_captions(
                    captioner,
                    pixels[fine],
                    [captions[i] for i in fine],
                    options.words,
                    options.whole,
                    options.counterfactual,
                    explainer,
                )
                if fine
                else []
            )
            jobs = []
            for item, error in zip(loaded, problems):
                if error is not None:
                    jobs.append(error)
                    continue
                result = next(results)
                job = record_job(
                    output,
                    "caption",
                    captioner.name,
                    item,
                    result.explanation,
                    explain.save_maps,
                    not options.batch.no_figures,
                )
                jobs.append((job, finish(result)))
            return jobs

        return for_each_input(
            options.batch,
            explain.json,
            processes,
            load_image,
            lambda image: captioner.preprocess([image]),
            explain_batch,
            output,
        )
