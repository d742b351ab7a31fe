"""``mmcam bench``: mmcam's speed against pytorch-grad-cam and captum, side by side."""

from __future__ import annotations

import argparse
import json
import platform

import torch

from mmcam.bench import ratio_table, run_classification_bench


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="time mmcam against pytorch-grad-cam and captum",
        description="Grad-CAM on resnet50 (random weights), layer4: 1 and K targets per image, in one run, "
        "with speed-ups of mmcam over each peer.",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--batch", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--targets", type=int, default=16, help="targets per image in the multi-target case")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is kept")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    timings = run_classification_bench(
        arguments.device, arguments.batch, arguments.targets, arguments.repeats, arguments.size
    )
    rows = ratio_table(timings)
    if arguments.json:
        print(
            json.dumps(
                {
                    "device": arguments.device,
                    "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "rows": rows,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"resnet50, batch {arguments.batch}, {arguments.size}px, device {arguments.device}, "
        f"{torch.get_num_threads()} threads; median of {arguments.repeats}"
    )
    print(f"{'case':<20}{'tool':<18}{'seconds':>9}{'images/s':>10}{'mmcam x':>9}{'of fwd':>8}{'peak MB':>9}")
    for row in rows:
        speedup = f"{row['mmcam_speedup']:.2f}" if row["mmcam_speedup"] is not None else "-"
        memory = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "-"
        print(
            f"{row['case']:<20}{row['tool']:<18}{row['seconds']:>9.3f}{row['images_per_second']:>10.2f}"
            f"{speedup:>9}{row['share_of_forward_throughput']:>8.2f}{memory:>9}"
        )
    return 0
