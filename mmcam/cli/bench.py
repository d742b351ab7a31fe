"""``mmcam bench``: mmcam's speed against pytorch-grad-cam and captum, side by side."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

from mmcam.cli.choices import SUITES

FOLDER = "folder"  # the suite that times the classify command on a folder (here, as it runs the command)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="time mmcam against pytorch-grad-cam and captum",
        description="classify: Grad-CAM on resnet50 (random weights) at layer4, 1 and K targets per image. "
        "caption: the bundled captioner on a 12-word caption: one word, all words in one call, a call per word. "
        "vqa: the bundled VQA model: one answer, every answer in one call, a call per answer. "
        "methods: the methods taken from pytorch-grad-cam (gradcam-elementwise, eigengradcam, fem, "
        "kpcacam, ablationcam, shapleycam, fullgrad, the eigen_smooth and aug_smooth options) and torch-cam "
        "(iscam, sscam, with 1 copy per mask), and occlusion (8 px windows, zero fill) against captum's Occlusion, "
        "on resnet18 at 64 px, 2 images, 1 and --targets classes, against those peers. "
        "chat: a chat model (--model DIR, a local checkpoint) on a 30-word reply: one word, all words in one "
        "call, a call per word, and pytorch-grad-cam through a wrapper, a call per word; on CUDA the MB column "
        "is the peak memory of each case. "
        "chat --config NAME (llava-1.5-7b, qwen2-vl-7b, smolvlm-2b): the published architecture with random weights and its "
        "language model cut to --depth layers; every word of a reply explained in one call against the plain "
        "forward over the same tokens (peak memory and time, as ratios, each case in a fresh process), "
        "pytorch-grad-cam's and captum's call per word, and a --many-token reply. "
        "folder: images per second over a folder of 500 JPEGs (resnet18, random weights): mmcam classify "
        "with and without figures, a loop over pytorch-grad-cam, and the model's forward alone. "
        "Prints mmcam's speed-up over each peer, measured in the same run.",
    )
    parser.add_argument(
        "--task", choices=[*SUITES, FOLDER, "all"], default="all", help="which suite (default all)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--batch", type=int, default=4, help="classify and folder: images per batch (default 4)"
    )
    parser.add_argument(
        "--targets", type=int, default=16, help="classify and methods: targets per image (default 16)"
    )
    parser.add_argument("--size", type=int, default=224, help="classify: image side in pixels (default 224)")
    parser.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="chat: the chat model's checkpoint directory (required for chat)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="chat: instead of --model, the cost of explaining every word of a reply against the plain forward "
        "on a published architecture with random weights (llava-1.5-7b, qwen2-vl-7b, smolvlm-2b), by depth",
    )
    parser.add_argument(
        "--depth",
        nargs="+",
        default=["2", "4", "8"],
        help="chat --config: language model layers, or full (default 2 4 8)",
    )
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="chat --config (default bfloat16)",
    )
    parser.add_argument(
        "--words", type=int, default=30, help="chat --config: reply tokens explained (default 30)"
    )
    parser.add_argument(
        "--peer-words",
        type=int,
        default=2,
        help="chat --config: words the peers are timed on, scaled to --words (0: the peers are not run)",
    )
    parser.add_argument(
        "--many", type=int, default=300, help="chat --config: a reply this long, at the first depth (0: none)"
    )
    parser.add_argument(
        "--max-targets-per-backward",
        type=int,
        default=None,
        help="chat --config: targets per batched backward",
    )
    parser.add_argument(
        "--layer",
        default="default",
        help="chat --config: the layer explained: default (the family's), last (the last decoder layer's "
        "input norm, at the top of the language model), or a module name (default: default)",
    )
    parser.add_argument("--images", type=int, default=500, help="folder: images in the folder (default 500)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is kept (default 5)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run)


def scene_folder(count: int = 500, seed: int = 40_000, parent: Path | None = None) -> Path:
    """A new temporary folder (in ``parent``, default the system's) of ``count`` JPEG shapes scenes (256 px,
    quality 90)."""
    import tempfile

    from PIL import Image

    from mmcam.zoo import make_scenes

    folder = Path(tempfile.mkdtemp(prefix="mmcam-bench-folder-", dir=parent))
    for i, scene in enumerate(make_scenes(count, seed)):
        Image.fromarray(scene.image).resize((256, 256)).save(folder / f"scene-{i:04d}.jpg", quality=90)
    return folder


def _classify_folder(folder: Path, device, batch: int, workers: int | None, *options: str) -> None:
    """``mmcam classify`` on ``folder`` (resnet18, random weights, top class, JSON; ``workers`` worker
    processes, None: the command's default), its output discarded."""
    import contextlib
    import io
    import tempfile

    from mmcam.cli import main

    command = ["classify", str(folder), "--model", "torchvision:resnet18:random", "--top", "1", "--json"]
    command += ["--batch-size", str(batch), "--device", str(device)]
    command += [] if workers is None else ["--workers", str(workers)]
    quiet = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()))
    with tempfile.TemporaryDirectory() as output, quiet[0], quiet[1]:
        main([*command, *options, "-o", output])


def folder_cases(device, folder: Path, batch: int = 8, workers: int | None = None):
    """The JPEGs of ``folder`` classified by resnet18 (random weights) at 224 px, top class, whole: the
    model's forward alone at ``batch`` images per pass on the decoded tensors; ``mmcam classify`` on the
    folder (decoding, batches of ``batch``, ``workers`` worker processes, None: as many as the command
    chooses) with the JSON and ``--save-maps`` only and with its figures and report; a loop over
    pytorch-grad-cam (its argmax target, at layer4, one image per call, maps only)."""
    from functools import partial

    import torch

    from mmcam.images import image_paths, load_image
    from mmcam.loading import load_classifier

    torch.manual_seed(0)
    classifier = load_classifier("torchvision:resnet18:random")
    model = classifier.model.to(device)
    paths = image_paths([str(folder)])
    pixels = torch.cat([classifier.preprocess([load_image(path)]) for path in paths]).to(device)

    def forward_only() -> None:
        with torch.no_grad():
            for start in range(0, len(paths), batch):
                model(pixels[start : start + batch])

    run_mmcam = partial(_classify_folder, folder, device, batch, workers)
    cases = [
        ("folder", "torch", forward_only),
        ("folder, no figures", "mmcam", partial(run_mmcam, "--no-figures", "--save-maps")),
        ("folder, figures", "mmcam", run_mmcam),
    ]
    try:
        from pytorch_grad_cam import GradCAM

        cam = GradCAM(model=model, target_layers=[model.layer4])

        def peer_loop() -> None:
            for path in paths:
                cam(classifier.preprocess([load_image(path)]).to(device), targets=None)

        cases.append(("folder, no figures", "pytorch-grad-cam", peer_loop))
    except ImportError:
        pass
    return cases


OUTSIDE = "outside the stages"  # the folder breakdown's last row: model loading, the output folder, records


def folder_stages(device, folder: Path, batch: int = 8) -> dict[str, tuple[float, float]]:
    """(seconds, CPU seconds of all threads) per stage (``mmcam.cli.stages.STAGES``) of ``mmcam classify``
    with figures on ``folder``, run once in this process (no workers, so every stage is timed here and none
    overlaps another), and ``OUTSIDE``: the rest of the run (loading the model, checking the output folder,
    printing the records), so that the rows add up to the whole run."""
    import time

    from mmcam.cli.stages import CPU_SECONDS, SECONDS, STAGES

    _classify_folder(folder, device, batch, 0)  # warm-up
    SECONDS.clear()
    CPU_SECONDS.clear()
    start, cpu = time.perf_counter(), time.process_time()
    _classify_folder(folder, device, batch, 0)
    whole, whole_cpu = time.perf_counter() - start, time.process_time() - cpu
    stages = {name: (round(SECONDS[name], 4), round(CPU_SECONDS[name], 4)) for name in STAGES}
    outside = (
        whole - sum(SECONDS[name] for name in STAGES),
        whole_cpu - sum(CPU_SECONDS[name] for name in STAGES),
    )
    return {**stages, OUTSIDE: (round(outside[0], 4), round(outside[1], 4))}


def run(arguments: argparse.Namespace) -> int:
    import torch

    from mmcam.bench import (
        caption_cases,
        chat_cases,
        classification_cases,
        measure,
        methods_cases,
        missing_peers,
        ratio_table,
        vqa_cases,
    )
    from mmcam.engine.devices import chosen_device

    device = chosen_device(arguments.device)
    if arguments.config is not None:
        from mmcam.cli import chat_cost

        chunk = arguments.max_targets_per_backward or chat_cost.MAX_TARGETS_PER_BACKWARD
        return chat_cost.run(
            arguments.config,
            chat_cost.depths_of(arguments.depth),
            device.type,
            arguments.dtype,
            arguments.words,
            chunk,
            arguments.peer_words,
            arguments.many,
            arguments.layer,
        )
    for tool in missing_peers():
        print(
            f'mmcam: {tool} is not installed, its cases are skipped (pip install -e ".[dev]")',
            file=sys.stderr,
        )
    suites = [*SUITES, FOLDER] if arguments.task == "all" else [arguments.task]
    if "chat" in suites and arguments.model is None:
        if arguments.task == "chat":
            raise ValueError("the chat suite needs a chat model: --model DIR")
        print("mmcam: no --model, the chat suite is skipped", file=sys.stderr)
        suites.remove("chat")
    timings = []
    if "classify" in suites:
        cases = classification_cases(device, arguments.batch, arguments.targets, arguments.size)
        timings += measure("classify", cases, arguments.batch, device, arguments.repeats)
    for suite, cases_of in (("caption", caption_cases), ("vqa", vqa_cases)):
        if suite in suites:
            timings += measure(suite, cases_of(device), 1, device, arguments.repeats)
    if "methods" in suites:
        cases = methods_cases(device, targets=arguments.targets)
        timings += measure("methods", cases, 2, device, arguments.repeats)
    if "chat" in suites:
        timings += measure("chat", chat_cases(device, arguments.model), 1, device, arguments.repeats)
    stages = None
    if FOLDER in suites:
        folder = scene_folder(arguments.images)
        try:
            cases = folder_cases(device, folder, arguments.batch)
            timings += measure("folder", cases, arguments.images, device, arguments.repeats)
            stages = folder_stages(device, folder, arguments.batch)
        finally:
            shutil.rmtree(folder)
    rows = ratio_table(timings)
    header = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "repeats": arguments.repeats,
    }
    if arguments.json:
        print(json.dumps({**header, "rows": rows, **({"folder_stages": stages} if stages else {})}, indent=2))
        return 0
    print(", ".join(f"{k} {v}" for k, v in header.items()) + "; times are medians")
    case_width = max(20, *(len(row["case"]) + 2 for row in rows))
    tool_width = max(32, *(len(row["tool"]) + 2 for row in rows))
    print(
        f"{'suite':<10}{'case':<{case_width}}{'tool':<{tool_width}}{'seconds':>9}{'img/s':>9}{'mmcam x':>9}"
        f"{'of fwd':>8}{'MB':>7}{'CPU s':>9}"
    )
    for row in rows:
        speedup = f"{row['mmcam_speedup']:.2f}" if row["mmcam_speedup"] is not None else "-"
        memory = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "-"
        cpu = f"{row['cpu_seconds']:.3f}" if row["cpu_seconds"] is not None else "-"
        print(
            f"{row['suite']:<10}{row['case']:<{case_width}}{row['tool']:<{tool_width}}{row['seconds']:>9.4f}"
            f"{row['images_per_second']:>9.2f}{speedup:>9}{row['share_of_forward_throughput']:>8.3f}{memory:>7}"
            f"{cpu:>9}"
        )
    if stages:
        total = sum(seconds for seconds, _ in stages.values())
        cpu = sum(seconds for _, seconds in stages.values())
        print(f"\nfolder, figures, one process without workers: {total:.2f} s, {cpu:.2f} CPU s, by stage")
        print(f"  {'stage':<22}{'seconds':>9}{'share':>8}{'CPU s':>9}  (CPU s / s: cores kept busy)")
        for name, (seconds, busy) in stages.items():
            print(f"  {name:<22}{seconds:>9.2f}{seconds / total:>8.1%}{busy:>9.2f}")
    return 0
