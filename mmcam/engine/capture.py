"""Forward hooks that make a layer's output the start of the autograd graph."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _first_key(output: Mapping) -> object | None:
    """The key of the first tensor value of a mapping (a dict or a Hugging Face ``ModelOutput``)."""
    return next((key for key, value in output.items() if isinstance(value, Tensor)), None)


def first_tensor(output: object) -> Tensor | None:
    """The tensor a layer produced: the output itself, the first item of a tuple, list or namedtuple,
    or the first tensor value of a mapping such as a ``ModelOutput``."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, Mapping):
        key = _first_key(output)
        return None if key is None else output[key]
    return None


def replace_first(output: object, tensor: Tensor) -> object:
    """``output`` of the same type with ``first_tensor(output)`` replaced by ``tensor``; the original is not modified."""
    if isinstance(output, Tensor):
        return tensor
    if hasattr(output, "_fields"):  # a namedtuple
        return output._replace(**{output._fields[0]: tensor})
    if isinstance(output, (tuple, list)):
        return type(output)((tensor, *output[1:]))
    replaced = copy.copy(output)
    replaced[_first_key(output)] = tensor
    return replaced


def channel_zeroing(
    sets: list[list[int]], channels: int, axis: int, copy_output: bool, positions: Tensor | None = None
) -> Callable:
    """A forward hook that gives copy j of a batch the layer's output with the channels ``sets[j]`` (on
    ``axis``) set to zero, copy j being rows j R .. j R + R - 1 of R = rows / copies (B samples, or the
    packed tokens of B samples, which come sample after sample); with ``copy_output`` the layer's output
    is first repeated once per set, so the layers below ran on the batch alone. With ``positions`` (B, L),
    the grid's tokens among sequences (B, S, C) (``SelectedTokens``), only those are zeroed: the unit is the
    channel at the image's tokens, the other tokens keep their values."""

    def hook(_module, _inputs, output):
        tensor = first_tensor(output)
        if copy_output:
            tensor = tensor.repeat(len(sets), *[1] * (tensor.ndim - 1))
        keep = torch.ones(len(sets), channels, dtype=tensor.dtype, device=tensor.device)
        for row, zeroed in enumerate(sets):
            keep[row, list(zeroed)] = 0
        rows = tensor.shape[0] // len(sets)
        keep = keep.repeat_interleave(rows, dim=0)  # (rows of the output, C)
        if positions is not None:
            index = positions.to(tensor.device).repeat(len(sets), 1)[..., None].expand(-1, -1, channels)
            kept = torch.ones_like(tensor).scatter(1, index, keep[:, None].expand_as(index).to(tensor.dtype))
            return replace_first(output, tensor * kept)
        shape = [1] * tensor.ndim
        shape[0], shape[axis] = tensor.shape[0], channels
        return replace_first(output, tensor * keep.reshape(shape))

    return hook


@dataclass(frozen=True)
class PackedTokens:
    """A layer that packs the tokens of every sample into one sequence (N, C), without a batch axis, in an
    order of the model's own (Qwen2-VL's vision tower): token l of sample b is row ``order[b, l]``."""

    order: Tensor

    def read(self, output: Tensor, layer: str) -> Tensor:
        """The packed tokens (N, C) as a batch (B, L, C)."""
        if output.ndim != 2 or output.shape[0] != self.order.numel():
            raise ValueError(
                f"layer '{layer}' gives {tuple(output.shape)}, not the {self.order.numel()} packed tokens (N, C) "
                "its layout reads: pick a layer whose output is the packed patch tokens, such as a block of the "
                "vision tower"
            )
        return output[self.order.to(output.device)]

    def write(self, batched: Tensor, output: Tensor) -> Tensor:
        """The inverse of ``read``: (B, L, C) back to (N, C) in the model's order."""
        return batched.flatten(0, 1)[self.order.to(batched.device).flatten().argsort()]


@dataclass(frozen=True)
class SelectedTokens:
    """A layer whose sequences (B, S, C) hold other tokens besides the grid's (a language model's hidden
    states: the image's tokens among the text's): token l of sample b is at position ``positions[b, l]``."""

    positions: Tensor

    def _index(self, output: Tensor) -> Tensor:
        return self.positions.to(output.device)[..., None].expand(-1, -1, output.shape[-1])

    def read(self, output: Tensor, layer: str) -> Tensor:
        """The grid's tokens (B, L, C) of the sequences."""
        rows, length = self.positions.shape[0], int(self.positions.max()) + 1
        if output.ndim != 3 or output.shape[0] != rows or output.shape[1] < length:
            raise ValueError(
                f"layer '{layer}' gives {tuple(output.shape)}, not the {rows} sequences (B, S, C) of at least "
                f"{length} tokens its layout reads: pick a block of the language model"
            )
        return output.gather(1, self._index(output))

    def write(self, tokens: Tensor, output: Tensor) -> Tensor:
        """The sequences with the grid's tokens from ``tokens``; the other tokens keep their values, as
        constants (the graph starts at the grid's tokens)."""
        return output.detach().scatter(1, self._index(output), tokens)


TokenReader = PackedTokens | SelectedTokens


def graph_start(tensor: Tensor) -> Tensor:
    """A tensor equal to a layer's output from which the graph above the layer starts: a leaf that
    requires grad, or, when the output is already in a graph (a layer above another captured one), a
    copy joined to it. The layer's output is then replaced downstream by a copy of the start, so the
    gradient at the start counts only what uses the layer's output after the layer returns, not what
    the layer computed from it inside (a Hugging Face backbone's pooled output)."""
    return tensor.clone() if tensor.requires_grad else tensor.detach().requires_grad_(True)


class LayerCapture:
    """Capture the outputs of named layers during one forward pass.

    Inside the ``with`` block each hooked layer's output ``a`` is replaced downstream by a copy of
    ``a.detach().requires_grad_()``: the graph starts there, so a later
    ``torch.autograd.grad(score, capture.activations[name])`` differentiates only the part of the
    model above the layer. Downstream in-place operations act on the copy and cannot alter the
    captured tensor. A layer whose input already carries a graph (a second captured layer above
    the first) is recorded as a copy joined to its graph, so gradients still flow through both. Only
    forward passes of the thread that entered the block are captured: another thread running the same
    modules is left alone. A layer named in ``readers`` is captured as the (B, L, C) grid tokens its reader
    reads (``PackedTokens``, ``SelectedTokens``), and handed on as its reader writes them back.
    """

    def __init__(self, model: nn.Module, layers: list[str], readers: dict[str, TokenReader] | None = None):
        modules = dict(model.named_modules())
        self._modules = {name: modules[name] for name in layers}
        self._readers = readers or {}
        self._handles: list = []
        self._thread = threading.get_ident()
        self.activations: dict[str, Tensor] = {}

    def __enter__(self):
        self.activations = {}
        self._thread = threading.get_ident()
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
            if threading.get_ident() != self._thread:
                return None
            tensor = first_tensor(output)
            if tensor is None:
                raise TypeError(
                    f"layer '{name}' returned {type(output).__name__}, not a tensor; pick a layer with a tensor output"
                )
            if not torch.is_grad_enabled():
                raise ValueError(
                    f"layer '{name}' ran with gradients turned off inside the model (torch.no_grad, or reentrant "
                    "gradient checkpointing around it): pick a layer outside that block, or turn checkpointing off"
                )
            if name in self.activations:
                raise ValueError(
                    f"layer '{name}' ran more than once in one forward pass; pick a layer that runs once"
                )
            reader = self._readers.get(name)
            start = graph_start(tensor if reader is None else reader.read(tensor, name))
            self.activations[name] = start
            return replace_first(output, start.clone() if reader is None else reader.write(start, tensor))

        return hook
