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
        description="Draw shapes scenes and explain the bundled classifier's decision for every object in each "
        "scene (all objects of a scene in one pass). Writes figures and a summary; no download.",
    )
    parser.add_argument("--scenes", type=int, default=6, help="how many scenes (default 6)")
    parser.add_argument("--seed", type=int, default=20_000, help="scene seed (default 20000)")
    parser.add_argument("-o", "--output", default="mmcam-demo", metavar="DIR", help="default ./mmcam-demo")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.adapters.classification import load_classifier
    from mmcam.zoo import make_scenes

    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    classifier = load_classifier("shapes")
    explainer = classifier.explainer()
    scenes = make_scenes(arguments.scenes, seed=arguments.seed, n_objects=(2, 3))
    records, hits, total = [], 0, 0
    for number, scene in enumerate(tqdm(scenes, desc="demo", unit="scene")):
        image = Image.fromarray(scene.image)
        classes = explainer(classifier.preprocess([image]), [[obj.class_index for obj in scene.objects]])
        masks = torch.stack([torch.from_numpy(obj.mask) for obj in scene.objects])
        inside = peak_hits(classes.maps[0], masks).tolist()
        hits, total = hits + sum(inside), total + len(inside)
        titles = [f"{label}{'' if hit else ' (miss)'}" for label, hit in zip(classes.labels[0], inside)]
        figure_path = output / f"scene-{number}-classify.png"
        save_figure(targets_figure(image, classes.maps[0], titles, scene.caption.text), figure_path)
        records.append(
            {
                "scene": number,
                "caption": scene.caption.text,
                "figures": [str(figure_path)],
                "targets": [
                    {"label": label, "peak_inside_object": hit}
                    for label, hit in zip(classes.labels[0], inside)
                ],
            }
        )
    summary = {"pointing": {"classes": f"{hits}/{total}"}, "scenes": records}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"classes: the map's peak fell inside the named object for {hits}/{total}")
    print(f"figures: {output.resolve()}/scene-*.png   summary: {output.resolve()}/summary.json")
    return 0
