"""Speed of mmcam against pytorch-grad-cam and captum on the same model and inputs, in one run.

Each suite is a list of cases: (case, tool, function). Timings are medians of ``repeats``
round-robin runs after one warm-up each. Peers explain K targets with K calls (their API has one
target per sample per call); mmcam does all K in one call. Every suite has a "forward only" case, the
model's plain inference cost, to read each tool's throughput against.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

import mmcam

Case = tuple[str, str, Callable[[], object]]


@dataclass
class Timing:
    suite: str
    case: str
    tool: str
    seconds: float
    images_per_second: float
    peak_memory_mb: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    suite: str, cases: list[Case], batch: int, device: torch.device, repeats: int, progress: bool = True
) -> list[Timing]:
    """Median seconds (and peak CUDA memory) of each case, timed round-robin after one warm-up each.

    Interleaving the cases spreads any drift of the machine's speed over all tools alike.
    """
    seconds: list[list[float]] = [[] for _ in cases]
    memory: list[float | None] = [None] * len(cases)
    for _, _, run in cases:
        run()
    _sync(device)
    for _ in tqdm(range(repeats), desc=f"{suite} rounds", unit="round", disable=not progress):
        for index, (_, _, run) in enumerate(cases):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            run()
            _sync(device)
            seconds[index].append(time.perf_counter() - start)
            if device.type == "cuda":
                memory[index] = torch.cuda.max_memory_allocated(device) / 2**20
    return [
        Timing(suite, case, tool, statistics.median(s), batch / statistics.median(s), m)
        for (case, tool, _), s, m in zip(cases, seconds, memory)
    ]


def _peer_gradcams(model: nn.Module, layer: nn.Module) -> dict[str, Callable]:
    """Each installed peer's Grad-CAM as ``f(images, targets) -> maps``, targets as that peer takes them."""
    peers = {}
    try:
        from pytorch_grad_cam import GradCAM

        cam = GradCAM(model=model, target_layers=[layer])
        peers["pytorch-grad-cam"] = lambda x, targets: cam(x, targets=targets["pytorch-grad-cam"])
    except ImportError:
        pass
    try:
        from captum.attr import LayerGradCam

        captum_cam = LayerGradCam(model, layer)
        peers["captum"] = lambda x, targets: captum_cam.attribute(
            x, target=targets["captum"], relu_attributions=True
        )
    except ImportError:
        pass
    return peers


def classification_cases(
    device: torch.device, batch: int = 4, targets: int = 16, size: int = 224
) -> list[Case]:
    """resnet50 (random weights, seed 0) at layer4: forward only, then 1 and ``targets`` classes per image."""
    import torchvision
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    classes = torch.randint(0, 1000, (batch, targets)).tolist()
    explainer = mmcam.Explainer(model, layer="layer4")
    peers = _peer_gradcams(model, model.layer4)

    def peer_targets(k: int) -> dict:
        column = [row[k] for row in classes]
        return {"pytorch-grad-cam": [ClassifierOutputTarget(c) for c in column], "captum": column}

    def forward_only() -> None:
        with torch.no_grad():
            model(images)

    cases: list[Case] = [("forward only", "torch", forward_only)]
    cases.append(("1 target/image", "mmcam", lambda: explainer(images, [row[0] for row in classes])))
    cases += [
        ("1 target/image", name, lambda p=peer: p(images, peer_targets(0))) for name, peer in peers.items()
    ]
    cases.append((f"{targets} targets/image", "mmcam", lambda: explainer(images, classes)))
    cases += [
        (
            f"{targets} targets/image",
            name,
            lambda p=peer: [p(images, peer_targets(k)) for k in range(targets)],
        )
        for name, peer in peers.items()
    ]
    return cases


def ratio_table(timings: list[Timing]) -> list[dict]:
    """Each timing with mmcam's speed-up over it (same suite and case) and its share of the suite's
    forward-only throughput."""
    forward = {t.suite: t for t in timings if t.tool == "torch"}
    ours = {(t.suite, t.case): t for t in timings if t.tool == "mmcam"}
    rows = []
    for t in timings:
        row = asdict(t)
        reference = ours.get((t.suite, t.case))
        row["mmcam_speedup"] = round(t.seconds / reference.seconds, 2) if reference else None
        row["share_of_forward_throughput"] = round(
            t.images_per_second / forward[t.suite].images_per_second, 3
        )
        rows.append(row)
    return rows
