"""Speed of mmcam against pytorch-grad-cam, captum and torch-cam on the same model and inputs, in one run.

Each suite is a list of cases: (case, tool, function). Timings are medians of ``repeats``
round-robin runs after one warm-up each. Peers explain K targets with K calls (their API has one
target per sample per call); mmcam does all K in one call. Every suite has a "forward only" case, the
model's plain inference cost, to read each tool's throughput against.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import mmcam
from mmcam.engine.methods import METHODS
from mmcam.targets import TailLogits

Case = tuple[str, str, Callable[[], object]]


@dataclass
class Timing:
    suite: str
    case: str
    tool: str
    seconds: float
    images_per_second: float
    peak_memory_mb: float | None
    cpu_seconds: float | None = None  # of this process's threads and of the worker processes it ended


def process_cpu_seconds() -> float:
    """CPU seconds so far of this process (all its threads) and of its child processes that have ended
    (a command's worker processes, once it has joined them)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads finished work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    suite: str, cases: list[Case], batch: int, device: torch.device, repeats: int, progress: bool = True
) -> list[Timing]:
    """Median seconds (and peak CUDA memory, and the median CPU seconds of this process and its worker
    processes) of each case, timed round-robin after one warm-up each.

    Interleaving the cases spreads any drift of the machine's speed over all tools alike. CPU seconds over
    seconds is how many cores a case kept busy, on average; on a loaded machine its CPU seconds move less
    than its seconds do.
    """
    seconds: list[list[float]] = [[] for _ in cases]
    cpu: list[list[float]] = [[] for _ in cases]
    memory: list[float | None] = [None] * len(cases)
    for _, _, run in cases:
        run()
    synchronize(device)
    for _ in tqdm(range(repeats), desc=f"{suite} rounds", unit="round", disable=not progress):
        for index, (_, _, run) in enumerate(cases):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start, busy = time.perf_counter(), process_cpu_seconds()
            run()
            synchronize(device)
            seconds[index].append(time.perf_counter() - start)
            cpu[index].append(process_cpu_seconds() - busy)
            if device.type == "cuda":
                memory[index] = torch.cuda.max_memory_allocated(device) / 2**20
    return [
        Timing(suite, case, tool, statistics.median(s), batch / statistics.median(s), m, statistics.median(c))
        for (case, tool, _), s, m, c in zip(cases, seconds, memory, cpu)
    ]


PEERS = {
    "pytorch-grad-cam": "pytorch_grad_cam",
    "captum": "captum",
    "torch-cam": "torchcam",
}  # tool -> module it is imported as


def missing_peers() -> list[str]:
    """The peers that are not installed (``pip install -e ".[dev]"`` installs them): their cases are skipped."""
    return [tool for tool, module in PEERS.items() if importlib.util.find_spec(module) is None]


def _output_score(index: int) -> Callable:
    """pytorch-grad-cam's target for one output row: the score at ``index`` (a class, or a (position,
    token) pair of a captioner's log-probabilities)."""
    return lambda output: output[index]


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
    """resnet50 (random weights, seed 0) at layer4: forward only, then 1 and ``targets`` classes per image;
    for 1 class also the functional ``mmcam.explain`` with the auto layer (found once, then cached)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    classes = torch.randint(0, 1000, (batch, targets)).tolist()
    explainer = mmcam.Explainer(model, layer="layer4")
    peers = _peer_gradcams(model, model.layer4)

    def peer_targets(k: int) -> dict:
        column = [row[k] for row in classes]
        return {"pytorch-grad-cam": [_output_score(c) for c in column], "captum": column}

    def forward_only() -> None:
        with torch.no_grad():
            model(images)

    cases: list[Case] = [("forward only", "torch", forward_only)]
    cases.append(("1 target/image", "mmcam", lambda: explainer(images, [row[0] for row in classes])))
    cases.append(  # the README's first call: the layer found once per model and input shape, then cached
        (
            "1 target/image",
            "mmcam.explain, auto layer",
            lambda: mmcam.explain(model, images, [row[0] for row in classes]),
        )
    )
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


class _FixedText(nn.Module):
    """A vision-language model with its text inputs fixed: ``pixels -> outputs``, the single-input form
    the peers' APIs take. ``log_softmax`` turns a captioner's logits into per-position log-probabilities."""

    def __init__(self, model: nn.Module, forward, text: dict[str, torch.Tensor], log_softmax: bool):
        super().__init__()
        self.model, self.forward_fn, self.text, self.log_softmax = model, forward, text, log_softmax

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        text = {k: v.expand(len(pixel_values), *v.shape[1:]) for k, v in self.text.items()}
        output = self.forward_fn(self.model, {"pixel_values": pixel_values, **text})
        output = output.padded() if isinstance(output, TailLogits) else output  # the peers read absolute rows
        return output.log_softmax(-1) if self.log_softmax else output


def _all_targets_cases(
    name: str, explain: Callable, targets: list, peers: dict[str, Callable], peer_targets: Callable, pixels
) -> list[Case]:
    """One target, all targets in one call, one call per target (mmcam), and one call per target (peers)."""
    count = len(targets)
    cases: list[Case] = [(f"1 {name}", "mmcam", lambda: explain(targets[:1]))]
    cases += [(f"1 {name}", tool, lambda p=peer: p(pixels, peer_targets(0))) for tool, peer in peers.items()]
    cases.append((f"all {count} {name}s", "mmcam", lambda: explain(targets)))
    cases.append(
        (f"all {count} {name}s", f"mmcam, a call per {name}", lambda: [explain([t]) for t in targets])
    )
    cases += [
        (
            f"all {count} {name}s",
            f"{tool}, a call per {name}",
            lambda p=peer: [p(pixels, peer_targets(k)) for k in range(count)],
        )
        for tool, peer in peers.items()
    ]
    return cases


def caption_cases(device: torch.device, words: int = 12, seed: int = 40_000) -> list[Case]:
    """The bundled captioner on a scene whose true caption has ``words`` words: forward only, one word,
    all words in one call, and one call per word (mmcam and each peer)."""
    from PIL import Image

    from mmcam.adapters.captioning import word_targets
    from mmcam.loading import load_captioner
    from mmcam.zoo import make_scenes

    captioner = load_captioner("shapes")
    captioner.model.to(device)
    scene = next(s for s in make_scenes(200, seed=seed, n_objects=2) if len(s.caption.words) == words)
    tokenized = captioner.tokenize(scene.caption.text)
    ids = torch.tensor([tokenized.ids], device=device)
    pixels = captioner.preprocess([Image.fromarray(scene.image)]).to(device)
    inputs = {"pixel_values": pixels, "input_ids": ids}
    explainer = captioner.explainer(method="gradcam")  # the peers' method: the same work is timed
    wrapped = _FixedText(captioner.model, captioner.forward, {"input_ids": ids}, log_softmax=True).eval()
    peers = _peer_gradcams(wrapped, captioner.model.get_submodule(captioner.layer))
    positions = [group[0] for group in tokenized.positions]  # the shapes tokenizer has one token per word

    def peer_targets(k: int) -> dict:
        position, token = positions[k], tokenized.ids[positions[k]]
        return {
            "pytorch-grad-cam": [_output_score((position - 1, token))],
            "captum": [(position - 1, token)],
        }

    def forward_only() -> None:
        with torch.no_grad():
            captioner.forward(captioner.model, inputs)

    return [("forward only", "torch", forward_only)] + _all_targets_cases(
        "word", partial(explainer, inputs), word_targets(tokenized), peers, peer_targets, pixels
    )


def vqa_cases(device: torch.device, seed: int = 40_000) -> list[Case]:
    """The bundled VQA model on one scene and question: forward only, the predicted answer, every answer
    of the vocabulary in one call, and one call per answer (mmcam and each peer)."""
    from PIL import Image

    from mmcam.loading import load_vqa
    from mmcam.targets import ClassScore
    from mmcam.zoo import make_scenes

    vqa = load_vqa("shapes")
    vqa.model.to(device)
    scene = make_scenes(1, seed=seed, n_objects=3)[0]
    inputs = {
        k: v.to(device)
        for k, v in vqa.prepare([Image.fromarray(scene.image)], [scene.questions[0].text]).items()
    }
    pixels = inputs["pixel_values"]
    explainer = vqa.explainer()
    text = {k: v for k, v in inputs.items() if k != "pixel_values"}
    wrapped = _FixedText(vqa.model, vqa.forward, text, log_softmax=False).eval()
    peers = _peer_gradcams(wrapped, vqa.model.get_submodule(vqa.layer))
    answers = list(range(len(vqa.answers)))

    def peer_targets(k: int) -> dict:
        return {"pytorch-grad-cam": [_output_score(answers[k])], "captum": [answers[k]]}

    def forward_only() -> None:
        with torch.no_grad():
            vqa.forward(vqa.model, inputs)

    targets = [ClassScore(a) for a in answers]
    return [("forward only", "torch", forward_only)] + _all_targets_cases(
        "answer", partial(explainer, inputs), targets, peers, peer_targets, pixels
    )


def chat_cases(device: torch.device, model: str, words: int = 30, seed: int = 40_000) -> list[Case]:
    """A chat model (``model``: a local checkpoint directory) explaining a ``words``-word reply about a shapes
    scene, with Grad-CAM at its default layer: forward only over prompt and reply, one word, all words in one
    call, one call per word (mmcam), and pytorch-grad-cam driven through a wrapper (the prompt and the reply
    fixed, the layer's tokens reshaped to their grid), one call per word."""
    from PIL import Image

    from mmcam.adapters.captioning import word_targets
    from mmcam.loading import load_captioner
    from mmcam.zoo import make_scenes

    captioner = load_captioner(model)
    captioner.model.to(device)
    scenes = make_scenes(8, seed=seed)
    reply = " ".join(" ".join(scene.caption.text for scene in scenes).split()[:words])
    tokenized = captioner.tokenize(reply)
    ids = torch.tensor([tokenized.ids], device=device)
    pixels = captioner.preprocess([Image.fromarray(scenes[0].image)]).to(device)
    inputs = {"pixel_values": pixels, "input_ids": ids}
    explainer = captioner.explainer(method="gradcam")  # the peer's method: the same work is timed
    targets = word_targets(tokenized)

    def forward_only() -> None:
        with torch.no_grad():
            captioner.forward(captioner.model, inputs)

    ends = [group[-1] for group in tokenized.positions]  # a word's last token: the peer's one target per word

    def peer_targets(k: int) -> dict:
        return {"pytorch-grad-cam": [_output_score((ends[k] - 1, tokenized.ids[ends[k]]))]}

    return [("forward only", "torch", forward_only)] + _all_targets_cases(
        "word",
        partial(explainer, inputs),
        targets,
        _peer_token_gradcam(captioner, inputs),
        peer_targets,
        pixels,
    )


def _peer_token_gradcam(captioner, inputs: dict[str, torch.Tensor]) -> dict[str, Callable]:
    """pytorch-grad-cam on a chat captioner's layer, as ``f(images, targets)``: the model wrapped with its text
    inputs fixed, the layer's tokens reshaped to their grid as mmcam reads them (the image's tokens picked
    from a language model's sequence), none if it is not installed."""
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        return {}
    from mmcam.engine.capture import LayerCapture
    from mmcam.engine.layouts import as_layout

    pixels = inputs["pixel_values"]
    with LayerCapture(captioner.model, [captioner.layer]) as capture:
        captioner.forward(captioner.model, inputs)
    layout = as_layout(
        captioner.layout(inputs), capture.activations[captioner.layer], tuple(pixels.shape[2:])
    )
    reader = layout.token_reader()  # the image's tokens of a language model's sequence, or of a packed tower

    def grid(output: torch.Tensor) -> torch.Tensor:
        tokens = output if reader is None else reader.read(output, captioner.layer)
        return layout.to_grid(tokens).float()  # the peer reads them in NumPy, which has no bfloat16

    text = {"input_ids": inputs["input_ids"]}
    wrapped = _FixedText(captioner.model, captioner.forward, text, log_softmax=True).eval()
    layer = captioner.model.get_submodule(captioner.layer)
    cam = GradCAM(model=wrapped, target_layers=[layer], reshape_transform=grid)
    return {"pytorch-grad-cam": lambda x, targets: cam(x, targets=targets["pytorch-grad-cam"])}


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


@dataclass(frozen=True)
class PeerMethod:
    """A method mmcam took from a peer: mmcam's ``method`` with Explainer ``options`` (pytorch-grad-cam takes
    the same flags in its call), timed against ``peer``'s class ``name``; ``arguments``: the method's own
    (the Score-CAM variants' copies of each mask, occlusion's window and fill), the same in both tools."""

    method: str
    peer: str
    name: str
    options: tuple[tuple[str, bool], ...] = ()
    arguments: tuple[tuple[str, Any], ...] = ()


OCCLUDED = 8  # occlusion's window and stride in the methods suite, in pixels: an 8 x 8 grid at 64 px

# Case label -> the method and its peer. IS-CAM and SS-CAM run 1 copy of each mask here, not their 10 and
# 35: at 512 channels their defaults make one call a minute and more on a CPU, for both tools alike.
PEER_METHODS = {
    "gradcam-elementwise": PeerMethod("gradcam-elementwise", "pytorch-grad-cam", "GradCAMElementWise"),
    "eigengradcam": PeerMethod("eigengradcam", "pytorch-grad-cam", "EigenGradCAM"),
    "fem": PeerMethod("fem", "pytorch-grad-cam", "FEM"),
    "kpcacam": PeerMethod("kpcacam", "pytorch-grad-cam", "KPCA_CAM"),
    "ablationcam": PeerMethod("ablationcam", "pytorch-grad-cam", "AblationCAM"),
    "gradcam, eigen_smooth": PeerMethod("gradcam", "pytorch-grad-cam", "GradCAM", (("eigen_smooth", True),)),
    "gradcam, aug_smooth": PeerMethod("gradcam", "pytorch-grad-cam", "GradCAM", (("aug_smooth", True),)),
    "iscam, 1 sample": PeerMethod("iscam", "torch-cam", "ISCAM", arguments=(("samples", 1),)),
    "sscam, 1 sample": PeerMethod("sscam", "torch-cam", "SSCAM", arguments=(("samples", 1),)),
    "shapleycam": PeerMethod("shapleycam", "pytorch-grad-cam", "ShapleyCAM"),
    "fullgrad": PeerMethod("fullgrad", "pytorch-grad-cam", "FullGrad"),
    "occlusion, 8 px windows": PeerMethod(
        "occlusion",
        "captum",
        "Occlusion",
        arguments=(("cell", OCCLUDED), ("fill", "zero"), ("batch_size", 64)),
    ),
}


def methods_cases(
    device: torch.device,
    batch: int = 2,
    targets: int = 16,
    size: int = 64,
    labels: Sequence[str] = tuple(PEER_METHODS),
) -> list[Case]:
    """The ``PEER_METHODS`` of ``labels`` on resnet18 (random weights, seed 0) at layer4: 1 and ``targets`` classes per
    image, mmcam in one call, each peer with a call per class (its CAM object built and released around
    each call, so its hooks do not run during the other tools' passes)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    classes = torch.randint(0, 1000, (batch, targets)).tolist()
    first = [row[0] for row in classes]

    def forward_only() -> None:
        with torch.no_grad():
            model(images)

    def pytorch_grad_cam_call(peer: PeerMethod, column: list[int]):
        import pytorch_grad_cam

        # pytorch-grad-cam's FullGrad takes every bias layer itself and warns when given a layer
        layers = [] if peer.name == "FullGrad" else [model.layer4]
        cam = getattr(pytorch_grad_cam, peer.name)(model=model, target_layers=layers)
        try:
            return cam(images, targets=[_output_score(c) for c in column], **dict(peer.options))
        finally:
            cam.activations_and_grads.release()

    def torch_cam_call(peer: PeerMethod, column: list[int]):
        import torchcam.methods

        cam = getattr(torchcam.methods, peer.name)
        samples = dict(peer.arguments)["samples"]
        with cam(model, "layer4", num_samples=samples, input_shape=(3, size, size)) as extractor:
            return extractor(class_idx=column, scores=model(images), normalized=False)[0].detach()

    def captum_call(peer: PeerMethod, column: list[int]):
        from captum.attr import Occlusion

        window = (3, OCCLUDED, OCCLUDED)  # a window over all channels, as mmcam's
        return Occlusion(model).attribute(
            images,
            sliding_window_shapes=window,
            strides=window,
            baselines=0,
            target=column,
            perturbations_per_eval=32,
        )

    calls = {"pytorch-grad-cam": pytorch_grad_cam_call, "torch-cam": torch_cam_call, "captum": captum_call}
    missing = missing_peers()
    cases: list[Case] = [("forward only", "torch", forward_only)]
    for label in labels:
        peer = PEER_METHODS[label]
        method = METHODS[peer.method](**dict(peer.arguments)) if peer.arguments else peer.method
        explainer = mmcam.Explainer(model, layer="layer4", method=method, **dict(peer.options))
        one, every = f"{label}, 1 target", f"{label}, {targets} targets"
        cases.append((one, "mmcam", lambda e=explainer: e(images, first)))
        cases.append((every, "mmcam", lambda e=explainer: e(images, classes)))
        if peer.peer not in missing:
            call = partial(calls[peer.peer], peer)
            cases.append((one, peer.peer, lambda c=call: c(first)))
            cases.append(
                (
                    every,
                    f"{peer.peer}, a call per target",
                    lambda c=call: [c([row[k] for row in classes]) for k in range(targets)],
                )
            )
    return cases


SUITES = {
    "classify": classification_cases,
    "caption": caption_cases,
    "vqa": vqa_cases,
    "methods": methods_cases,
    "chat": chat_cases,
}
