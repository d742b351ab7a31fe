"""``mmcam dissect``: name a layer's units by the concepts they detect, and cache the table."""

from __future__ import annotations

import argparse
import json
from collections import Counter


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dissect",
        help="name a classifier layer's units by the concepts they detect (Network Dissection)",
        description="Threshold each unit's upsampled activation at its top 0.5%% over shapes-world probe scenes "
        "and name it after the concept (5 colors, 4 shapes, 2 sizes) whose masks it overlaps best (IoU >= 0.05). "
        "The table is cached and reused by --concepts.",
    )
    parser.add_argument(
        "--model", default="shapes", metavar="SPEC", help="a classifier SPEC, as for classify"
    )
    parser.add_argument(
        "--layer", default=None, metavar="L", help="layer to dissect; default: the model's default"
    )
    parser.add_argument("--probes", type=int, default=200, help="probe scenes (default 200)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from mmcam.adapters.classification import load_classifier
    from mmcam.text.tables import shapes_table, table_path

    classifier = load_classifier(arguments.model)
    layer = arguments.layer or classifier.layer
    if layer == "auto":
        raise ValueError("name the layer to dissect with --layer")
    table = shapes_table(
        classifier.name, classifier.model, layer, classifier.preprocess, arguments.probes, rebuild=True
    )
    if arguments.json:
        print(
            json.dumps(
                {
                    "model": table.model,
                    "layer": table.layer,
                    "path": str(table_path(table.model, layer)),
                    "units": [vars(u) for u in table.units],
                }
            )
        )
        return 0
    named = [u for u in table.units if u.concept]
    print(f"{len(named)}/{len(table.units)} units of {layer} named (IoU >= 0.05)")
    for concept, count in Counter(u.concept for u in named).most_common():
        print(f"  {concept:<10} {count:3d} units")
    print(f"table: {table_path(table.model, layer)}")
    return 0
