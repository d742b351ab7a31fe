"""What explaining every word of a chat model's reply costs, against the plain forward over the same tokens.

A published architecture (``published.ARCHITECTURES``) with random weights and its language model cut to N
layers reads a prompt holding the image's real number of tokens and a reply of ``words`` tokens (one token
per word). Each depth runs in a fresh process (``multiprocessing`` spawn) that builds the model once; each
case's peak memory is, on a CPU, the process's peak resident memory over the case's timed run (Linux
``VmHWM``, reset to the memory resident then, the weights, after the case is warmed up, by writing 5 to
``/proc/self/clear_refs``), on CUDA ``max_memory_allocated`` (reset the same way).
The cases: the forward alone (no graph); mmcam's Grad-CAM of all words in one call at the family's default
layer (``max_targets_per_backward`` targets per batched backward); pytorch-grad-cam and captum's
``LayerGradCam``, one call per word, timed on ``peer_words`` words and scaled to all (every call does the
same work).

Ratios are explanation / forward, per depth. Memory and time are extrapolated to the full depth by a
least-squares line in the depth through the measured points: the assumption is that every language model
layer adds the same weights, activations and work, which holds for these decoder stacks of identical layers.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from mmcam.bench import synchronize
from mmcam.published import ARCHITECTURES, build

PROMPT_BEFORE, PROMPT_AFTER = 5, 10  # text tokens around the image's tokens ("USER: <image>\n... ASSISTANT:")


@dataclass(frozen=True)
class Case:
    """One measurement: ``tool`` ("forward", "mmcam", "pytorch-grad-cam" or "captum") on ``architecture``
    cut to ``depth`` layers, explaining ``words`` words (the first ``words`` of a ``reply``-token reply),
    ``chunk`` targets per batched backward (mmcam), at ``layer`` (``layer_name``)."""

    architecture: str
    depth: int | None
    tool: str
    words: int
    reply: int
    chunk: int
    device: str
    dtype: str
    repeats: int = 1
    layer: str = "default"


@dataclass(frozen=True)
class Measured:
    """A case's median seconds over its timed runs, its peak memory in MB, and the seconds of the plain forward
    timed in the same process: the mean of its medians just before and just after the case (``forwards``; the
    machine is shared: a time is read against forwards timed under the same load, on both sides of it)."""

    case: Case
    seconds: float
    peak_mb: float
    forward_seconds: float
    forwards: tuple[float, ...] = ()

    @property
    def in_forwards(self) -> float:
        """The case's time in forwards of its own process."""
        return self.seconds / self.forward_seconds


def chat_inputs(architecture: str, model, reply: int, seed: int = 0) -> tuple[object, dict, list[int]]:
    """The family (``adapters.chat.FAMILIES``), one sample's inputs (a random image, random text ids
    around its image token(s), then ``reply`` random reply ids) and the reply's positions."""
    from types import SimpleNamespace

    from mmcam.adapters.chat import FAMILIES

    generator = torch.Generator().manual_seed(seed)
    config = model.config
    vocabulary = config.get_text_config().vocab_size
    text = torch.randint(
        3, min(vocabulary, 32000), (PROMPT_BEFORE + PROMPT_AFTER + reply,), generator=generator
    )
    special = [v for k, v in vars(config).items() if k.endswith("token_id") and isinstance(v, int)]
    text[torch.isin(text, torch.tensor(special))] = min(set(range(3, 3 + len(special) + 1)) - set(special))
    if architecture == "qwen2-vl-7b":
        vision = config.vision_config
        images = SimpleNamespace(
            patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
        )
        family = FAMILIES[config.model_type].family(model, SimpleNamespace(image_processor=images))
        image = [config.image_token_id]  # one token, which the family expands into the image's
        pixels = torch.randn(1, 3, 448, 448, generator=generator)
    elif architecture == "smolvlm-2b":
        family = FAMILIES[config.model_type].family(model, SpelledTiles.of(config))
        image = [config.image_token_id]  # one token, which the family expands into the tiles'
        side = 4 * config.vision_config.image_size  # the processor's longest edge: 4 x 4 tiles
        pixels = torch.rand(1, 3, side, side, generator=generator)  # the tiled families read [0, 1]
    else:
        family = FAMILIES[config.model_type].family(model, None)
        side, patch = config.vision_config.image_size, config.vision_config.patch_size
        image = [config.image_token_id] * (side // patch) ** 2  # the patch tokens, without the CLS token
        pixels = torch.randn(1, 3, side, side, generator=generator)
    ids = torch.cat([text[:PROMPT_BEFORE], torch.tensor(image), text[PROMPT_BEFORE:]])[None]
    start = ids.shape[1] - reply
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
    return family, inputs, list(range(start, ids.shape[1]))


@dataclass(frozen=True)
class SpelledTiles:
    """What the Idefics3 family (``adapters.idefics3``) reads of SmolVLM's processor, built from the published
    config without its tokenizer: transformers' ``Idefics3ImageProcessor`` at the processor's tiling (the
    longest edge resized to 4 tiles, tiles of the vision tower's image size) and the image's tokens as ids
    (``replace_image_token``, which ``tokenizer`` passes through)."""

    image_processor: object
    image_token: int
    tile_tokens: int

    @classmethod
    def of(cls, config) -> SpelledTiles:
        """From an ``Idefics3Config``: a tile's tokens are its (side / patch)^2 patches merged
        ``scale_factor``^2 at a time by the pixel shuffle (SmolVLM: 27^2 / 9 = 81)."""
        from transformers import Idefics3ImageProcessor

        vision = config.vision_config
        tile = vision.image_size
        images = Idefics3ImageProcessor(
            size={"longest_edge": 4 * tile}, max_image_size={"longest_edge": tile}
        )
        tokens = (tile // vision.patch_size) ** 2 // config.scale_factor**2
        return cls(images, config.image_token_id, tokens)

    def replace_image_token(self, image_inputs: dict, index: int) -> list[int]:
        """Image ``index``'s tokens, as the processor spells them for ``rows`` x ``cols`` tiles: per tile
        (row-major) ``<fake_token_around_image>``, ``<row_r_col_c>`` and ``tile_tokens`` image tokens, a
        newline after each row; then a newline, ``<fake_token_around_image>``, ``<global-img>``, the global
        image's tokens and ``<fake_token_around_image>`` (0 x 0 tiles: the global image's part alone, without
        the newline). Every tag and newline is one token; all get one placeholder id, ``image_token`` - 1
        (the cost depends on how many there are, not on their ids)."""
        rows = [count for per_sample in image_inputs["rows"] for count in per_sample][index]
        columns = [count for per_sample in image_inputs["cols"] for count in per_sample][index]
        tag = self.image_token - 1
        tile = [tag, tag] + [self.image_token] * self.tile_tokens
        ids = [token for _ in range(rows) for token in tile * columns + [tag]]
        if rows or columns:
            ids.append(tag)
        return ids + tile + [tag]

    def tokenizer(self, ids: list[int], add_special_tokens: bool = False) -> dict:
        """``replace_image_token``'s ids as they are."""
        return {"input_ids": list(ids)}


def word_targets(inputs: dict, positions: Sequence[int]) -> list:
    """A ``TokenLogProb`` per reply token: log p(token | everything before it)."""
    from mmcam.targets import TokenLogProb

    return [TokenLogProb(inputs["input_ids"], [p], f"w{i}", i) for i, p in enumerate(positions)]


def layer_name(model, family, choice: str = "default") -> str:
    """The layer a case explains: ``default`` the family's default layer, ``last`` the last decoder layer's
    input norm (the top of the language model, read at the image's tokens), else ``choice`` itself."""
    from mmcam.adapters.chat_family import language_model_name

    if choice == "default":
        return family.layer
    if choice == "last":
        decoder = model.get_decoder()
        return f"{language_model_name(model)}.layers.{len(decoder.layers) - 1}.input_layernorm"
    return choice


def explainer(model, family, inputs: dict, start: int, chunk: int, layer: str = "default"):
    """mmcam's Grad-CAM at ``layer`` (``layer_name``), as the chat captioner builds it (logits from row
    ``start`` on: ``adapters.chat.reply_forward``)."""
    from mmcam import Explainer
    from mmcam.adapters.chat import reply_forward
    from mmcam.adapters.chat_family import layouts

    name = layer_name(model, family, layer)
    layout = layouts(family, model)(name)
    forward = partial(reply_forward, family, start)
    return Explainer(model, name, "gradcam", layout=layout(inputs), forward=forward, chunk_size=chunk)


def _peers(model, family, inputs: dict, positions: Sequence[int], tool: str, layer: str = "default"):
    """``tool``'s Grad-CAM at ``layer`` as ``f(k)``: one call explaining reply word k (its token's
    log-probability)."""
    from mmcam.adapters.chat import _forward
    from mmcam.adapters.chat_family import layouts
    from mmcam.bench import _FixedText, _output_score, _peer_token_gradcam

    ids = inputs["input_ids"]
    pixels = inputs["pixel_values"]
    forward = partial(_forward, family)
    name = layer_name(model, family, layer)
    if tool == "pytorch-grad-cam":
        captioner = SimpleCaptioner(model, name, forward, layouts(family, model)(name))
        cam = _peer_token_gradcam(captioner, inputs)["pytorch-grad-cam"]
        return lambda k: cam(
            pixels, {"pytorch-grad-cam": [_output_score((positions[k] - 1, int(ids[0, positions[k]])))]}
        )
    from captum.attr import LayerGradCam

    text = {key: value for key, value in inputs.items() if key != "pixel_values"}
    wrapped = _FixedText(model, forward, text, log_softmax=True).eval()
    cam = LayerGradCam(wrapped, model.get_submodule(name))
    return lambda k: cam.attribute(pixels, target=(positions[k] - 1, int(ids[0, positions[k]])))


@dataclass
class SimpleCaptioner:
    """What ``bench._peer_token_gradcam`` reads of a captioner."""

    model: object
    layer: str
    forward: object
    layout: object


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def run_cases(cases: Sequence[Case]) -> list[Measured]:
    """``cases`` (one architecture, depth, device and dtype) in this process, on one model built once: for each,
    time the plain forward over its tokens (after one warm-up), warm the case up on one word, reset the peak
    memory (on a CPU the high-water mark drops to the memory resident then: the weights), time the case, then
    the forward again.
    The peers come last: they unfreeze nothing but need the image to require gradients."""
    first = cases[0]
    device = torch.device(first.device)
    model = build(first.architecture, first.depth, getattr(torch, first.dtype)).to(device)
    order = sorted(range(len(cases)), key=lambda i: cases[i].tool not in ("forward", "mmcam"))
    measured: dict[int, Measured] = {}
    for index in order:
        try:
            measured[index] = _run(model, cases[index], device)
        except Exception as error:  # a peer that cannot run this model is reported, not fatal
            if cases[index].tool in ("forward", "mmcam"):
                raise
            print(
                f"mmcam bench: {cases[index].tool} failed on {first.architecture}: {error}", file=sys.stderr
            )
    return [measured[i] for i in range(len(cases)) if i in measured]


def _run(model, case: Case, device: torch.device) -> Measured:
    from mmcam.adapters.chat import _forward

    family, inputs, positions = chat_inputs(case.architecture, model, case.reply)
    inputs = {key: value.to(device) for key, value in inputs.items()}

    def forward(count: int) -> None:
        with torch.no_grad():
            _forward(family, model, inputs)

    if case.tool == "forward":
        work = forward
    elif case.tool == "mmcam":
        explain = explainer(model, family, inputs, positions[0] - 1, case.chunk, case.layer)
        targets = word_targets(inputs, positions[: case.words])

        def work(count: int) -> None:
            explain(inputs, targets[:count])

    else:
        model.requires_grad_(False)
        inputs["pixel_values"].requires_grad_(
            True
        )  # the peers' graph then starts at the image, not at the weights
        call = _peers(model, family, inputs, positions, case.tool, case.layer)

        def work(count: int) -> None:
            for k in range(count):
                call(k)

    before = _timed(forward, 1, case.repeats, device)
    work(1)
    synchronize(device)
    _reset_peak(device)
    seconds = _timed(work, case.words, case.repeats, device)
    peak = _peak_mb(device)
    after = _timed(forward, 1, case.repeats, device)
    return Measured(case, seconds, peak, (before + after) / 2, (before, after))


def _timed(work, count: int, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` runs of ``work(count)`` (the first warms up when ``work`` is the forward)."""
    if count == 1:
        work(1)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        work(count)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(cases: Sequence[Case]) -> list[Measured]:
    """``run_cases`` in a fresh process, so that its memory is its own and nothing of it stays."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_cases, list(cases)).result()


def ratio(part: float, whole: float) -> float:
    """``part / whole``, rounded to 2 decimals."""
    return round(part / whole, 2)


def linear_fit(depths: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line value = a + b depth (b = cov(d, v) / var(d)); one depth: a line
    through the origin's... refused: it takes two depths or more."""
    if len(set(depths)) < 2:
        raise ValueError("a line in the depth needs measurements at two depths or more")
    mean_d, mean_v = statistics.fmean(depths), statistics.fmean(values)
    slope = sum((d - mean_d) * (v - mean_v) for d, v in zip(depths, values)) / sum(
        (d - mean_d) ** 2 for d in depths
    )
    return mean_v - slope * mean_d, slope


def extrapolated(depths: Sequence[float], values: Sequence[float], depth: float) -> float:
    """The least-squares line through (depths, values) at ``depth`` (``linear_fit``)."""
    intercept, slope = linear_fit(depths, values)
    return intercept + slope * depth


@dataclass(frozen=True)
class Depth:
    """The cases of one depth: the forward, mmcam on all words, each peer's calls (scaled to all words)."""

    depth: int
    forward: Measured
    explain: Measured
    peers: dict[str, Measured]

    @property
    def memory_ratio(self) -> float:
        return ratio(self.explain.peak_mb, self.forward.peak_mb)

    @property
    def time_ratio(self) -> float:
        """mmcam's seconds over the forward's seconds timed in the same process."""
        return ratio(self.explain.seconds, self.explain.forward_seconds)

    def peer_seconds(self, tool: str) -> float:
        """A peer's seconds for all the words: its measured calls' time times words / calls."""
        measured = self.peers[tool]
        return measured.seconds * self.explain.case.words / measured.case.words

    def peer_ratio(self, tool: str) -> float:
        """How many times mmcam's time a peer's calls for all the words take, each read in forwards of its
        own process (the loads of the two processes cancel)."""
        measured = self.peers[tool]
        peer = measured.in_forwards * self.explain.case.words / measured.case.words
        return ratio(peer, self.explain.in_forwards)


def measure_depth(
    architecture: str,
    depth: int | None,
    device: str,
    dtype: str,
    words: int,
    chunk: int,
    peer_words: int,
    peers: Sequence[str],
    layer: str = "default",
) -> Depth:
    """The forward, mmcam and each of ``peers`` at ``layer`` (``layer_name``) on one depth (None: the full
    depth), in one fresh process."""
    case = partial(
        Case, architecture, depth, device=device, dtype=dtype, reply=words, chunk=chunk, layer=layer
    )
    forward, explain, *timed = measure(
        [case(tool="forward", words=words), case(tool="mmcam", words=words)]
        + [case(tool=tool, words=peer_words) for tool in peers]
    )
    timed = {m.case.tool: m for m in timed}
    return Depth(
        depth if depth is not None else ARCHITECTURES[architecture].full_depth, forward, explain, timed
    )


def full_depth_estimate(architecture: str, depths: Sequence[Depth]) -> dict[str, float]:
    """Forward and explanation peak memory (MB) and seconds at the full depth, each extrapolated by a
    least-squares line in the depth through the measured depths (``extrapolated``), and their ratios."""
    full = ARCHITECTURES[architecture].full_depth
    at = [d.depth for d in depths]
    estimate = {
        "forward_mb": extrapolated(at, [d.forward.peak_mb for d in depths], full),
        "explain_mb": extrapolated(at, [d.explain.peak_mb for d in depths], full),
        "forward_s": extrapolated(at, [d.forward.seconds for d in depths], full),
        "explain_s": extrapolated(at, [d.explain.seconds for d in depths], full),
    }
    estimate["memory_ratio"] = ratio(estimate["explain_mb"], estimate["forward_mb"])
    estimate["time_ratio"] = ratio(estimate["explain_s"], estimate["forward_s"])
    return estimate


def many_targets(
    architecture: str, depth: int, device: str, dtype: str, words: int, many: int, chunks: Sequence[int]
) -> list[Measured]:
    """mmcam on the first ``words`` and on all ``many`` words of a ``many``-token reply (the same tokens),
    at each number of targets per batched backward of ``chunks``: what bounds the memory of a long reply."""
    case = partial(Case, architecture, depth, "mmcam", device=device, dtype=dtype, reply=many)
    return measure([case(words=count, chunk=chunk) for chunk in chunks for count in (words, many)])
