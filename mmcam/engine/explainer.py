"""The engine's entry point: one forward, one vectorized backward, K maps per sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from mmcam.engine.context import CamContext, Forward
from mmcam.engine.devices import on_model_device
from mmcam.engine.evidence import negligible
from mmcam.engine.layers import auto_layer, layer_known, resolve_layer
from mmcam.engine.layouts import Layout
from mmcam.engine.methods import CamResult, capable, get_method
from mmcam.engine.precision import Precision
from mmcam.engine.resize import UPSAMPLING, normalize, upsample
from mmcam.engine.state import cudnn_disabled, explanation_mode, has_rnn
from mmcam.explanation import Explanation
from mmcam.targets import Target, as_targets

LayoutSpec = str | Layout | Callable[[dict[str, Tensor]], str | Layout]


def call_model(model: nn.Module, inputs: dict[str, Tensor]) -> Any:
    """The default forward: ``model(image)`` for image-only inputs, ``model(**inputs)`` otherwise."""
    if len(inputs) == 1:
        return model(next(iter(inputs.values())))
    return model(**inputs)


# aug_smooth's test-time augmentations (flip left to right, multiply): the image itself first
AUGMENTATIONS = [(flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1)]


class Explainer:
    """Reusable explainer for one model, layer and method.

    ``layer``: a submodule, a dotted name (negative indices allowed: ``"vit.layers.-1.layernorm_before"``)
    or ``"auto"``: the last layer with a spatial output of at least 7 cells a side the target depends
    on (``layers.find_spatial_layer``), found by one probe (without weight gradients) the first time a
    model meets a forward and input shape, remembered per model (weakly) and logged on the ``"mmcam"``
    logger. The model itself is not a layer.
    ``layout``: ``"auto"``, ``"nchw"``, ``"nhwc"`` (``"ncthw"``, ``"nthwc"`` for video), ``"tokens"``,
    a ``Layout``, or a function of the inputs returning one (a grid that depends on the question length).
    ``token_layer`` (optional): a layer with a (B, L, D) token output, such as a question's word
    embeddings, whose gradient x input per token is returned as ``token_weights`` (B, K, L) from the
    same backward. ``forward(model, inputs)`` runs the model on a dict of batched tensors whose ``image_key``
    entry is the image, (B, C, H, W) or a video or volume (B, C, T, H, W); the default calls
    ``model(image)``. ``chunk_size`` bounds how many targets share one batched backward.
    ``signed=True`` keeps each map's sign (no final ReLU; maps scaled by max |L| into [-1, 1]);
    ``upsampling`` is ``"bilinear"`` (trilinear for video) or ``"nearest"``. ``eigen_smooth=True``
    replaces a channel-weight method's sum over channels by their first principal component
    (``CamMethod.eigen_smoothed``, pytorch-grad-cam's option of that name; other methods are refused); ``aug_smooth=True`` averages
    the maps of six flipped and scaled copies of the input (six calls; pytorch-grad-cam's option of that
    name). Inputs go to the model's
    device (the maps and scores come back there).

    A call on a model another call (or thread) is explaining waits for it; the model comes back
    exactly as it went in. Gradient methods raise when a target does not depend on the layer (no
    zero maps), when a score or gradient is not finite, and warn when samples mix after the layer
    (their maps are then computed per sample).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str = "auto",
        method: str | object = "gradcam",
        layout: LayoutSpec = "auto",
        forward: Forward = call_model,
        image_key: str = "pixel_values",
        class_names: Sequence[str] | None = None,
        chunk_size: int = 32,
        token_layer: str | None = None,
        signed: bool = False,
        upsampling: str = "bilinear",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"the model must be a torch.nn.Module (a network whose layers can be hooked), got "
                f"{type(model).__name__}"
            )
        if upsampling not in UPSAMPLING:
            raise ValueError(f"unknown upsampling '{upsampling}'; use one of {', '.join(UPSAMPLING)}")
        self.model = model
        self.method = get_method(method)
        if eigen_smooth and not self.method.channel_weights:
            raise ValueError(
                f"eigen_smooth needs a method with channel weights, not {self.method.name}: one of "
                + ", ".join(capable("channel_weights"))
            )
        self.layout = layout
        self.forward = forward
        self.image_key = image_key
        self.class_names = class_names
        self.chunk_size = chunk_size
        self.signed = signed
        self.upsampling = upsampling
        self.eigen_smooth = eigen_smooth
        self.aug_smooth = aug_smooth
        self.layer = None if isinstance(layer, str) and layer == "auto" else resolve_layer(model, layer)
        self.token_layer = None if token_layer is None else resolve_layer(model, token_layer)

    def __call__(
        self, inputs: Tensor | dict[str, Tensor], targets: Any, copies: Tensor | None = None
    ) -> Explanation:
        """Explain ``targets`` (see ``mmcam.targets.as_targets``) on a batch of ``inputs``. With ``copies``
        (R,), the batch's R rows are copies of fewer samples, row r one of sample ``copies[r]`` (the same
        image and question, a row per answer: ``engine.copies``); a target scores a sample as the sum over
        its rows, and the explanation has a row per sample."""
        inputs = self._as_inputs(inputs)
        target_list = as_targets(targets, inputs[self.image_key].shape[0], self.class_names)
        if not self.aug_smooth:
            return self._explain(inputs, target_list, copies)
        return self._augmentation_smoothed(inputs, target_list, copies)

    def probes(self, inputs: Tensor | dict[str, Tensor]) -> bool:
        """Whether a call on ``inputs`` first probes for its layer (``layer="auto"``, not yet found for this
        model, forward and per-sample input shapes). The probe runs a forward that records every layer's
        output as a start of the graph, then backward passes down to the candidates it checks (``layers.
        find_spatial_layer``): about two forwards of the batch it runs on (resnet18, one 224 px input:
        55-75 ms against 30 ms for its explanation); the layer it finds holds for any batch of the same
        shapes, so a caller with many batches runs the first on one input."""
        if self.layer is not None:
            return False
        if isinstance(inputs, Tensor):
            inputs = {self.image_key: inputs[None] if inputs.ndim == 3 else inputs}
        return not layer_known(self.model, self.forward, inputs)

    def _augmentation_smoothed(
        self, inputs: dict[str, Tensor], targets: list[Target], copies: Tensor | None
    ) -> Explanation:
        """``aug_smooth``: the mean of the maps of the image as it is, scaled by 0.9 and 1.1, and each of
        the three flipped left to right (the flipped maps flipped back): pytorch-grad-cam's test-time
        augmentation. Scores, labels and weights are the image's own (explained first, so a ``TopClass``
        target keeps its classes); a map is negligible when it is in every copy (the others' maps count)."""
        parts = []
        for flip, factor in AUGMENTATIONS:
            image = inputs[self.image_key] * factor
            part = self._explain(
                {**inputs, self.image_key: image.flip(-1) if flip else image}, targets, copies
            )
            parts.append(replace(part, maps=part.maps.flip(-1), raw=part.raw.flip(-1)) if flip else part)
        return replace(
            parts[0],
            maps=torch.stack([part.maps for part in parts]).mean(dim=0),
            raw=torch.stack([part.raw for part in parts]).mean(dim=0),
            evidence=None
            if parts[0].evidence is None
            else torch.stack([part.evidence for part in parts]).mean(dim=0),
            negligible=torch.stack([part.negligible for part in parts]).all(dim=0),
        )

    def _explain(
        self, inputs: dict[str, Tensor], target_list: list[Target], copies: Tensor | None
    ) -> Explanation:
        size = tuple(inputs[self.image_key].shape[2:])

        def explain_group(
            context: CamContext,
        ) -> tuple[CamResult, Tensor | None, Tensor | None, Tensor | None]:
            result = self.method.eigen_smoothed(context) if self.eigen_smooth else self.method(context)
            # an eigen-smoothed map is a principal component, not score contributions: judged at the layer
            method = self.method
            evidence = (
                method.layer_evidence(context) if self.eigen_smooth else method.evidence(context, result)
            )
            token_weights = context.token_weights.detach() if self.token_layer else None
            units = method.unit_contributions(context, result)
            return (
                result,
                token_weights,
                None if evidence is None else evidence.detach(),
                None if units is None else units.detach(),
            )

        def explain(context: CamContext):
            scores = context.scores.detach().to(context.dtype)
            grouped = self.method.per_target and context.target_count > self.chunk_size
            parts = [explain_group(group) for group in (context.target_groups() if grouped else [context])]
            result = CamResult(
                torch.cat([part[0].signed for part in parts], dim=1),
                None
                if parts[0][0].weights is None
                else torch.cat([part[0].weights for part in parts], dim=1),
            )
            token_weights = torch.cat([part[1] for part in parts], dim=1) if self.token_layer else None
            evidence, units = (
                None
                if parts[0][i] is None
                else torch.cat([part[i] for part in parts], dim=1).to(context.dtype)
                for i in (2, 3)
            )
            return (
                context.layer,
                result,
                evidence,
                scores,
                token_weights,
                context.tiles,
                context.samples,
                units,
                context.dtype,
            )

        layer, result, evidence, scores, token_weights, tiles, batch, units, dtype = self._in_context(
            inputs, target_list, explain, copies
        )
        raw = (result.signed if self.signed else result.raw).detach().to(dtype)
        weights = None if result.weights is None else result.weights.detach()
        if tiles is not None:  # one map per tile: each image's map is stitched from its tiles', on its pixels
            raw, weights = tiles.stitch(raw, batch, size, self.upsampling), None
            # an image's evidence, and a unit's contribution (x_kc = sum over its rows and cells), are its tiles'
            evidence = None if evidence is None else tiles.summed(evidence, batch)
            units = None if units is None else tiles.summed(units, batch)
        contributions = None if units is None else units.to(dtype)
        kinds = [target.kind for target in target_list]
        empty = negligible(evidence, raw, scores, kinds)
        maps = normalize(upsample(raw, size, self.upsampling), len(size), self.signed)
        return Explanation(
            maps=maps,
            raw=raw,
            scores=scores,
            labels=[[t.label(b, self.class_names) for t in target_list] for b in range(batch)],
            indices=[[t.index(b) for t in target_list] for b in range(batch)],
            layer=layer,
            method=self.method.name,
            weights=weights,
            contributions=contributions,
            token_weights=token_weights,
            kinds=kinds,
            evidence=evidence,
            negligible=empty,
        )

    def zeroed_scores(
        self,
        inputs: Tensor | dict[str, Tensor],
        targets: Any,
        channel_sets: list[list[int]],
        batch_size: int = 256,
    ) -> tuple[Tensor, Tensor]:
        """The targets' scores (B, K) and their scores with each set of the layer's channels set to zero
        (B, S, K): what a set of units carries (``CamContext.ablated_scores``)."""
        inputs = self._as_inputs(inputs)
        target_list = as_targets(targets, inputs[self.image_key].shape[0], self.class_names)
        return self._in_context(
            inputs,
            target_list,
            lambda context: (
                context.scores.detach().to(context.dtype),
                context.ablated_scores(batch_size, channel_sets),
            ),
        )

    def _in_context(
        self,
        inputs: dict[str, Tensor],
        target_list: list[Target],
        use: Callable[[CamContext], Any],
        copies: Tensor | None = None,
    ):
        """``use(context)`` on the batch's ``CamContext`` (the layer captured on one forward), with the model in
        explanation mode and autograd on; ``copies`` as in ``__call__``."""
        image = inputs[self.image_key]
        if torch.is_inference_mode_enabled():
            raise RuntimeError("mmcam needs autograd: call it outside torch.inference_mode()")
        precision = Precision.current(image.device.type)
        with (
            explanation_mode(self.model),
            cudnn_disabled(has_rnn(self.model)),
            torch.enable_grad(),
            torch.autocast(image.device.type, enabled=False),
        ):
            layer = self.layer or self._auto_layer(inputs, target_list, tuple(image.shape[2:]), precision)
            context = CamContext(
                self.model,
                self.forward,
                inputs,
                self.image_key,
                layer,
                self.layout(inputs) if callable(self.layout) else self.layout,
                target_list,
                self.chunk_size,
                precision,
                self.token_layer,
                self.upsampling,
                record_attention=self.method.reads_attention,
                second_order=self.method.second_order,
                copies=copies,
            )
            return use(context)

    def _auto_layer(
        self, inputs: dict[str, Tensor], targets: list[Target], size: tuple[int, ...], precision: Precision
    ) -> str:
        def run() -> Tensor:
            with precision.applied():
                output = self.forward(self.model, inputs)
            return torch.stack([t(output) for t in targets], dim=1)

        return auto_layer(self.model, self.forward, inputs, size, run)

    def _as_inputs(self, inputs: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(inputs, Tensor):
            inputs = {self.image_key: inputs[None] if inputs.ndim == 3 else inputs}
        if not isinstance(inputs, dict) or self.image_key not in inputs:
            raise ValueError(
                f"inputs must be an image tensor (B, C, H, W) or a dict with a '{self.image_key}' entry"
            )
        image = inputs[self.image_key]
        if image.ndim == 2:
            raise ValueError(
                f"inputs of shape {tuple(image.shape)} (B, F) have no spatial grid, and mmcam's maps lie on an "
                "image's or a video's: for one value per feature of a layer, take the target's gradient times "
                "the layer's output (docs/python.md, 'What is refused')"
            )
        if image.ndim not in (4, 5) or not image.is_floating_point():
            raise ValueError(
                "the image must be a float tensor (B, C, H, W), or (B, C, T, H, W) for video, "
                f"got {image.dtype} of shape {tuple(image.shape)}"
            )
        return on_model_device(
            {key: value.detach() if isinstance(value, Tensor) else value for key, value in inputs.items()},
            self.model,
        )


def explain(
    model: nn.Module,
    images: Tensor | dict[str, Tensor],
    targets: Any,
    layer: nn.Module | str = "auto",
    method: str | object = "gradcam",
    **options: Any,
) -> Explanation:
    """One call: ``Explainer(model, layer=layer, method=method, **options)(images, targets)``.

    With ``layer="auto"`` the probe runs once per model and input shape, so repeated calls cost
    what an explicit-layer ``Explainer`` costs.
    """
    return Explainer(model, layer=layer, method=method, **options)(images, targets)
