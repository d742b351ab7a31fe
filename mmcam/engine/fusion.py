"""Maps of one input from several layers, fused into one (torch-cam's ``fuse_cams`` and ``RefineCAM``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from mmcam.engine.resize import normalize, upsample
from mmcam.explanation import Explanation

FUSIONS = ("maximum", "product")


def fuse_layers(
    explanations: Sequence[Explanation], gamma: float | None = None, rule: str = "maximum"
) -> Explanation:
    """Multi-layer fusion, each layer's raw map upsampled to the finest grid among them (bilinear, U):

    maximum (torch-cam's ``fuse_cams``): L = max_l s(U(L_l)), s = tanh(gamma .) as LayerCAM scales its
      maps (Jiang et al., IEEE TIP 2021, eq. 9, gamma = 2), or the identity without ``gamma``;
    product (RefineCAM, torch-cam's ``RefineCAM``): L = prod_l U(n(L_l)), n the min-max scaling of each
      layer's map, so that a region survives only where every layer finds it.

    The explanations are of the same inputs and targets (one call per layer); the first one's scores,
    labels and kinds are kept, its channel weights dropped (they belong to one layer).
    """
    if not explanations:
        raise ValueError("fuse at least one explanation")
    if rule not in FUSIONS:
        raise ValueError(f"unknown fusion rule '{rule}'; choose one of: {', '.join(FUSIONS)}")
    first = explanations[0]
    spatial = first.maps.ndim - 2
    grids = [tuple(e.raw.shape[-spatial:]) for e in explanations]
    finest = tuple(max(sizes) for sizes in zip(*grids))
    if rule == "product":
        fused = torch.stack([upsample(normalize(e.raw, spatial), finest) for e in explanations]).prod(dim=0)
    else:
        layers = [upsample(e.raw, finest) for e in explanations]
        if gamma is not None:
            layers = [torch.tanh(gamma * layer) for layer in layers]
        fused = torch.stack(layers).amax(dim=0)
    size = tuple(first.maps.shape[-spatial:])
    return replace(
        first,
        maps=normalize(upsample(fused, size), spatial),
        raw=fused,
        layer=" + ".join(e.layer for e in explanations),
        method=f"{first.method}, fused ({rule})",
        weights=None,
    )


def fused_explainer(
    explainers: Sequence[Callable[..., Explanation]], gamma: float | None = None, rule: str = "maximum"
) -> Callable:
    """One explainer per layer -> a callable ``(inputs, targets) -> Explanation`` that explains with each
    (one forward and backward per layer) and fuses their maps (``fuse_layers``)."""

    def explain(inputs, targets) -> Explanation:
        return fuse_layers([explainer(inputs, targets) for explainer in explainers], gamma, rule)

    return explain
