"""``mmcam bench``: mmcam's speed against pytorch-grad-cam and captum, side by side."""

from __future__ import annotations

import argparse
import json
import platform
import sys

from mmcam.cli.choices import SUITES


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="time mmcam against pytorch-grad-cam and captum",
        description="classify: Grad-CAM on resnet50 (random weights) at layer4, 1 and K targets per image. "
        "caption: the bundled captioner on a 12-word caption: one word, all words in one call, a call per word. "
        "vqa: the bundled VQA model: one answer, every answer in one call, a call per answer. "
        "folder: images per second over a folder of 500 JPEGs (resnet18, random weights): mmcam classify "
        "with and without figures, a loop over pytorch-grad-cam, and the model's forward alone. "
        "Prints mmcam's speed-up over each peer, measured in the same run.",
    )
    parser.add_argument("--task", choices=[*SUITES, "all"], default="all", help="which suite (default all)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--batch", type=int, default=4, help="classify and folder: images per batch (default 4)"
    )
    parser.add_argument("--targets", type=int, default=16, help="classify: targets per image (default 16)")
    parser.add_argument("--size", type=int, default=224, help="classify: image side in pixels (default 224)")
    parser.add_argument("--images", type=int, default=500, help="folder: images in the folder (default 500)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is kept (default 5)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    import torch

    from mmcam.bench import (
        caption_cases,
        classification_cases,
        folder_cases,
        measure,
        missing_peers,
        ratio_table,
        vqa_cases,
    )
    from mmcam.engine.devices import chosen_device

    device = chosen_device(arguments.device)
    for tool in missing_peers():
        print(
            f'mmcam bench: {tool} is not installed, its cases are skipped (pip install -e ".[dev]")',
            file=sys.stderr,
        )
    suites = list(SUITES) if arguments.task == "all" else [arguments.task]
    timings = []
    if "classify" in suites:
        cases = classification_cases(device, arguments.batch, arguments.targets, arguments.size)
        timings += measure("classify", cases, arguments.batch, device, arguments.repeats)
    for suite, cases_of in (("caption", caption_cases), ("vqa", vqa_cases)):
        if suite in suites:
            timings += measure(suite, cases_of(device), 1, device, arguments.repeats)
    if "folder" in suites:
        cases = folder_cases(device, arguments.images, arguments.batch)
        timings += measure("folder", cases, arguments.images, device, min(arguments.repeats, 2))
    rows = ratio_table(timings)
    header = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "repeats": arguments.repeats,
    }
    if arguments.json:
        print(json.dumps({**header, "rows": rows}, indent=2))
        return 0
    print(", ".join(f"{k} {v}" for k, v in header.items()) + "; times are medians")
    print(
        f"{'suite':<10}{'case':<20}{'tool':<32}{'seconds':>9}{'img/s':>9}{'mmcam x':>9}{'of fwd':>8}{'MB':>7}"
    )
    for row in rows:
        speedup = f"{row['mmcam_speedup']:.2f}" if row["mmcam_speedup"] is not None else "-"
        memory = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "-"
        print(
            f"{row['suite']:<10}{row['case']:<20}{row['tool']:<32}{row['seconds']:>9.4f}"
            f"{row['images_per_second']:>9.2f}{speedup:>9}{row['share_of_forward_throughput']:>8.3f}{memory:>7}"
        )
    return 0
