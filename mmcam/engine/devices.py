"""The device a model runs on, and its inputs moved there (``--device``, a model the user put on a GPU)."""

from __future__ import annotations

from itertools import chain
from typing import TypeVar

import torch
from torch import Tensor, nn

Inputs = TypeVar("Inputs", Tensor, dict)


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer; None for a model without any."""
    for tensor in chain(model.parameters(), model.buffers()):
        return tensor.device
    return None


def on_model_device(inputs: Inputs, model: nn.Module) -> Inputs:
    """A tensor, or a dict's tensors, on the model's device (copies; the given tensors stay where they were)."""
    device = model_device(model)
    if device is None:
        return inputs
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in inputs.items()}


def chosen_device(name: str | None) -> torch.device:
    """The device ``--device NAME`` asks for (``cpu``, ``cuda``, ``cuda:1``, ``mps``); None: CUDA when
    available, else the CPU. A device this machine does not have is one clear error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return device
