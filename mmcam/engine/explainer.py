"""The engine's entry point: one forward, one vectorized backward, K maps per sample."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmcam.engine.context import CamContext, Forward
from mmcam.engine.layers import find_spatial_layer, resolve_layer
from mmcam.engine.layouts import Layout
from mmcam.engine.methods import get_method
from mmcam.engine.precision import Precision
from mmcam.engine.resize import normalize, upsample
from mmcam.engine.state import explanation_mode
from mmcam.explanation import Explanation
from mmcam.targets import Target, as_targets


def call_model(model: nn.Module, inputs: dict[str, Tensor]) -> Any:
    """The default forward: ``model(image)`` for image-only inputs, ``model(**inputs)`` otherwise."""
    if len(inputs) == 1:
        return model(next(iter(inputs.values())))
    return model(**inputs)


class Explainer:
    """Reusable explainer for one model, layer and method.

    ``layer``: a submodule, a dotted name (negative indices allowed: ``"vit.layers.-1.layernorm_before"``)
    or ``"auto"`` (the last layer with a spatial output the target depends on, found once on the
    first call). ``layout``: ``"auto"``, ``"nchw"``, ``"nhwc"``, ``"tokens"`` or a ``Layout``.
    ``token_layer`` (optional): a layer with a (B, L, D) token output, such as a question's word
    embeddings, whose gradient x input per token is returned as ``token_weights`` (B, K, L) from the
    same backward. ``forward(model, inputs)`` runs the model on a dict of batched tensors whose ``image_key``
    entry is the image; the default calls ``model(image)``. ``chunk_size`` bounds how many targets
    share one batched backward.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str = "auto",
        method: str | object = "gradcam",
        layout: str | Layout = "auto",
        forward: Forward = call_model,
        image_key: str = "pixel_values",
        class_names: Sequence[str] | None = None,
        chunk_size: int = 32,
        token_layer: str | None = None,
    ):
        self.model = model
        self.method = get_method(method)
        self.layout = layout
        self.forward = forward
        self.image_key = image_key
        self.class_names = class_names
        self.chunk_size = chunk_size
        self.layer = None if layer == "auto" else resolve_layer(model, layer)
        self.token_layer = None if token_layer is None else resolve_layer(model, token_layer)

    def __call__(self, inputs: Tensor | dict[str, Tensor], targets: Any) -> Explanation:
        """Explain ``targets`` (see ``mmcam.targets.as_targets``) on a batch of ``inputs``."""
        inputs = self._as_inputs(inputs)
        image = inputs[self.image_key]
        batch, size = image.shape[0], tuple(image.shape[-2:])
        target_list = as_targets(targets, batch, self.class_names)
        if torch.is_inference_mode_enabled():
            raise RuntimeError("mmcam needs autograd: call it outside torch.inference_mode()")
        precision = Precision.current(image.device.type)
        with (
            explanation_mode(self.model),
            torch.enable_grad(),
            torch.autocast(image.device.type, enabled=False),
        ):
            layer = self.layer or self._find_layer(inputs, target_list, size, precision)
            context = CamContext(
                self.model,
                self.forward,
                inputs,
                self.image_key,
                layer,
                self.layout,
                target_list,
                self.chunk_size,
                precision,
                self.token_layer,
            )
            result = self.method(context)
            scores = context.scores.detach().float()
            token_weights = context.token_weights.detach() if self.token_layer else None
        raw = result.raw.detach().float()
        return Explanation(
            maps=normalize(upsample(raw, size)),
            raw=raw,
            scores=scores,
            labels=[[t.label(b, self.class_names) for t in target_list] for b in range(batch)],
            indices=[[t.index(b) for t in target_list] for b in range(batch)],
            layer=layer,
            method=self.method.name,
            weights=None if result.weights is None else result.weights.detach(),
            token_weights=token_weights,
        )

    def _find_layer(
        self, inputs: dict[str, Tensor], targets: list[Target], size: tuple[int, int], precision: Precision
    ) -> str:
        def run() -> Tensor:
            with precision.applied():
                output = self.forward(self.model, inputs)
            return torch.stack([t(output) for t in targets], dim=1)

        self.layer = find_spatial_layer(self.model, run, size)
        return self.layer

    def _as_inputs(self, inputs: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(inputs, Tensor):
            inputs = {self.image_key: inputs[None] if inputs.ndim == 3 else inputs}
        if not isinstance(inputs, dict) or self.image_key not in inputs:
            raise ValueError(
                f"inputs must be an image tensor (B, C, H, W) or a dict with a '{self.image_key}' entry"
            )
        image = inputs[self.image_key]
        if image.ndim != 4 or not image.is_floating_point():
            raise ValueError(
                f"the image must be a float tensor (B, C, H, W), got {image.dtype} of shape {tuple(image.shape)}"
            )
        return {key: value.detach() if isinstance(value, Tensor) else value for key, value in inputs.items()}


def explain(
    model: nn.Module,
    images: Tensor | dict[str, Tensor],
    targets: Any,
    layer: nn.Module | str = "auto",
    method: str | object = "gradcam",
    **options: Any,
) -> Explanation:
    """One call: ``Explainer(model, layer=layer, method=method, **options)(images, targets)``."""
    return Explainer(model, layer=layer, method=method, **options)(images, targets)
