"""The biases FullGrad attributes a score to: each convolution's and batch norm's, per output channel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

# Per number of grid axes of the image (2: images, 3: video), the modules whose bias is added on that grid.
BIAS_MODULES = {2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}


def channel_bias(module: nn.Module) -> Tensor | None:
    """What ``module`` adds per output channel beyond a linear function of its input: a convolution's
    bias b, a batch norm's effective bias in eval mode beta - mu gamma / sqrt(var + eps); None without one
    (no bias, or a batch norm without running statistics)."""
    if module.bias is None:
        return None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            return None
        scale = module.weight / (module.running_var + module.eps).sqrt()
        return (module.bias - module.running_mean * scale).detach()
    return module.bias.detach()


def channel_biases(model: nn.Module, grid_axes: int) -> dict[nn.Module, Tensor]:
    """Each convolution and batch norm of ``model`` on a grid of ``grid_axes`` axes with a bias: its bias (C,)."""
    kinds = BIAS_MODULES[grid_axes]
    biases = {}
    for module in model.modules():
        if isinstance(module, kinds):
            bias = channel_bias(module)
            if bias is not None:
                biases[module] = bias
    if not biases:
        raise ValueError(
            f"FullGrad sums the gradients at the biases of convolutions and batch norms, and "
            f"{type(model).__name__} has no {' or '.join(kind.__name__ for kind in kinds)} with a bias: "
            "use another method, such as gradcam"
        )
    return biases


@contextmanager
def bias_outputs(biases: dict[nn.Module, Tensor]) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Within the block, every run of a module of ``biases`` whose output z the input reaches by gradient
    appends (b, z) to the yielded list, b the module's bias; the layers above get a copy of z, so that an
    in-place operation there (a ReLU) leaves z, and the gradient at it, the module's own. Only the forward
    passes of the thread that entered the block are recorded; the hooks are removed on exit."""
    recorded: list[tuple[Tensor, Tensor]] = []
    thread = threading.get_ident()

    def hook(bias: Tensor):
        def record(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
            if threading.get_ident() != thread or not output.requires_grad:
                return None
            recorded.append((bias, output))
            return output.clone()

        return record

    handles = [module.register_forward_hook(hook(bias)) for module, bias in biases.items()]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
