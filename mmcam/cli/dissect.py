"""``mmcam dissect``: name a layer's units by the concepts they detect, and cache the table."""

from __future__ import annotations

import argparse
import json
from collections import Counter

TASKS = ("classify", "caption", "vqa")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dissect",
        help="name a layer's units by the concepts they detect (Network Dissection)",
        description="With concept masks (the shapes world by default, or --dataset with per-object masks): "
        "threshold each unit's upsampled activation at its top 0.5%% over the probe images and name it after "
        "the formula over the concepts (up to 3, joined by AND, OR, AND NOT: 'red AND circle') whose masks it "
        "overlaps best (IoU >= 0.05; a longer formula only where it adds 0.02 IoU). With captions only (--dataset with a "
        "'caption' column): name it after the noun or adjective whose presence its peak activation predicts "
        "best (AUC >= 0.8). The table is cached and reused by --concepts of classify, caption and vqa.",
    )
    parser.add_argument(
        "--task", choices=TASKS, default="classify", help="which kind of model (default classify)"
    )
    parser.add_argument(
        "--model", default="shapes", metavar="SPEC", help="a model SPEC, as for that task's command"
    )
    parser.add_argument(
        "--layer", default=None, metavar="L", help="layer to dissect; default: the model's default"
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="a datasets.Dataset folder (save_to_disk) to probe with: 'image' plus 'masks' and per-object "
        "concept columns, or 'caption' (default: shapes-world scenes)",
    )
    parser.add_argument("--probes", type=int, default=200, help="shapes scenes to probe with (default 200)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(run=run)


def _subject(task: str, spec: str, layer: str | None):
    if task == "classify":
        from mmcam.loading import load_classifier

        return load_classifier(spec).subject(layer)
    if task == "caption":
        from mmcam.loading import load_captioner

        return load_captioner(spec).subject(layer)
    from mmcam.loading import load_vqa

    return load_vqa(spec).subject(layer)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.concepts.probes import dataset_probe, shapes_probe
    from mmcam.concepts.tables import concept_table, table_path

    if arguments.probes < 1:
        raise ValueError("--probes must be at least 1")
    subject = _subject(arguments.task, arguments.model, arguments.layer)
    if subject.layer == "auto":
        raise ValueError("name the layer to dissect with --layer")
    if arguments.dataset:
        import datasets

        probe = dataset_probe(datasets.load_from_disk(arguments.dataset), arguments.dataset)
    else:
        probe = shapes_probe(arguments.probes)
    table = concept_table(subject, probe, rebuild=True)
    path = table_path(table.model, table.layer, probe.name)
    if arguments.json:
        units = [vars(u) for u in table.units]
        print(json.dumps({"model": table.model, "layer": table.layer, "path": str(path), "units": units}))
        return 0
    named = [u for u in table.units if u.concept]
    cutoff = "IoU >= 0.05" if probe.kind == "masks" else "AUC >= 0.8"
    print(
        f"{len(named)}/{len(table.units)} units of {table.layer} named ({cutoff}, {probe.size} probe images)"
    )
    for concept, count in Counter(u.concept for u in named).most_common():
        print(f"  {concept:<10} {count:3d} units")
    print(f"table: {path}")
    return 0
