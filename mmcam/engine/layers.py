"""Find the layer to explain: by module, by dotted name, or automatically."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmcam.engine.capture import first_tensor
from mmcam.engine.layouts import infer_layout


def resolve_layer(model: nn.Module, spec: nn.Module | str) -> str:
    """Return the dotted name of ``spec`` inside ``model``.

    ``spec`` is a submodule, or a dotted name whose parts may be negative indices into
    sequential containers (``"vit.layers.-1.layernorm_before"``).
    """
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


def find_spatial_layer(model: nn.Module, run: Callable[[], Tensor], image_size: tuple[int, int]) -> str:
    """The last layer, in execution order, whose output is a spatial grid the target depends on.

    One probe forward records every module output that reads as a grid (NCHW, NHWC or tokens
    with a patch grid) of at least two cells; ``run`` returns the target scores. The chosen layer
    is the last one whose gradient is non-zero on at least two grid cells, so a ViT's final
    norm (whose gradient reaches only the class token) is passed over for the last block that
    still mixes patch tokens. Modules that run more than once per forward are skipped.
    """
    outputs: dict[str, Tensor] = {}
    calls: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            tensor = first_tensor(output)
            if tensor is not None and tensor.requires_grad and infer_layout(tensor, image_size, strict=False):
                outputs[name] = tensor

        return hook

    parameters = [p for p in model.parameters() if p.is_floating_point()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        scores = run()
    finally:
        for handle in handles:
            handle.remove()
        for parameter in parameters:
            parameter.requires_grad_(False)
    candidates = [(name, tensor) for name, tensor in outputs.items() if calls[name] == 1]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial output (NCHW, NHWC or a token grid); "
            "pass layer= with the module to explain"
        )
    gradients = torch.autograd.grad(scores.sum(), [t for _, t in candidates], allow_unused=True)
    for (name, tensor), gradient in zip(reversed(candidates), reversed(gradients)):
        if gradient is None:
            continue
        grid = infer_layout(tensor, image_size).to_grid(gradient)
        if (grid.abs().sum(dim=(0, 1)) > 0).sum() >= 2:
            return name
    raise ValueError(
        f"the target depends on no spatial layer of {type(model).__name__}; pass layer= explicitly"
    )
