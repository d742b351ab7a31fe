"""Find the layer to explain: by module, by dotted name, or automatically (found once per model and input shape)."""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from mmcam.engine.capture import first_tensor, graph_start, replace_first
from mmcam.engine.layouts import infer_layout, layout_readings

logger = logging.getLogger("mmcam")
_auto_layers: WeakKeyDictionary[nn.Module, dict[tuple, str]] = WeakKeyDictionary()
_auto_lock = threading.Lock()
MIN_GRID_SIDE = 7  # cells on the short side of the last stage of the standard ImageNet CNNs at 224 px


def resolve_layer(model: nn.Module, spec: nn.Module | str) -> str:
    """Return the dotted name of ``spec`` inside ``model``.

    ``spec`` is a submodule, or a dotted name whose parts may be negative indices into
    sequential containers (``"vit.layers.-1.layernorm_before"``). The model itself is refused: its
    output is what the targets read, not a feature map whose cells can be weighed.
    """
    if not isinstance(spec, (nn.Module, str)):
        raise TypeError(
            f"layer= takes a submodule of the model, its dotted name (such as 'layer4' or 'blocks.-1.norm1') "
            f"or 'auto'; got {type(spec).__name__} {spec!r}"
        )
    if spec is model or spec == "":
        raise ValueError(
            f"layer= is the model itself ({type(model).__name__}): its output is what the targets read, not a "
            "spatial feature map; pass one of its submodules (the last block before pooling) or 'auto'"
        )
    names = {module: name for name, module in model.named_modules()}
    if isinstance(spec, nn.Module):
        if spec not in names:
            raise ValueError(f"the layer {type(spec).__name__} is not a submodule of {type(model).__name__}")
        return names[spec]
    module = model
    for part in spec.split("."):
        children = dict(module.named_children())
        if part.lstrip("-").isdigit() and part not in children and len(children) > 0:
            index = int(part)
            keys = list(children)
            if -len(keys) <= index < len(keys):
                part = keys[index]
        if part not in children:
            raise ValueError(_unknown_layer_message(model, spec))
        module = children[part]
    return names[module]


def _unknown_layer_message(model: nn.Module, spec: str) -> str:
    valid = [name for name, _ in model.named_modules() if name]
    closest = difflib.get_close_matches(spec, valid, n=5, cutoff=0.4)
    hint = ", ".join(closest) if closest else ", ".join(valid[-5:])
    return f"no layer named '{spec}' in {type(model).__name__}; closest valid names: {hint}"


def _grid_like(tensor: Tensor | None, image_size: tuple[int, ...]) -> bool:
    return tensor is not None and tensor.is_floating_point() and bool(layout_readings(tensor, image_size))


def find_spatial_layer(model: nn.Module, run: Callable[[], Tensor], image_size: tuple[int, ...]) -> str:
    """The last layer, in execution order, whose output is a fine enough spatial grid the target depends on.

    One probe forward records every module output that reads as a grid (NCHW, NHWC, video or
    tokens with a patch grid) of at least two cells; ``run`` returns the target scores. Parameters
    stay frozen: each grid output is made a start of the graph (``graph_start``, as ``LayerCapture``
    does), so the probe's graph holds no weights and computes no weight gradients, and a layer counts
    only if what follows it uses its output. A layer counts only if its gradient is non-zero on at
    least two grid cells, so a ViT's final norm (whose gradient reaches only the class token) is
    passed over for the last block that still mixes patch tokens. Modules that run more than once
    per forward are skipped, and so are the modules of a downsampling block that still work on its input
    grid (the first convolutions of a bottleneck, a stage's downsampling layer): the choice ends a stage.

    Among those, the last whose grid has at least ``MIN_GRID_SIDE`` (7) cells on its short side
    wins; the last of all when none has. At the standard 224 px input this is the last stage of a
    CNN (7x7); on smaller inputs it is the last stage whose map can still tell objects apart: on a
    resnet18 trained on 128 px shapes scenes, the last stage (4x4) pointed 0.34 and ``layer3``
    (8x8) 0.75 (docs/families.md, "Maps on trained standard architectures").
    """
    outputs: dict[str, Tensor] = {}
    input_grids: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    thread = threading.get_ident()

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            if threading.get_ident() != thread:
                return None
            calls[name] = calls.get(name, 0) + 1
            given = first_tensor(args)
            if _grid_like(given, image_size):
                input_grids[name] = _grid_shape(given, image_size)
            tensor = first_tensor(output)
            if not _grid_like(tensor, image_size):
                return None
            start = graph_start(tensor)
            outputs[name] = start
            return replace_first(output, start.clone())

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        scores = run()
    finally:
        for handle in handles:
            handle.remove()
    grids = {name: _grid_shape(tensor, image_size) for name, tensor in outputs.items()}
    candidates = [
        (name, tensor)
        for name, tensor in outputs.items()
        if calls[name] == 1 and not _inside_a_downsampling(name, grids, input_grids)
    ]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial output (NCHW, NHWC, video or a token grid); "
            "pass layer= with the module to explain"
        )
    if scores.requires_grad:
        chosen = _last_reached(scores.sum(), candidates, grids, image_size)
        if chosen is not None:
            return chosen
    raise ValueError(
        f"the target depends on no spatial layer of {type(model).__name__}; pass layer= explicitly"
    )


def _last_reached(
    score: Tensor,
    candidates: list[tuple[str, Tensor]],
    grids: dict[str, tuple[int, ...]],
    image_size: tuple[int, ...],
) -> str | None:
    """The last candidate whose gradient from ``score`` reaches at least two cells, among those whose grid
    has ``MIN_GRID_SIDE`` cells on its short side when any of them is reached, else among all. The fine
    candidates are tried from the last, each with a backward that stops at it, so the usual answer (a
    network's last stage) costs a backward through the head only, not through the whole network."""

    def reached(group: list[tuple[str, Tensor]]) -> list[str]:
        gradients = torch.autograd.grad(score, [t for _, t in group], retain_graph=True, allow_unused=True)
        return [
            name
            for (name, tensor), gradient in zip(group, gradients)
            if gradient is not None and _cells_reached(tensor, gradient, image_size) >= 2
        ]

    fine = [(name, t) for name, t in candidates if min(grids[name][-2:]) >= MIN_GRID_SIDE]
    for candidate in reversed(fine):
        if reached([candidate]):
            return candidate[0]
    coarse = [(name, t) for name, t in candidates if min(grids[name][-2:]) < MIN_GRID_SIDE]
    found = reached(coarse) if coarse else []
    return found[-1] if found else None


def _grid_shape(activation: Tensor, image_size: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial grid of one sample of a grid-like activation: (h, w), or (t, h, w) for video."""
    return tuple(infer_layout(activation[:1], image_size).to_grid(activation[:1]).shape[2:])


def _inside_a_downsampling(
    name: str, grids: dict[str, tuple[int, ...]], input_grids: dict[str, tuple[int, ...]]
) -> bool:
    """Whether a module works on the input grid of a module around it that gives out another grid: the
    first convolutions of a bottleneck block that downsamples, a stage's downsampling layer."""
    grid = grids[name]
    return any(
        name.startswith(f"{outer}.") and input_grids.get(outer) == grid and outer_grid != grid
        for outer, outer_grid in grids.items()
    )


def _cells_reached(activation: Tensor, gradient: Tensor, image_size: tuple[int, ...]) -> int:
    """How many grid cells the target's gradient reaches."""
    grid = infer_layout(activation, image_size).to_grid(gradient)
    return int((grid.abs().sum(dim=(0, 1)) > 0).sum())


def forward_identity(forward: Callable) -> object:
    """What identifies a forward function without holding on to what it closes over."""
    while isinstance(forward, partial):
        forward = forward.func
    return getattr(forward, "__code__", type(forward))


def auto_layer(
    model: nn.Module,
    forward: Callable,
    inputs: dict[str, Any],
    image_size: tuple[int, ...],
    run: Callable[[], Tensor],
) -> str:
    """``find_spatial_layer``, remembered per model (weakly), forward function and per-sample input shapes.

    The first call with a new key probes (on that call's targets) and logs the choice on the
    ``"mmcam"`` logger; later calls reuse it for free.
    """
    key = _probe_key(forward, inputs)
    with _auto_lock:
        known = _auto_layers.setdefault(model, {})
    if key not in known:
        known[key] = find_spatial_layer(model, run, image_size)
        logger.info("auto layer for %s on inputs %s: '%s'", type(model).__name__, dict(key[1]), known[key])
    return known[key]


def _probe_key(forward: Callable, inputs: dict[str, Any]) -> tuple:
    """What ``auto_layer`` remembers a choice by: the forward function and the per-sample input shapes."""
    shapes = tuple(
        sorted((key, tuple(value.shape[1:])) for key, value in inputs.items() if isinstance(value, Tensor))
    )
    return forward_identity(forward), shapes


def layer_known(model: nn.Module, forward: Callable, inputs: dict[str, Any]) -> bool:
    """Whether ``auto_layer`` already found the layer of ``model`` for this forward and these per-sample
    input shapes (a call on them does not probe)."""
    with _auto_lock:
        known = _auto_layers.get(model, {})
    return _probe_key(forward, inputs) in known
