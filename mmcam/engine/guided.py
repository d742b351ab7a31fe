"""Guided backpropagation through the ReLU modules of a model, for the duration of a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class _GuidedRelu(torch.autograd.Function):
    """Identity on a ReLU's output whose backward keeps only positive gradients at positive outputs.

    Chained after the ReLU's own backward (which already zeroes gradients where the input was
    not positive), the gradient that passes is ReLU(g) * [x > 0], Springenberg et al.'s rule.
    """

    @staticmethod
    def forward(ctx, output: Tensor) -> Tensor:
        ctx.save_for_backward(output)
        return output.clone()

    @staticmethod
    def backward(ctx, gradient: Tensor) -> Tensor:
        (output,) = ctx.saved_tensors
        return gradient.clamp_min(0) * (output > 0)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Make every ``nn.ReLU`` of ``model`` backpropagate by the guided rule; hooks removed on exit.

    Functional ReLUs (``F.relu`` in a forward method) and other activations are not affected:
    there, guided backpropagation reduces to the plain gradient.
    """
    handles = [
        module.register_forward_hook(lambda module, args, output: _GuidedRelu.apply(output))
        for module in model.modules()
        if isinstance(module, nn.ReLU)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
