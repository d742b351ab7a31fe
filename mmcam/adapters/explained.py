"""What a captioner and a VQA model share as task adapters: a model, how inputs reach it, its default layer,
method and layout, and the explainer and naming subject built from them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from torch import Tensor, nn

from mmcam.engine import Explainer, Layout
from mmcam.subject import Subject

LayoutOf = Callable[[dict[str, Tensor]], "str | Layout"]


@dataclass(kw_only=True)
class ExplainedModel:
    """A model behind a task: ``forward(model, inputs)`` runs it; ``layer`` and ``method`` are the defaults
    an explainer uses; ``layout(inputs)`` is the default layer's layout for those inputs, and ``layouts(layer)``
    another layer's where layers differ in layout. ``unknown_words(text)``: the words of a text the model's
    tokenizer reads as its unknown token."""

    name: str
    model: nn.Module
    forward: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    layer: str = "auto"
    method: str = "gradcam"
    unknown_words: Callable[[str], list[str]] = field(default=lambda text: [])
    layout: LayoutOf = field(default=lambda inputs: "auto")
    layouts: Callable[[str], LayoutOf] | None = None

    def explainer_options(self) -> dict[str, Any]:
        """What this task adds to every ``Explainer`` (class names, a token layer); none here."""
        return {}

    def probe_inputs(self, images: Sequence[Image.Image]) -> dict[str, Tensor]:
        """The model inputs that probe ``images`` when naming units (the task's neutral text)."""
        raise NotImplementedError

    def explainer(self, layer: str | None = None, method: str | None = None, **options) -> Explainer:
        """An explainer of ``layer`` with ``method`` (defaults: the model's own), the layout following each
        input (``layout(inputs)``, or ``layouts(layer)(inputs)``); ``options`` go to ``Explainer``."""
        layer = layer or self.layer
        return Explainer(
            self.model,
            layer=layer,
            method=method or self.method,
            layout=self.layout_of(layer),
            forward=self.forward,
            **{**self.explainer_options(), **options},
        )

    def layout_of(self, layer: str) -> LayoutOf:
        """The layout of ``layer`` as a function of the inputs: ``layouts(layer)``, else ``layout``."""
        return self.layout if self.layouts is None else self.layouts(layer)

    def subject(self, layer: str | None = None) -> Subject:
        """This model's layer as a subject for naming its units, probed with ``probe_inputs`` and read with the
        layout its explainer reads it with (``layout_of``)."""
        layer = layer or self.layer
        return Subject(self.name, self.model, layer, self.probe_inputs, self.forward, self.layout_of(layer))
