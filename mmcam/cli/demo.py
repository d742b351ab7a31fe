"""``mmcam demo``: the bundled shapes world and models, explained, with no download."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from mmcam.metrics.pointing import peak_hits
from mmcam.viz.figures import save_figure, targets_figure


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="explain the bundled models on freshly drawn shapes scenes",
        description="Draw shapes scenes and explain the bundled models on each: the classifier's map for every "
        "object, the captioner's map for every word, and the VQA model's answer to a question. Writes figures "
        "and a summary; no download.",
    )
    parser.add_argument("--scenes", type=int, default=6, help="how many scenes (default 6)")
    parser.add_argument("--seed", type=int, default=20_000, help="scene seed (default 20000)")
    parser.add_argument("-o", "--output", default="mmcam-demo", metavar="DIR", help="default ./mmcam-demo")
    parser.set_defaults(run=run)


def _masks(scene, objects: list[int]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(scene.objects[i].mask) for i in objects])


def run(arguments: argparse.Namespace) -> int:
    from mmcam.adapters.captioning import explain_caption, load_captioner
    from mmcam.adapters.classification import load_classifier
    from mmcam.adapters.vqa import explain_answers, load_vqa
    from mmcam.zoo import make_scenes
    from mmcam.zoo.evaluate import WORD_CLASSES, phrase_objects

    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    classifier, captioner, vqa = load_classifier("shapes"), load_captioner("shapes"), load_vqa("shapes")
    class_explainer, caption_explainer = classifier.explainer(), captioner.explainer()
    scenes = make_scenes(arguments.scenes, seed=arguments.seed, n_objects=(2, 3))
    records, hits, totals = [], {"classes": 0, "caption words": 0}, {"classes": 0, "caption words": 0}
    for number, scene in enumerate(tqdm(scenes, desc="demo", unit="scene")):
        image = Image.fromarray(scene.image)
        record = {"scene": number, "true caption": scene.caption.text, "figures": []}

        classes = class_explainer(
            classifier.preprocess([image]), [[obj.class_index for obj in scene.objects]]
        )
        inside = peak_hits(classes.maps[0], _masks(scene, list(range(len(scene.objects))))).tolist()
        hits["classes"], totals["classes"] = hits["classes"] + sum(inside), totals["classes"] + len(inside)
        titles = [f"{label}{'' if hit else ' (miss)'}" for label, hit in zip(classes.labels[0], inside)]
        record["figures"].append(
            _save(
                targets_figure(image, classes.maps[0], titles, "classes"),
                output,
                f"scene-{number}-classify.png",
            )
        )

        words = explain_caption(captioner, image, explainer=caption_explainer)
        objects, phrase = phrase_objects(scene), -1
        for position, word in enumerate(words.words):
            phrase += word == "a"
            if WORD_CLASSES.get(word) in ("color", "shape") and 0 <= phrase < len(objects):
                hit = bool(
                    peak_hits(words.explanation.maps[0, position][None], _masks(scene, [objects[phrase]]))
                )
                hits["caption words"] += hit
                totals["caption words"] += 1
        record["caption"] = words.caption
        figure = targets_figure(image, words.explanation.maps[0], words.words, f"caption: {words.caption}", 6)
        record["figures"].append(_save(figure, output, f"scene-{number}-caption.png"))

        question = scene.questions[0]
        answer = explain_answers(vqa, image, question.text, top=2)
        weights = answer.explanation.token_weights[0, 0]
        said = " ".join(f"{t}({w:+.2f})" for t, w in zip(answer.tokens, weights.tolist()) if t is not None)
        record["question"], record["answer"], record["question word weights"] = (
            question.text,
            answer.answer,
            said,
        )
        figure = targets_figure(
            image,
            answer.explanation.maps[0],
            answer.explanation.labels[0],
            f"Q: {question.text}  A: {answer.answer}",
        )
        record["figures"].append(_save(figure, output, f"scene-{number}-vqa.png"))
        records.append(record)
    summary = {"pointing": {k: f"{hits[k]}/{totals[k]}" for k in hits}, "scenes": records}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    for kind, fraction in summary["pointing"].items():
        print(f"{kind}: the map's peak fell inside the named object for {fraction}")
    print(f"figures: {output.resolve()}/scene-*.png   summary: {output.resolve()}/summary.json")
    return 0


def _save(figure, output: Path, name: str) -> str:
    save_figure(figure, output / name)
    return str(output / name)
