"""Everything a CAM method may ask of one explanation call, computed only when asked."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from mmcam.engine.capture import LayerCapture
from mmcam.engine.gradients import target_gradients
from mmcam.engine.guided import guided_relus
from mmcam.engine.layouts import Layout, as_layout
from mmcam.engine.precision import Precision
from mmcam.targets import Target, per_row

Forward = Callable[[nn.Module, dict[str, Tensor]], Any]


class CamContext:
    """One batch, one layer, K targets: the captured activation and, lazily, what methods need.

    Forward passes run under the caller's autocast (``precision``); the map arithmetic does not.
    The first forward runs at construction with the layer captured (the graph starts there).
    ``gradients`` costs one vectorized backward through the layers above the captured one;
    ``noisy_gradient_moments``, ``masked_scores`` and ``guided_input_gradients`` run extra
    forward passes, only for the methods that use them.
    """

    def __init__(
        self,
        model: nn.Module,
        forward: Forward,
        inputs: dict[str, Tensor],
        image_key: str,
        layer: str,
        layout: str | Layout,
        targets: list[Target],
        chunk_size: int,
        precision: Precision,
        token_layer: str | None = None,
    ):
        self.model = model
        self.forward = forward
        self.inputs = inputs
        self.image_key = image_key
        self.layer = layer
        self.targets = targets
        self.chunk_size = chunk_size
        self.precision = precision
        self.token_layer = token_layer
        self.image = inputs[image_key]
        self.image_size = tuple(self.image.shape[-2:])
        self.target_count = len(targets)
        self.scores, self._start, self._tokens = self._capture_pass(inputs)
        self.layout = as_layout(layout, self._start, self.image_size)
        self.activations = self.layout.to_grid(self._start.detach()).float()

    def score(self, output: Any) -> Tensor:
        """The (N, K) target scores of a forward output."""
        columns = []
        for target in self.targets:
            value = target(output)
            if not isinstance(value, Tensor) or value.ndim != 1:
                raise ValueError(
                    f"target {target.label(0)!r} must return one scalar per sample, a 1-D tensor; "
                    f"got {getattr(value, 'shape', type(value).__name__)}"
                )
            columns.append(value)
        return torch.stack(columns, dim=1)

    def _capture_pass(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Scores, the captured layer's activation and the token layer's (None without one)."""
        layers = [self.layer] + ([self.token_layer] if self.token_layer else [])
        with LayerCapture(self.model, layers) as capture:
            output = self._run(inputs)
        for layer in layers:
            if layer not in capture.activations:
                raise ValueError(f"layer '{layer}' did not run in the forward pass; pick one that does")
        return self.score(output), capture.activations[self.layer], capture.activations.get(self.token_layer)

    def _run(self, inputs: dict[str, Tensor]) -> Any:
        """The model's output on ``inputs``; a failure of the model itself becomes one clear line."""
        try:
            with self.precision.applied():
                return self.forward(self.model, inputs)
        except RuntimeError as error:
            shapes = {key: tuple(value.shape) for key, value in inputs.items() if isinstance(value, Tensor)}
            first_line = str(error).strip().split("\n")[0]
            raise ValueError(f"the model could not run on inputs {shapes}: {first_line}") from error

    def _with_image(self, image: Tensor) -> dict[str, Tensor]:
        """The inputs with the image replaced by ``image`` (m * B rows) and the rest tiled to match."""
        rows = image.shape[0]
        return {
            key: image if key == self.image_key else per_row(value, rows)
            for key, value in self.inputs.items()
        }

    def _grid_gradients(self, scores: Tensor, start: Tensor) -> Tensor:
        return self.layout.to_grid(target_gradients(scores, start, self.chunk_size)).float()

    @cached_property
    def _clean_gradients(self) -> list[Tensor]:
        """Gradients at the layer and, if any, the token layer, from one vectorized backward."""
        starts = [self._start] + ([self._tokens] if self._tokens is not None else [])
        return target_gradients(self.scores, starts, self.chunk_size)

    @cached_property
    def gradients(self) -> Tensor:
        """G = d y_k / d A on the clean input: (B, K, C, h, w), float32."""
        return self.layout.to_grid(self._clean_gradients[0]).float()

    @cached_property
    def token_weights(self) -> Tensor:
        """Gradient x input at the token layer, summed over features: (B, K, L) (e.g. question words)."""
        if self._tokens is None:
            raise ValueError("no token layer was given to weigh tokens")
        return (self._clean_gradients[1].float() * self._tokens.detach().float()[:, None]).sum(dim=-1)

    def noisy_gradient_moments(self, samples: int, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """Means of G, G^2, G^3 over ``samples`` copies of the image with Gaussian noise.

        The noise std is ``sigma`` times each image's value range; the generator is seeded, so
        the result is reproducible.
        """
        generator = torch.Generator(device=self.image.device).manual_seed(0)
        span = (self.image.amax(dim=(1, 2, 3)) - self.image.amin(dim=(1, 2, 3)))[:, None, None, None]
        moments = [0.0, 0.0, 0.0]
        for _ in range(samples):
            noise = torch.randn(self.image.shape, generator=generator, device=self.image.device)
            noisy = self.image + (sigma * span * noise).to(self.image.dtype)
            scores, start, _ = self._capture_pass(self._with_image(noisy))
            g = self._grid_gradients(scores, start)
            moments = [moments[0] + g, moments[1] + g**2, moments[2] + g**3]
        return tuple(m / samples for m in moments)

    def masked_scores(self, masks: Tensor, batch_size: int) -> Tensor:
        """Scores of the image times each mask: (B, M, H, W) masks -> (B, M, K), ``batch_size`` rows a forward."""
        batch, count = masks.shape[:2]
        per_forward = max(1, batch_size // batch)
        chunks = []
        with torch.no_grad():
            for begin in range(0, count, per_forward):
                chunk = masks[:, begin : begin + per_forward].to(self.image.dtype)
                images = (self.image[:, None] * chunk[:, :, None]).transpose(0, 1).flatten(0, 1)
                scores = self.score(self._run(self._with_image(images)))
                chunks.append(scores.reshape(chunk.shape[1], batch, -1))
        return torch.cat(chunks).transpose(0, 1).float()

    @cached_property
    def guided_input_gradients(self) -> Tensor:
        """Guided-backpropagation gradients of each target w.r.t. the image: (B, K, C_in, H, W)."""
        image = self.image.detach().clone().requires_grad_(True)
        with guided_relus(self.model):
            output = self._run({**self.inputs, self.image_key: image})
        return target_gradients(self.score(output), image, self.chunk_size).float()
