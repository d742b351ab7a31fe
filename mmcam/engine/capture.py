"""Forward hooks that make a layer's output the start of the autograd graph."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def first_tensor(output: object) -> Tensor | None:
    """The tensor a layer produced: the output itself, or the first item of a tuple or list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def _replace_first(output: object, tensor: Tensor) -> object:
    if isinstance(output, Tensor):
        return tensor
    return type(output)((tensor, *output[1:]))


class LayerCapture:
    """Capture the outputs of named layers during one forward pass.

    Inside the ``with`` block each hooked layer's output ``a`` is replaced downstream by a copy of
    ``a.detach().requires_grad_()``: the graph starts there, so a later
    ``torch.autograd.grad(score, capture.activations[name])`` differentiates only the part of the
    model above the layer. Downstream in-place operations act on the copy and cannot alter the
    captured tensor. A layer whose input already carries a graph (a second captured layer above
    the first) is recorded as it is, so gradients still flow through both.
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        modules = dict(model.named_modules())
        self._modules = {name: modules[name] for name in layers}
        self._handles: list = []
        self.activations: dict[str, Tensor] = {}

    def __enter__(self):
        self.activations = {}
        self._handles = [
            module.register_forward_hook(self._hook(name)) for name, module in self._modules.items()
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            tensor = first_tensor(output)
            if tensor is None:
                raise TypeError(
                    f"layer '{name}' returned {type(output).__name__}, not a tensor; pick a layer with a tensor output"
                )
            if name in self.activations:
                raise ValueError(
                    f"layer '{name}' ran more than once in one forward pass; pick a layer that runs once"
                )
            start = tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
            self.activations[name] = start
            return _replace_first(output, start.clone())

        return hook
