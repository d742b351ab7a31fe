"""Name a layer's channels by the visual concepts they detect (Network Dissection, arXiv 1704.05796).

Dense masks: each channel's activation, upsampled to the image, is thresholded at its top quantile
over a probe set (0.5% by default): M_c = [A_c > T_c]. Its agreement with concept k's masks L_k is
IoU_ck = sum_n |M_c ∩ L_k| / sum_n |M_c ∪ L_k|. With ``max_length`` > 1 the label is the logical form over
the concepts with the best IoU (``compose``: Mu and Andreas 2020), else the best single concept; the channel
is named when that IoU reaches 0.05, the paper's cut-off. Two passes over the probe set, batched on the
device: exact top quantiles from a running top-k per channel, then each channel's active pixels counted per
concept signature (``compose.SignatureCounter``), from which every formula's IoU follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmcam.concepts.compose import MAX_LENGTH, SignatureCounter, search
from mmcam.engine.capture import first_tensor
from mmcam.engine.layers import resolve_layer
from mmcam.engine.layouts import Layout, as_layout
from mmcam.engine.resize import upsample
from mmcam.engine.tiles import Tiles
from mmcam.subject import Forward, LayoutSpec

IOU_CUTOFF = 0.05

# Model inputs for B images (see layer_activations) and their concept masks (B, K, H, W) bool, or, for
# name_from_labels, their concept presence (B, K) bool.
Batch = tuple[Any, Tensor]


@dataclass(frozen=True)
class UnitName:
    """One channel's label: ``concept`` its best concept or formula over concepts ("red AND circle"),
    ``score`` its IoU (masks) or AUC (image-level labels); ``atom`` and ``atom_score`` the best single
    concept and its score (the same as ``concept`` without composition)."""

    unit: int
    concept: str | None
    score: float
    source: str
    atom: str | None = None
    atom_score: float = 0.0


@dataclass
class ConceptTable:
    """The names of one layer's channels, saved and reused by later calls."""

    model: str
    layer: str
    concepts: list[str]
    units: list[UnitName]

    def name(self, unit: int) -> UnitName:
        return self.units[unit]

    def save(self, path: str | Path) -> None:
        data = {**asdict(self), "units": [asdict(u) for u in self.units]}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ConceptTable:
        data = json.loads(Path(path).read_text())
        return cls(data["model"], data["layer"], data["concepts"], [UnitName(**u) for u in data["units"]])


def layer_rows(
    model: nn.Module, layer: str, inputs: Any, forward: Forward | None = None, layout: LayoutSpec = "auto"
) -> tuple[Tensor, Tiles | None]:
    """The layer's output as grids (N, C, h, w), one per row, without gradients, read as the explainer reads
    it, and the tiles of the images those rows are (``engine.tiles.Tiles``), None where the rows are the images.

    ``inputs`` is what ``forward(model, inputs)`` takes (default ``model(inputs)``): an image batch, or a
    dict holding ``pixel_values`` and the text inputs of a vision-language model. ``layout`` as the
    explainer's (``engine.layouts.as_layout``), or a function of ``inputs`` that gives it (a chat model's:
    its packed or selected tokens, or its tiles), raising where the layer cannot be read on the image.
    """
    spec = layout(inputs) if callable(layout) else layout
    reader = spec.token_reader() if isinstance(spec, Layout) else None
    captured = {}
    module = model.get_submodule(resolve_layer(model, layer))
    handle = module.register_forward_hook(
        lambda m, args, output: captured.setdefault("a", first_tensor(output))
    )
    try:
        with torch.no_grad():
            (forward or (lambda m, x: m(x)))(model, inputs)
    finally:
        handle.remove()
    if "a" not in captured:
        raise ValueError(f"layer '{layer}' did not run in the forward pass; pick one that does")
    images = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
    activation = captured["a"] if reader is None else reader.read(captured["a"], layer)
    grid = as_layout(spec, activation, tuple(images.shape[-2:]), layer).to_grid(activation).float()
    tiles = spec.tiles if isinstance(spec, Layout) else None
    if tiles is not None:
        tiles.check(len(grid), len(images), layer)
    return grid, tiles


def layer_activations(
    model: nn.Module,
    layer: str,
    inputs: Any,
    forward: Forward | None = None,
    layout: LayoutSpec = "auto",
    size: tuple[int, ...] | None = None,
) -> Tensor:
    """The layer's output as a (B, C, h, w) grid per image (``layer_rows``), upsampled to ``size`` if given.

    Where the layer's rows are tiles of the images, each image's grid is stitched from its tiles' as the
    explainer stitches maps (``Tiles.stitch``: A_b(p) = sum of the tiles of b over p), at ``size`` (default:
    the image's).
    """
    grid, tiles = layer_rows(model, layer, inputs, forward, layout)
    if tiles is None:
        return grid if size is None else upsample(grid, size)
    images = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
    image_size = tuple(images.shape[-2:])
    size = size or image_size
    scale = torch.tensor([size[0] / image_size[0], size[1] / image_size[1]] * 2)
    return Tiles(tiles.owners, tiles.boxes * scale).stitch(grid, len(images), size)


def dissect(
    model: nn.Module,
    layer: str,
    batches: Callable[[], Iterable[Batch]],
    concepts: Sequence[str],
    probe_size: int,
    quantile: float = 0.005,
    model_name: str = "",
    progress: bool = True,
    forward: Forward | None = None,
    max_length: int = MAX_LENGTH,
    layout: LayoutSpec = "auto",
) -> ConceptTable:
    """Name every channel of ``layer`` from a probe set with concept masks, by formulas of up to
    ``max_length`` concepts (1: Network Dissection's single concepts).

    ``batches()`` yields (images, masks) for ``probe_size`` images in all and is called twice
    (thresholds, then IoU), so the probe set need not fit in memory. The threshold T_c is exact: the
    running top-k per channel keeps k = quantile * probe_size * H * W values, the final top quantile.
    """
    model.eval()
    kept: Tensor | None = None
    for inputs, masks in tqdm(batches(), desc="dissect: thresholds", unit="batch", disable=not progress):
        up = layer_activations(model, layer, inputs, forward, layout, tuple(masks.shape[-2:]))
        values = up.transpose(0, 1).flatten(1)
        count = max(1, round(quantile * probe_size * masks.shape[-2] * masks.shape[-1]))
        pool = values if kept is None else torch.cat([kept, values], dim=1)
        kept = pool.topk(min(count, pool.shape[1]), dim=1).values
    thresholds = kept[:, -1]
    counter = SignatureCounter(len(thresholds), len(concepts))
    for inputs, masks in tqdm(batches(), desc="dissect: IoU", unit="batch", disable=not progress):
        up = layer_activations(model, layer, inputs, forward, layout, tuple(masks.shape[-2:]))
        active = (up > thresholds[None, :, None, None]).flatten(2)  # (B, C, HW)
        counter.add(active, masks.flatten(2).bool())
    formulas, scores, atoms, atom_scores = search(counter.active, counter.pixels, counter.truth(), max_length)
    units = [
        UnitName(
            c,
            formula.text(list(concepts)) if score >= IOU_CUTOFF else None,
            round(float(score), 4),
            "masks",
            concepts[atom] if atom_score >= IOU_CUTOFF else None,
            round(float(atom_score), 4),
        )
        for c, (formula, score, atom, atom_score) in enumerate(
            zip(formulas, scores.tolist(), atoms.tolist(), atom_scores.tolist())
        )
    ]
    return ConceptTable(model_name or type(model).__name__, layer, list(concepts), units)


def name_from_labels(
    model: nn.Module,
    layer: str,
    batches: Callable[[], Iterable[Batch]],
    concepts: Sequence[str],
    cutoff: float = 0.8,
    model_name: str = "",
    progress: bool = True,
    forward: Forward | None = None,
    layout: LayoutSpec = "auto",
) -> ConceptTable:
    """Name channels from image-level labels only (no masks), e.g. the nouns and adjectives of captions.

    ``batches()`` yields (model inputs, presence (B, K) bool). A channel's evidence for an image is its
    peak activation a_nc = max_ij A_cij; its score for concept k is the AUC of a_nc for telling
    images with k from images without, AUC_ck = P(a_c of an image with k > a_c of one without); the
    channel takes its best concept when the AUC reaches ``cutoff``.
    """
    model.eval()
    peaks, presence = [], []
    for inputs, labels in tqdm(batches(), desc="name from labels", unit="batch", disable=not progress):
        grid, tiles = layer_rows(model, layer, inputs, forward, layout)
        peak = grid.amax(dim=(-2, -1))
        if tiles is not None:  # an image's peak is its tiles' highest
            images = len(labels)
            peak = peak.new_full((images, peak.shape[1]), -torch.inf).index_reduce_(
                0, tiles.owners.to(peak.device), peak, "amax"
            )
        peaks.append(peak.cpu())
        presence.append(labels.bool().cpu())
    activation, present = torch.cat(peaks), torch.cat(presence)
    ranks = activation.argsort(dim=0).argsort(dim=0).double() + 1  # (N, C), ties broken arbitrarily
    positives = present.double().sum(dim=0)  # (K,)
    negatives = present.shape[0] - positives
    rank_sums = ranks.T @ present.double()  # (C, K)
    auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives).clamp_min(1)
    auc = torch.where((positives > 0) & (negatives > 0), auc, torch.zeros_like(auc))
    best, which = auc.max(dim=1)
    units = [
        UnitName(c, concepts[k] if score >= cutoff else None, round(float(score), 4), "labels", None, 0.0)
        for c, (score, k) in enumerate(zip(best.tolist(), which.tolist()))
    ]
    return ConceptTable(model_name or type(model).__name__, layer, list(concepts), units)
