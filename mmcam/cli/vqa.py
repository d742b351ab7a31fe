"""``mmcam vqa``: where a VQA model looked to give its answer, and which question words mattered."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

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
    parsed,
)


@dataclass(frozen=True)
class VqaOptions:
    """``mmcam vqa``'s options, parsed once."""

    question: str
    answer: list[str]
    top: int
    why_not: list[str]
    model: str
    explain: ExplainOptions
    concepts: ConceptOptions
    smoothing: SmoothingOptions
    perturbation: PerturbationOptions
    batch: BatchOptions


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "vqa",
        help="explain the answer to a question about an image",
        description="Answer --question about each IMAGE and explain the predicted answer, named answers, the "
        "top-K and 'why not X' (one heatmap each, plus the weight of every question word).",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG, JPEG, WebP, ...), folders of them or quoted glob patterns",
    )
    parser.add_argument("--question", "-q", required=True, metavar="Q", help="the question, in quotes")
    parser.add_argument(
        "--answer", action="append", default=[], metavar="A", help="also explain answer A (repeatable)"
    )
    parser.add_argument(
        "--top", type=int, default=1, metavar="K", help="explain the K best answers (default 1)"
    )
    parser.add_argument(
        "--why-not",
        action="append",
        default=[],
        metavar="X",
        help="explain why not X: the evidence against X, and predicted-vs-X (repeatable)",
    )
    parser.add_argument(
        "--model",
        default="shapes",
        metavar="SPEC",
        help="shapes (the bundled VQA model, default) or hf:<id or local dir> of a ViLT or BLIP VQA model or a "
        "chat model (LLaVA, LLaVA-NeXT, LLaVA-OneVision, PaliGemma, Gemma 3, Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM)",
    )
    add_concept_options(parser)
    add_explain_options(parser)
    add_smoothing_options(parser)
    add_perturbation_options(parser)
    add_batch_options(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    return vqa(parsed(VqaOptions, arguments))


def vqa(options: VqaOptions) -> int:
    """Answer the question about each input and explain the answers, as ``options`` ask."""
    from mmcam.adapters.vqa import explain_answers, explain_top_answers
    from mmcam.cli.batches import Job, for_each_input, one_by_one
    from mmcam.cli.concepts import add_concepts, concept_table_of, replayed_drops
    from mmcam.cli.output import output_folder, record_job, unknown_words_said
    from mmcam.cli.policy import chosen_method, configured, perturbation_settings, smoothing
    from mmcam.evaluation.distributed import distributed
    from mmcam.images import load_image
    from mmcam.loading import load_vqa

    check_top(options.top)
    explain = options.explain
    with distributed(explain.device) as processes:
        model = load_vqa(options.model, explain.trust_pickle)
        model.model.to(processes.device)
        method = chosen_method(explain.method, options.concepts.concepts, model)
        table = concept_table_of(options.concepts, method, model.subject(explain.layer))
        output = output_folder(explain.output, explain.overwrite)
        explainer = model.explainer(
            explain.layer,
            configured(method, perturbation_settings(options.perturbation, [method])),
            **smoothing(options.smoothing, method),
        )
        texts = {"question": options.question}
        if model.answers is None:  # a generative model reads the answers asked about as words too
            texts["answers"] = " ".join([*options.answer, *options.why_not])
        unknown = unknown_words_said(model.unknown_words, texts)
        top = capped_top(options.top, model.answers, "answers")

        def job(item, result) -> Job:
            """The record of one answered image: its figures, then the question words' weights and the rest."""

            def finish(record: dict) -> dict:
                weights = result.explanation.token_weights[0].tolist()
                for target, row in zip(record["targets"], weights):
                    target["question_weights"] = [
                        [token, round(weight, 6)]
                        for token, weight in zip(result.tokens, row)
                        if token is not None
                    ]
                if table is not None:
                    decided = [target["label"] == result.answer for target in record["targets"]]
                    ablate = replayed_drops(explainer, result.inputs, result.targets, table)
                    contributions = result.explanation.contributions[0]
                    add_concepts(record, contributions, table, "answered", decided, ablate)
                record = {**record, "question": result.question, "answer": result.answer}
                return {**record, "unknown_words": unknown} if unknown else record

            figures = not options.batch.no_figures
            write = record_job(
                output, "vqa", model.name, item, result.explanation, explain.save_maps, figures
            )
            return write, finish

        def explain_one(item) -> Job:
            asked = (options.question, options.answer, top, options.why_not)
            return job(item, explain_answers(model, item.image, *asked, explainer=explainer))

        def explain_batch(loaded: list) -> list[Job]:
            """The question about every image of the batch in one forward and one backward (a generative
            model's answers generated for the batch at once)."""
            results = explain_top_answers(
                model, [item.image for item in loaded], options.question, top, explainer
            )
            return [
                result if isinstance(result, ValueError) else job(item, result)
                for item, result in zip(loaded, results)
            ]

        batched = not options.answer and not options.why_not
        explain_inputs = explain_batch if batched else one_by_one(explain_one)
        return for_each_input(
            options.batch, explain.json, processes, load_image, lambda image: None, explain_inputs, output
        )
