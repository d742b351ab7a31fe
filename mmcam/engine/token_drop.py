"""Dropping patch tokens: a token model (a ViT-family tower) run on a shorter sequence, the tokens of a window
of its patch grid removed instead of its pixels filled (occlusion's ``fill="drop"``). Where the model lets a
sequence be shorter (self-attention reads any number of tokens; positions were added before), this takes the
window's evidence away without putting a fill's colours in its place, so no fill can be read as evidence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


def token_source(model: nn.Module, run: Callable[[], Any], shape: tuple[int, ...]) -> str:
    """The module that makes the token sequence: the first module to finish in the forward ``run()`` whose
    output is a tensor of ``shape`` (the explained layer's (B, prefix + h*w, C)). A ViT's is its embeddings
    (their last step: patches, prefix tokens and positions together)."""
    found: list[str] = []

    def recorder(name: str) -> Callable:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if not found and isinstance(output, Tensor) and tuple(output.shape) == shape:
                found.append(name)

        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise ValueError(
            f"no module of the model outputs the token sequence {shape}, so no tokens can be dropped: use a "
            "fill, such as background"
        )
    return found[0]


def kept_tokens(cells: Tensor, prefix: int) -> Tensor:
    """For n windows (n, h, w) of 0/1 cells, each of the same number c of cells: (n, prefix + h*w - c) the
    positions of the tokens each window keeps, in order: the ``prefix`` tokens, then the grid's (row-major)
    outside the window."""
    window = cells.flatten(1).bool().cpu()
    if window.sum(dim=1).unique().numel() != 1:
        raise ValueError("the windows whose tokens are dropped together must have as many cells each")
    grid = torch.arange(window.shape[1]) + prefix
    return torch.stack([torch.cat([torch.arange(prefix), grid[~row]]) for row in window])


@contextmanager
def dropping(module: nn.Module, kept: Tensor, samples: int) -> Iterator[None]:
    """Inside: the output (copies x samples, T, C) of ``module`` keeps, in row r, the tokens
    ``kept[r // samples]`` ((copies, T') positions), the rows being copies of the batch one after another:
    out[r] = x[r, kept[r // samples]]."""
    index = kept.repeat_interleave(samples, dim=0)

    def keep(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        rows = index.to(output.device)[..., None].expand(-1, -1, output.shape[-1])
        return output.gather(1, rows)

    handle = module.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()
