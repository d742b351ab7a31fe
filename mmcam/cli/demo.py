"""``mmcam demo``: the bundled shapes world and models, explained, with no download."""

from __future__ import annotations

import argparse
import json


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="explain the bundled models on freshly drawn shapes scenes",
        description="Draw shapes scenes and explain the bundled models on each: the classifier's map for every "
        "object, the captioner's map for every word, and the VQA model's answer to a question (each in one "
        "pass). Writes figures and a summary with how often a map's peak fell inside the object it is about; "
        "no download.",
    )
    parser.add_argument("--scenes", type=int, default=6, help="how many scenes (default 6)")
    parser.add_argument("--seed", type=int, default=20_000, help="scene seed (default 20000)")
    parser.add_argument("-o", "--output", default="mmcam-demo", metavar="DIR", help="default ./mmcam-demo")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the figures, summary and report of an earlier run in -o DIR (kept otherwise)",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from mmcam.adapters.captioning import explain_caption
    from mmcam.adapters.vqa import explain_answers
    from mmcam.cli.output import note_written, output_folder
    from mmcam.evaluation.pointing import scene_masks, word_hits
    from mmcam.loading import load_captioner, load_classifier, load_vqa
    from mmcam.metrics.pointing import peak_hit_shares
    from mmcam.report import caption_view, explanation_view, vqa_view, write_report
    from mmcam.viz.figures import save_figure, targets_figure
    from mmcam.zoo import make_scenes

    output = output_folder(arguments.output, arguments.overwrite)
    classifier, captioner, vqa = load_classifier("shapes"), load_captioner("shapes"), load_vqa("shapes")
    class_explainer, caption_explainer = classifier.explainer(), captioner.explainer()
    vqa_explainer = vqa.explainer()
    scenes = make_scenes(arguments.scenes, seed=arguments.seed, n_objects=(2, 3))
    kinds = ("classes", "caption words", "vqa answers")
    records, hits, totals, views = [], dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0), []

    def count(kind: str, inside: list[float]) -> None:
        hits[kind] += sum(inside)
        totals[kind] += len(inside)

    def save(figure, name: str) -> str:
        save_figure(figure, output / name)
        note_written(output, [name])
        return str(output / name)

    for number, scene in enumerate(tqdm(scenes, desc="demo", unit="scene")):
        image = Image.fromarray(scene.image)
        record = {"scene": number, "true caption": scene.caption.text, "figures": []}

        classes = class_explainer(
            classifier.preprocess([image]), [[obj.class_index for obj in scene.objects]]
        )
        inside = peak_hit_shares(
            classes.maps[0], scene_masks(scene, list(range(len(scene.objects))))
        ).tolist()
        count("classes", inside)
        titles = [
            f"{label}{'' if hit >= 0.5 else ' (miss)'}" for label, hit in zip(classes.labels[0], inside)
        ]
        figure = targets_figure(image, classes.maps[0], titles, "classes")
        record["figures"].append(save(figure, f"scene-{number}-classify.png"))
        record["classes"] = [
            {"label": lab, "peak_inside_object": hit >= 0.5} for lab, hit in zip(classes.labels[0], inside)
        ]

        words = explain_caption(captioner, image, explainer=caption_explainer)
        inside = word_hits(scene, words.words, words.explanation.maps[0])
        count("caption words", [hit for _, kind, hit in inside if kind in ("color", "shape")])
        record["caption"] = words.caption
        figure = targets_figure(image, words.explanation.maps[0], words.words, f"caption: {words.caption}", 6)
        record["figures"].append(save(figure, f"scene-{number}-caption.png"))

        question = next(
            q for q in scene.questions if q.type in ("color", "size")
        )  # a size question is always there
        answer = explain_answers(vqa, image, question.text, top=2, explainer=vqa_explainer)
        count(
            "vqa answers",
            peak_hit_shares(answer.explanation.maps[0, :1], scene_masks(scene, question.objects)).tolist(),
        )
        weights = answer.explanation.token_weights[0, 0]
        record["question"], record["answer"] = question.text, answer.answer
        record["question word weights"] = {
            token: round(weight, 3)
            for token, weight in zip(answer.tokens, weights.tolist())
            if token is not None
        }
        title = f"Q: {question.text}  A: {answer.answer}"
        figure = targets_figure(image, answer.explanation.maps[0], answer.explanation.labels[0], title)
        record["figures"].append(save(figure, f"scene-{number}-vqa.png"))
        records.append(record)
        name = f"scene {number}"
        views += [
            explanation_view("classify", name, image, classes, model=classifier.name),
            caption_view(name, image, words),
            vqa_view(name, image, answer),
        ]

    pointing = {kind: f"{hits[kind]:g} hits of {totals[kind]} maps" for kind in kinds}
    summary = {"pointing": pointing, "scenes": records}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    note_written(output, ["summary.json"])
    for kind, maps in summary["pointing"].items():
        print(f"{kind}: {maps} (a hit: the map's peak fell inside the named object)")
    print("a map whose peak is tied over several pixels scores the share of them inside: a partial hit")
    print(f"figures: {output.resolve()}/scene-*.png   summary: {output.resolve()}/summary.json")
    report = write_report(output / "report.html", views, "mmcam demo")
    note_written(output, [report])
    print(f"report: open {report.resolve()}")
    return 0
