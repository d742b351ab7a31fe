"""What a task exposes to be explained or named: a model, one of its layers, and how inputs reach it.

Adapters build a ``Subject``; the naming code (``mmcam.concepts``) reads one. Neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mmcam.engine.layers import resolve_layer
from mmcam.engine.layouts import Layout

Forward = Callable[[nn.Module, Any], Any]  # forward(model, inputs) -> the model's output
# how a layer's output lies on the image: the explainer's layout, or a function of the model's inputs giving it
LayoutSpec = str | Layout | Callable[[Any], str | Layout]


@dataclass
class Subject:
    """A model's layer: ``forward(model, inputs(images))`` runs the model on a list of images (PIL
    images, or the raw observations of an RL agent); ``forward`` None means ``model(inputs)``."""

    name: str
    model: nn.Module
    layer: str
    inputs: Callable[[list[Any]], Any]
    forward: Forward | None = None
    layout: LayoutSpec = "auto"

    def __post_init__(self) -> None:
        if self.layer != "auto":  # one name per layer: "layers.-1" becomes "layers.11"
            self.layer = resolve_layer(self.model, self.layer)
