"""Speed of mmcam against pytorch-grad-cam and captum on the same model and batch, in one run.

Timings are medians of ``repeats`` round-robin runs after one warm-up each; each peer explains the same classes
with its own Grad-CAM at the same layer. Peers explain K targets per image with K calls (their
API has one target per sample per call); mmcam does all K in one call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import mmcam


@dataclass
class Timing:
    case: str
    tool: str
    seconds: float
    images_per_second: float
    peak_memory_mb: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure_rounds(
    runs: list[Callable[[], object]], device: torch.device, repeats: int, progress: bool
) -> list[tuple[float, float | None]]:
    """Median seconds and peak CUDA memory of each run, timed round-robin after one warm-up each.

    Interleaving the runs spreads any drift of the machine's speed over all tools alike.
    """
    seconds: list[list[float]] = [[] for _ in runs]
    memory: list[float | None] = [None] * len(runs)
    for run in runs:
        run()
    _sync(device)
    for _ in tqdm(range(repeats), desc="benchmark rounds", unit="round", disable=not progress):
        for index, run in enumerate(runs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            run()
            _sync(device)
            seconds[index].append(time.perf_counter() - start)
            if device.type == "cuda":
                memory[index] = torch.cuda.max_memory_allocated(device) / 2**20
    return [(statistics.median(s), m) for s, m in zip(seconds, memory)]


def _peers(model: torch.nn.Module, layer: torch.nn.Module) -> dict[str, Callable]:
    """Each installed peer as ``f(images, classes_per_sample) -> maps``, one call per target."""
    peers = {}
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[layer])
        peers["pytorch-grad-cam"] = lambda x, classes: cam(
            x, targets=[ClassifierOutputTarget(c) for c in classes]
        )
    except ImportError:
        pass
    try:
        from captum.attr import LayerGradCam

        captum_cam = LayerGradCam(model, layer)
        peers["captum"] = lambda x, classes: captum_cam.attribute(x, target=classes, relu_attributions=True)
    except ImportError:
        pass
    return peers


def run_classification_bench(
    device: str = "cpu",
    batch: int = 4,
    targets: int = 16,
    repeats: int = 3,
    size: int = 224,
    progress: bool = True,
) -> list[Timing]:
    """resnet50 (random weights, seed 0), layer4: forward only, then 1 and ``targets`` classes per image."""
    import torchvision

    device = torch.device(device)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    classes = torch.randint(0, 1000, (batch, targets)).tolist()
    explainer = mmcam.Explainer(model, layer="layer4")
    peers = _peers(model, model.layer4)

    def forward_only() -> None:
        with torch.no_grad():
            model(images)

    cases: list[tuple[str, str, Callable]] = [("forward only", "torch", forward_only)]
    cases.append(("1 target/image", "mmcam", lambda: explainer(images, [row[0] for row in classes])))
    for name, peer in peers.items():
        cases.append(("1 target/image", name, lambda peer=peer: peer(images, [row[0] for row in classes])))
    cases.append((f"{targets} targets/image", "mmcam", lambda: explainer(images, classes)))
    for name, peer in peers.items():
        cases.append(
            (
                f"{targets} targets/image",
                name,
                lambda peer=peer: [peer(images, [row[k] for row in classes]) for k in range(targets)],
            )
        )
    measured = _measure_rounds([run for _, _, run in cases], device, repeats, progress)
    return [
        Timing(case, tool, seconds, batch / seconds, memory)
        for (case, tool, _), (seconds, memory) in zip(cases, measured)
    ]


def ratio_table(timings: list[Timing]) -> list[dict]:
    """Each timing with its speed-up of mmcam over it (same case) and its share of forward-only throughput."""
    forward = next(t for t in timings if t.tool == "torch")
    ours = {t.case: t for t in timings if t.tool == "mmcam"}
    rows = []
    for t in timings:
        row = asdict(t)
        row["mmcam_speedup"] = round(t.seconds / ours[t.case].seconds, 2) if t.case in ours else None
        row["share_of_forward_throughput"] = round(t.images_per_second / forward.images_per_second, 3)
        rows.append(row)
    return rows
