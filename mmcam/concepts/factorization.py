"""Deep Feature Factorization (Collins et al., arXiv 1806.10206): the concepts a layer finds in a batch of
images, and where each one is, without any target.

The layer's activations over every cell of every image, each channel shifted by its minimum so all are
non-negative, A (B h w, C) - m ≈ W (B h w, n) H (n, C) by non-negative matrix factorization. Concept j's
map on image b is column j of W over b's cells, on the layer's grid and upsampled to the image; its
embedding is H_j + m, a point in the layer's channel space that a classifier head can name (as
pytorch-grad-cam's ``DeepFeatureFactorization`` with ``computation_on_concepts``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmcam.concepts.dissect import layer_activations
from mmcam.engine.devices import on_model_device
from mmcam.engine.layers import resolve_layer
from mmcam.engine.layouts import Layout
from mmcam.engine.resize import normalize, upsample
from mmcam.engine.state import explanation_mode
from mmcam.subject import Forward

EPSILON = torch.finfo(torch.float32).eps  # what a zero denominator becomes, as in scikit-learn


def nmf(
    x: Tensor,
    components: int,
    iterations: int = 200,
    seed: int = 0,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Non-negative matrix factorization X (m, C) ≈ W (m, n) H (n, C), W, H >= 0, minimizing ||X - W H||_F^2
    by Lee & Seung's multiplicative updates, W then H at each of ``iterations`` steps:

      W <- W * (X H^T) / (W H H^T);   H <- H * (W^T X) / (W^T W H)   (a zero denominator becomes EPSILON)

    From ``start`` (W, H), or from entries |N(0, 1)| sqrt(mean X / n) drawn with ``seed`` (scikit-learn's
    ``init="random"`` scale). scikit-learn's ``NMF(solver="mu", init="custom", tol=0)`` runs the same steps.
    """
    if x.ndim != 2 or not x.is_floating_point() or bool((x < 0).any()):
        raise ValueError(f"NMF factorizes a non-negative float matrix (m, C); got {x.dtype} {tuple(x.shape)}")
    if start is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        scale = (x.mean() / components).sqrt()
        w, h = (
            scale * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype).abs()
            for shape in ((x.shape[0], components), (components, x.shape[1]))
        )
    else:
        w, h = (part.to(x).clone() for part in start)
    for _ in range(iterations):
        w = w * (x @ h.T) / _nonzero(w @ (h @ h.T))
        h = h * (w.T @ x) / _nonzero((w.T @ w) @ h)
    return w, h


def _nonzero(denominator: Tensor) -> Tensor:
    return torch.where(denominator == 0, EPSILON, denominator)


@dataclass
class Factorization:
    """n concepts of one layer over B images.

    maps:     (B, n, H, W) in [0, 1]: each concept's presence over each image, upsampled and min-max scaled
              per image and concept.
    raw:      (B, n, h, w) the factor W on the layer's grid.
    concepts: (n, C) the concept embeddings H_j + m in the layer's channel space.
    error:    the relative reconstruction error ||(A - m) - W H||_F / ||A - m||_F.
    layer:    the factorized layer's name.
    labels:   with a classifier, per concept its ``top`` classes, best first; probabilities (n, top) their
              softmax probabilities over all classes. Empty and None without one.
    """

    maps: Tensor
    raw: Tensor
    concepts: Tensor
    error: float
    layer: str
    labels: list[list[str]] = field(default_factory=list)
    probabilities: Tensor | None = None


def factorize(
    model: nn.Module,
    images: Tensor,
    layer: nn.Module | str,
    concepts: int = 5,
    classifier: Callable[[Tensor], Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    top: int = 2,
    iterations: int = 200,
    seed: int = 0,
    forward: Forward | None = None,
    layout: str | Layout = "auto",
) -> Factorization:
    """Deep Feature Factorization of ``layer`` over a batch of ``images`` (B, C, H, W) into ``concepts``
    concepts (see the module's docstring), NMF by ``nmf`` with ``iterations`` and ``seed``.

    ``classifier`` maps (n, C) embeddings to (n, classes) logits (a CNN's final linear layer, such as
    resnet's ``fc``); each concept is then labeled by its ``top`` classes, named from ``class_names``.
    ``forward(model, images)`` runs the model (default ``model(images)``); ``layout`` reads the layer's
    output as the explainer's does. The images go to the model's device (the results stay there); the
    model runs in eval mode without gradients and comes back as it went in.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"factorize takes a float image batch (B, C, H, W); got {getattr(images, 'shape', images)}"
        )
    if concepts < 1:
        raise ValueError(f"concepts must be at least 1, got {concepts}")
    name = resolve_layer(model, layer)
    images = on_model_device(images, model)
    with explanation_mode(model):
        grid = layer_activations(model, name, images, forward, layout)  # (B, C, h, w)
        batch, channels, h, w = grid.shape
        cells = grid.nan_to_num().movedim(1, -1).reshape(-1, channels)  # (B h w, C)
        minima = cells.amin(dim=0)
        shifted = cells - minima
        weights, embeddings = nmf(shifted, concepts, iterations, seed)
        error = float((shifted - weights @ embeddings).norm() / shifted.norm().clamp_min(EPSILON))
        raw = weights.reshape(batch, h, w, concepts).permute(0, 3, 1, 2)
        result = Factorization(
            maps=normalize(upsample(raw, tuple(images.shape[-2:]))),
            raw=raw,
            concepts=embeddings + minima,
            error=error,
            layer=name,
        )
        if classifier is not None:
            with torch.no_grad():
                logits = classifier(result.concepts)
            probabilities, classes = torch.softmax(logits.float(), dim=-1).topk(min(top, logits.shape[-1]))
            result.probabilities = probabilities
            result.labels = [[_class_name(c, class_names) for c in row] for row in classes.tolist()]
    return result


def _class_name(index: int, names: Sequence[str] | None) -> str:
    return str(names[index]) if names is not None and index < len(names) else f"class {index}"
