"""``mmcam demo``: the bundled shapes world and models, explained, with no download."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from mmcam.adapters.classification import load_classifier
from mmcam.viz.figures import save_figure, targets_figure
from mmcam.zoo import make_scenes


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="explain the bundled models on freshly drawn shapes scenes",
        description="Draw shapes scenes, explain the bundled classifier's decision for every object in each "
        "scene (one pass per scene), and write figures and a summary.",
    )
    parser.add_argument("--scenes", type=int, default=6, help="how many scenes (default 6)")
    parser.add_argument("--seed", type=int, default=20_000, help="scene seed (default 20000)")
    parser.add_argument("-o", "--output", default="mmcam-demo", metavar="DIR", help="default ./mmcam-demo")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    classifier = load_classifier("shapes")
    scenes = make_scenes(arguments.scenes, seed=arguments.seed, n_objects=(2, 3))
    summary = []
    hits = total = 0
    for number, scene in enumerate(tqdm(scenes, desc="demo", unit="scene")):
        image = Image.fromarray(scene.image)
        classes = [[obj.class_index for obj in scene.objects]]
        explanation = classifier.explainer()(classifier.preprocess([image]), classes)
        peaks = explanation.peaks()[0].tolist()
        inside = [bool(obj.mask[y, x]) for obj, (x, y) in zip(scene.objects, peaks)]
        hits, total = hits + sum(inside), total + len(inside)
        probabilities = torch.sigmoid(explanation.scores[0]).tolist()
        titles = [
            f"{label} p={p:.2f}{'' if hit else ' (miss)'}"
            for label, p, hit in zip(explanation.labels[0], probabilities, inside)
        ]
        figure_path = output / f"scene-{number}-classify.png"
        save_figure(targets_figure(image, explanation.maps[0], titles, scene.caption.text), figure_path)
        summary.append(
            {
                "scene": number,
                "caption": scene.caption.text,
                "figure": str(figure_path),
                "targets": [
                    {"label": label, "peak": peak, "peak_inside_object": hit}
                    for label, peak, hit in zip(explanation.labels[0], peaks, inside)
                ],
            }
        )
    (output / "summary.json").write_text(
        json.dumps({"pointing_hits": hits, "targets": total, "scenes": summary}, indent=2)
    )
    print(
        f"explained {total} objects in {len(scenes)} scenes; the map's peak fell inside the named object "
        f"for {hits}/{total}"
    )
    print(f"figures: {output.resolve()}/scene-*-classify.png   summary: {output.resolve()}/summary.json")
    return 0
