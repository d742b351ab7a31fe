"""Leave the user's model exactly as it came: flags, modes and hooks restored, also when a call raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with every parameter frozen, and restore both on exit.

    Frozen parameters are what makes the backward stop at the captured layer: nothing below it
    is part of the autograd graph, and no weight gradient is ever computed. Eval mode makes
    samples independent (batch norm uses running statistics, dropout is off), which the
    per-sample vectorized backward relies on.
    """
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for parameter, _ in requires_grad:
            parameter.requires_grad_(False)
        yield model
    finally:
        for parameter, flag in requires_grad:
            parameter.requires_grad_(flag)
        for module, flag in training:
            module.train(flag)
