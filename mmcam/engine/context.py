"""Everything a CAM method may ask of one explanation call, computed only when asked."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cached_property
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from mmcam.engine.attention import AttentionRecorder
from mmcam.engine.biases import bias_outputs, channel_biases
from mmcam.engine.capture import LayerCapture, SelectedTokens, channel_zeroing
from mmcam.engine.copies import RowGroups, summed
from mmcam.engine.gradients import chunk_starts, mixes_samples, target_gradients
from mmcam.engine.guided import guided_relus
from mmcam.engine.layers import forward_identity
from mmcam.engine.layouts import Layout, as_layout
from mmcam.engine.precision import Precision
from mmcam.engine.token_drop import dropping, kept_tokens, token_source
from mmcam.engine.warn import warn_user
from mmcam.targets import Target, per_row

Forward = Callable[[nn.Module, dict[str, Tensor]], Any]

# Per model (weakly): (forward function, layer, per-sample input shapes) -> whether its samples mix after
# that layer; the per-model tables are made under the lock (like ``layers.auto_layer``'s), and calls on one
# model fill its table one at a time (``state.model_lock``).
_mixing: WeakKeyDictionary[nn.Module, dict[tuple, bool]] = WeakKeyDictionary()
_mixing_lock = threading.Lock()


class CamContext:
    """One batch, one layer, K targets: the captured activation and, lazily, what methods need.

    Forward passes run under the caller's autocast (``precision``); the map arithmetic does not.
    The first forward runs at construction with the layer captured (the graph starts there).
    ``gradients`` costs one vectorized backward through the layers above the captured one;
    ``noisy_gradient_moments``, ``masked_scores`` and ``guided_input_gradients`` run extra
    forward passes, only for the methods that use them. With ``record_attention`` the first forward also
    records the attention probabilities (``attention_gradients``); with ``second_order`` the backward keeps
    its graph, so ``curvature`` can differentiate the gradients once more. The image is (B, C, H, W), or
    (B, C, T, H, W) for video; ``image_size`` is its grid, (H, W) or (T, H, W).
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
        upsampling: str = "bilinear",
        record_attention: bool = False,
        second_order: bool = False,
        copies: Tensor | None = None,
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
        self.upsampling = upsampling
        self.image = inputs[image_key]
        self.image_size = tuple(self.image.shape[2:])
        # maps are computed in float32 (also from low-precision activations), in float64 for a float64 image
        self.dtype = torch.float64 if self.image.dtype == torch.float64 else torch.float32
        self.target_count = len(targets)
        reader = layout.token_reader() if isinstance(layout, Layout) else None
        self._readers = {} if reader is None else {layer: reader}
        self.tiles = layout.tiles if isinstance(layout, Layout) else None
        self.second_order = second_order
        self._recorder = AttentionRecorder() if record_attention else None
        self._attention_from = 0
        with self._recorder or nullcontext(), self._marking_attention_below():
            self.scores, self._start, self._tokens, self._unreached = self._capture_pass(inputs)
        self.layout = as_layout(layout, self._start, self.image_size, layer)
        if self.tiles is not None:
            self.tiles.check(self._start.shape[0], self.image.shape[0], layer)
        self._copies = copies
        self._rows = None if copies is None else RowGroups(copies, self.tiles)
        if self._rows is not None:
            self.scores = summed(self.scores, copies, self._rows.count)
            self.tiles = self._rows.tiles
        self.activations = self._representatives(self.layout.to_grid(self._start.detach()).to(self.dtype))
        self._keep_graph = False

    def target_groups(self) -> Iterator[CamContext]:
        """This context split into groups of at most ``chunk_size`` targets, in order: each shares the forward
        (its graph kept for the next group) and gets its gradients from its own batched backward, so that what
        a method keeps per target (gradients B x k x C x grid) is held for one group at a time (a group is
        dropped when the next is made). Iterate it before anything is computed on this context."""
        for begin in chunk_starts(self.target_count, self.chunk_size):
            end = min(begin + self.chunk_size, self.target_count)
            group = copy.copy(self)
            group.targets, group.scores = self.targets[begin:end], self.scores[:, begin:end]
            group.target_count = end - begin
            group._unreached = [t for t in self._unreached if any(t is u for u in group.targets)]
            group._keep_graph = end < self.target_count
            yield group

    @contextmanager
    def _marking_attention_below(self) -> Iterator[None]:
        """While the first forward runs, note how many attention probabilities were recorded when the layer's
        output was produced: those were computed below the layer. Their ``requires_grad`` alone cannot tell,
        as a second graph start (the question's token layer) reaches the attention below the layer too."""
        if self._recorder is None:
            yield
            return

        thread = threading.get_ident()

        def mark(*_: object) -> None:
            if threading.get_ident() == thread:
                self._attention_from = len(self._recorder.probabilities)

        handle = self.model.get_submodule(self.layer).register_forward_hook(mark)
        try:
            yield
        finally:
            handle.remove()

    @property
    def samples(self) -> int:
        """The number of samples: the batch's rows, or the samples they copy."""
        return self.image.shape[0] if self._rows is None else self._rows.count

    def _representatives(self, values: Tensor) -> Tensor:
        """The layer's rows (N, ...), one per group of copies."""
        return values if self._rows is None else self._rows.representatives(values)

    def _merged(self, values: Tensor) -> Tensor:
        """The layer's rows (N, ...) summed per group of copies."""
        return values if self._rows is None else self._rows.merged(values)

    def _columns(self, output: Any) -> list[Tensor]:
        columns = []
        for target in self.targets:
            value = target(output)
            if not isinstance(value, Tensor) or value.ndim != 1:
                raise ValueError(
                    f"target {target.label(0)!r} must return one scalar per sample, a 1-D tensor; "
                    f"got {getattr(value, 'shape', type(value).__name__)}"
                )
            columns.append(value)
        return columns

    def _stack(self, columns: list[Tensor]) -> Tensor:
        """(N, K) scores; a non-finite one raises, naming its target."""
        scores = torch.stack(columns, dim=1)
        finite = torch.isfinite(scores.detach()).all(dim=0).tolist()
        if not all(finite):
            target = self.targets[finite.index(False)]
            raise ValueError(
                f"target {target.label(0)!r} scored inf or NaN; mmcam explains finite scores only: check the "
                "model's output and inputs (a log of 0, an overflow in half precision)"
            )
        return scores

    def score(self, output: Any) -> Tensor:
        """The (N, K) target scores of a forward output."""
        return self._stack(self._columns(output))

    def _capture_pass(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None, list[Target]]:
        """Scores, the captured layer's activation, the token layer's (None without one), and the
        targets whose score no gradient path joins to a captured layer."""
        layers = [self.layer] + ([self.token_layer] if self.token_layer else [])
        with LayerCapture(self.model, layers, self._readers) as capture:
            output = self._run(inputs)
        for layer in layers:
            if layer not in capture.activations:
                raise ValueError(f"layer '{layer}' did not run in the forward pass; pick one that does")
        columns = self._columns(output)
        unreached = [target for target, column in zip(self.targets, columns) if not column.requires_grad]
        start, tokens = capture.activations[self.layer], capture.activations.get(self.token_layer)
        return self._stack(columns), start, tokens, unreached

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

    def _require_reached(self) -> None:
        if self._unreached:
            raise ValueError(
                f"target {self._unreached[0].label(0)!r} does not depend on layer '{self.layer}': no gradient "
                "path joins them, so a gradient method has nothing to weigh; explain a layer the target is "
                "computed from (or layer='auto')"
            )

    def _row_samples(self) -> Tensor | None:
        """The sample of each row of the layer, where rows are not samples (None where they are)."""
        if self._rows is not None:
            return self._rows.samples
        return None if self.tiles is None else self.tiles.owners

    def _samples_mix(self, scores: Tensor, start: Tensor) -> bool:
        """Whether samples mix after the layer; checked once per model, forward function, layer and input shapes
        (on a batch of two or more)."""
        if scores.shape[0] < 2:
            return False
        shapes = tuple((k, tuple(v.shape[1:])) for k, v in self.inputs.items() if isinstance(v, Tensor))
        with _mixing_lock:
            known = _mixing.setdefault(self.model, {})
        key = (forward_identity(self.forward), self.layer, shapes)
        if key not in known:
            known[key] = mixes_samples(scores, start, self._row_samples())
            if known[key] and self._row_samples() is None:
                warn_user(
                    f"the scores of one sample depend on other samples after layer '{self.layer}' (batch "
                    "statistics, such as a BatchNorm kept in train mode): maps are computed per sample with "
                    "the others held fixed, at B times the backward cost; explain one sample per call to avoid it"
                )
        if known[key] and self._row_samples() is not None:
            raise ValueError(
                f"the scores of one image depend on other images after layer '{self.layer}' (batch statistics, "
                "such as a BatchNorm kept in train mode): explain one image per call"
            )
        return known[key]

    def _gradients(self, scores: Tensor, starts: list[Tensor], create_graph: bool = False) -> list[Tensor]:
        """Gradients at ``starts`` (first the layer), checked to be finite, from one vectorized backward."""
        self._require_reached()
        try:
            per_sample = self._samples_mix(scores, starts[0])
            gradients = target_gradients(
                scores, starts, self.chunk_size, per_sample, create_graph, self._keep_graph
            )
        except RuntimeError as error:
            if "checkpoint" not in str(error).lower() or ".grad()" not in str(error):
                raise
            raise ValueError(
                f"the model uses reentrant gradient checkpointing above layer '{self.layer}', which "
                "torch.autograd.grad cannot run through: turn it off for the call (Hugging Face: "
                "model.gradient_checkpointing_disable()) or use torch.utils.checkpoint(..., use_reentrant=False)"
            ) from error
        self._require_finite(gradients[0], "gradients at layer '" + self.layer + "'")
        return gradients

    def refuse_rows(self, what: str, tiles_too: bool = True) -> None:
        """Raise, for what needs one row per image (``what`` names it), where the batch's rows are copies of
        fewer samples (``copies``) or, with ``tiles_too``, the layer's rows tiles of the images."""
        if (tiles_too and self.tiles is not None) or self._rows is not None:
            raise ValueError(
                f"{what}, but the rows of layer '{self.layer}' are not the images (a row per tile of an image, "
                "or copies of one sample: a row per answer): use a gradient method, such as normgrad, gradcam "
                "or hirescam"
            )

    def _require_finite(self, values: Tensor, what: str) -> None:
        """Raise, naming the targets whose (B, K, ...) ``values`` hold inf or NaN.

        One target's infinite gradient can reach the others' through the shared graph (0 * inf), so
        all affected targets are named.
        """
        finite = torch.isfinite(values).flatten(2).all(dim=2).all(dim=0).tolist()
        if not all(finite):
            names = ", ".join(repr(t.label(0)) for t, ok in zip(self.targets, finite) if not ok)
            raise ValueError(
                f"target {names} has inf or NaN {what}; check the model for overflow (half "
                "precision) or operations without a gradient at this input (sqrt or log at 0)"
            )

    def _grid_gradients(self, scores: Tensor, start: Tensor) -> Tensor:
        return self.layout.to_grid(self._gradients(scores, [start])[0], leading=2).to(self.dtype)

    @cached_property
    def _clean_gradients(self) -> list[Tensor]:
        """Gradients at the layer, the token layer (if any) and the recorded attention probabilities (if
        recorded), from one vectorized backward (differentiable with ``second_order``)."""
        starts = [self._start] + ([self._tokens] if self._tokens is not None else []) + self._attentions
        return self._gradients(self.scores, starts, create_graph=self.second_order)

    @cached_property
    def gradients(self) -> Tensor:
        """G = d y_k / d A on the clean input: (B, K, C, *grid), in ``dtype`` (summed over copies). At tokens
        selected from a longer sequence, a target whose gradient is zero at all of them raises."""
        gradients = self._merged(
            self.layout.to_grid(self._clean_gradients[0].detach(), leading=2).to(self.dtype)
        )
        if isinstance(self._readers.get(self.layer), SelectedTokens):
            reached = gradients.transpose(0, 1).flatten(1).abs().amax(dim=1) > 0
            if not reached.all():
                target = self.targets[int((~reached).nonzero()[0])]
                raise ValueError(
                    f"target {target.label(0)!r} does not depend on the image's tokens at layer '{self.layer}' "
                    "(a causal language model's last block: its image positions reach no later token): "
                    "explain an earlier block"
                )
        return gradients

    @cached_property
    def curvature(self) -> Tensor:
        """H_k A, the Hessian of each target with respect to the activation times the activation itself:
        d (G_k . A) / dA with the A of the product held fixed, (B, K, C, *grid), in ``dtype``, from a second
        vectorized backward through the first one's graph (kept only with ``second_order``). Zero when G
        does not depend on A (targets linear in A above the layer, such as a ReLU network's logits)."""
        if not self.second_order:
            raise ValueError(
                "curvature differentiates the gradients' graph: build the context with second_order=True"
            )
        self.refuse_rows("ShapleyCAM differentiates each row's gradients again", tiles_too=False)
        products = (self._clean_gradients[0] * self._start.detach()[:, None]).flatten(2).sum(dim=2)  # (B, K)
        if not products.requires_grad:
            return torch.zeros_like(self.gradients)
        try:
            hvp = target_gradients(
                products, self._start, self.chunk_size, self._samples_mix(self.scores, self._start)
            )
        except RuntimeError as error:
            if "derivative for" not in str(error) and "differentiate twice" not in str(error):
                raise
            raise ValueError(
                f"an operation above layer '{self.layer}' has no second derivative ({str(error).splitlines()[0]}): "
                "for a fused attention kernel, load the model with attn_implementation='eager'; otherwise use a "
                "first-order method, such as gradcam"
            ) from error
        self._require_finite(hvp, "second derivatives at layer '" + self.layer + "'")
        return self.layout.to_grid(hvp, leading=2).to(self.dtype)

    @cached_property
    def token_weights(self) -> Tensor:
        """Gradient x input at the token layer, summed over features: (B, K, L) (e.g. question words)."""
        if self._tokens is None:
            raise ValueError("no token layer was given to weigh tokens")
        weights = (
            self._clean_gradients[1].to(self.dtype) * self._tokens.detach().to(self.dtype)[:, None]
        ).sum(dim=-1)
        return weights if self._copies is None else summed(weights, self._copies, self.samples)

    def _attention_run(self) -> list[Tensor]:
        """The self-attention probabilities (B, H, L, L) over the layer's L tokens that depend on the layer:
        the run of consecutive ones from the first (the blocks above the layer, up to where another
        sequence, such as a text decoder's, takes over)."""
        if self.layout.kind != "tokens" or self.layout.features_first:
            raise ValueError(
                f"attention relevance needs a transformer's token layer (B, L, C); layer '{self.layer}' is read "
                f"as '{self.layout.kind}': pick a token layer, such as a block's pre-attention norm"
            )
        self.refuse_rows("attention relevance reads each row's attention", tiles_too=False)
        if self._readers:
            raise ValueError(
                f"attention relevance needs each sample's attention over its tokens in the layer's order; layer "
                f"'{self.layer}' packs the batch's tokens in an order of its own (a vision tower attending per "
                "image or per window) or holds other tokens besides the image's: use a gradient method such as "
                "normgrad"
            )
        shape = (self._start.shape[0], self._start.shape[1], self._start.shape[1])
        run: list[Tensor] = []
        for probabilities in self._recorder.probabilities[self._attention_from :]:
            if not probabilities.requires_grad:
                continue  # on a branch the layer does not feed
            if (probabilities.shape[0], *probabilities.shape[-2:]) == shape:
                run.append(probabilities)
            elif run:
                break
        if not run:
            raise ValueError(
                f"no self-attention over the {shape[1]} tokens of layer '{self.layer}' ran after it: pick a layer "
                "below a transformer block (its pre-attention norm); attention computed by flash-attention "
                "kernels, or by nn.MultiheadAttention with bias_k, add_zero_attn or unbatched inputs, cannot be seen "
                "(load the model with attn_implementation='eager')"
            )
        return run

    @cached_property
    def _attentions(self) -> list[Tensor]:
        return [] if self._recorder is None else self._attention_run()

    @cached_property
    def attention_gradients(self) -> tuple[list[Tensor], list[Tensor]]:
        """The self-attention layers above the layer (``_attention_run``) up to the last one the targets
        depend on (the blocks above LLaVA's ``vision_feature_layer`` run, but nothing reads them):
        probabilities P_b (B, H, L, L) and their gradients dy_k/dP_b (B, K, H, L, L), in ``dtype``, from the same
        backward as ``gradients``."""
        if self._recorder is None:
            raise ValueError("attention probabilities were not recorded for this call")
        attentions = self._attentions
        gradients = [g.to(self.dtype) for g in self._clean_gradients[-len(attentions) :]]
        for gradient in gradients:
            self._require_finite(gradient, "attention gradients")
        read = [index for index, gradient in enumerate(gradients) if gradient.abs().amax() > 0]
        if not read:
            raise ValueError(
                f"the targets depend on none of the self-attention layers over the tokens of layer '{self.layer}': "
                "use a gradient method, such as normgrad"
            )
        last = read[-1] + 1
        return [p.detach().to(self.dtype) for p in attentions[:last]], gradients[:last]

    def noisy_gradient_moments(self, samples: int, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """Means of G, G^2, G^3 over ``samples`` copies of the image with Gaussian noise.

        The noise std is ``sigma`` times each image's value range; the generator is seeded, so
        the result is reproducible.
        """
        self.refuse_rows("noise would differ between the copies of a sample", tiles_too=False)
        generator = torch.Generator(device=self.image.device).manual_seed(0)
        flat = self.image.flatten(1)
        span = (flat.amax(dim=1) - flat.amin(dim=1)).reshape(-1, *[1] * (self.image.ndim - 1))
        moments = [0.0, 0.0, 0.0]
        for _ in range(samples):
            noise = torch.randn(self.image.shape, generator=generator, device=self.image.device)
            noisy = self.image + (sigma * span * noise).to(self.image.dtype)
            scores, start, _, _ = self._capture_pass(self._with_image(noisy))
            g = self._grid_gradients(scores, start)
            moments = [moments[0] + g, moments[1] + g**2, moments[2] + g**3]
        return tuple(m / samples for m in moments)

    def masked_scores(self, masks: Tensor, batch_size: int, fill: Tensor | None = None) -> Tensor:
        """Scores of the image under each mask: (B, M, *grid) masks -> (B, M, K), ``batch_size`` rows a
        forward. The masked image is x * m, or x * m + f * (1 - m) with ``fill`` f (B, C, *grid)."""
        self.refuse_rows("this method masks the images with its maps")
        batch, count = masks.shape[:2]
        per_forward = max(1, batch_size // batch)
        chunks = []
        with torch.no_grad():
            for begin in range(0, count, per_forward):
                chunk = masks[:, begin : begin + per_forward].to(self.image.dtype)[:, :, None]
                images = self.image[:, None] * chunk
                if fill is not None:
                    images = images + fill[:, None].to(self.image.dtype) * (1 - chunk)
                scores = self.score(self._run(self._with_image(images.transpose(0, 1).flatten(0, 1))))
                chunks.append(scores.reshape(chunk.shape[1], batch, -1))
        return torch.cat(chunks).transpose(0, 1).to(self.dtype)

    def dropped_scores(self, cells: Tensor, batch_size: int) -> Tensor:
        """Scores with the tokens of each window of ``cells`` (n, h, w; 0/1 on the layer's token grid, as many
        cells each) dropped from the sequence where the model makes it (``token_drop``): (B, n, K),
        ``batch_size`` rows a forward. Needs a layer laid out as (prefix + h*w, C) tokens per sample."""
        self.refuse_rows("tokens are dropped from each image's sequence")
        layout = self.layout
        if layout.kind != "tokens" or layout.features_first or layout.token_reader() or self.tiles:
            raise ValueError(
                f"dropping tokens needs a layer whose output is each image's tokens (prefix + h*w, C), such as "
                f"a ViT block's, not layer '{self.layer}': use a fill, such as background"
            )
        name = token_source(self.model, lambda: self._run(self.inputs), tuple(self._start.shape))
        batch, kept = self.image.shape[0], kept_tokens(cells, layout.prefix)
        per_forward = max(1, batch_size // batch)
        chunks = []
        with torch.no_grad():
            for begin in range(0, len(kept), per_forward):
                chunk = kept[begin : begin + per_forward]
                images = self.image.repeat(len(chunk), *[1] * (self.image.ndim - 1))
                try:
                    with dropping(self.model.get_submodule(name), chunk, batch):
                        scores = self.score(self._run(self._with_image(images)))
                except ValueError as error:
                    raise ValueError(
                        f"the model does not run with tokens dropped from the output of '{name}' ({error}): "
                        "use a fill, such as background"
                    ) from error
                chunks.append(scores.reshape(len(chunk), batch, -1))
        return torch.cat(chunks).transpose(0, 1).to(self.dtype)

    def ablated_scores(self, batch_size: int, channel_sets: list[list[int]] | None = None) -> Tensor:
        """Scores with channels of the layer's output set to zero: (B, S, K), one column per set of
        ``channel_sets`` (default: each channel alone, S = C), the model run on ``batch_size`` rows a
        forward (copies of the batch, each with another set zeroed). When the image is the model's only
        input and the layer does not pack its tokens, the layers below the explained one run once per
        forward, on the batch itself, and the layer's output is copied; otherwise the inputs are copied. At a
        layer read at selected tokens (a language model's, at the image's tokens) only those tokens are zeroed."""
        self.refuse_rows("units are zeroed in each image's rows", tiles_too=False)
        batch, channels = self.image.shape[0], self.activations.shape[1]  # the layer's rows may be tiles
        sets = channel_sets if channel_sets is not None else [[c] for c in range(channels)]
        per_forward = max(1, batch_size // batch)
        module = self.model.get_submodule(self.layer)
        copy_at_layer = set(self.inputs) == {self.image_key} and not self._readers
        reader = self._readers.get(self.layer)
        # at a language layer, the units are the channels at the image's tokens, and only those are zeroed
        positions = reader.positions if isinstance(reader, SelectedTokens) else None
        chunks = []
        with torch.no_grad():
            for begin in range(0, len(sets), per_forward):
                chunk = sets[begin : begin + per_forward]
                hook = channel_zeroing(chunk, channels, self.layout.channel_axis(), copy_at_layer, positions)
                handle = module.register_forward_hook(hook)
                try:
                    copies = 1 if copy_at_layer else len(chunk)
                    images = self.image.repeat(copies, *[1] * (self.image.ndim - 1))
                    scores = self.score(self._run(self._with_image(images)))
                finally:
                    handle.remove()
                chunks.append(scores.reshape(len(chunk), batch, -1))
        return torch.cat(chunks).transpose(0, 1).to(self.dtype)

    @cached_property
    def full_gradients(self) -> tuple[Tensor, list[Tensor]]:
        """FullGrad's parts, from one more forward and one vectorized backward: the input-gradient
        x * dy_k/dx (B, K, C_in, *grid) and, for every run of a convolution or batch norm with a bias b
        (``biases.channel_biases``), the bias-gradient b * dy_k/dz at its output z (B, K, C, *its grid);
        in ``dtype``."""
        self.refuse_rows("FullGrad adds maps on the images' pixels")
        biases = channel_biases(self.model, len(self.image_size))
        image = self.image.detach().clone().requires_grad_(True)
        with bias_outputs(biases) as outputs:
            scores = self.score(self._run({**self.inputs, self.image_key: image}))
        if not scores.requires_grad:
            raise ValueError(
                f"FullGrad differentiates the targets with respect to the image '{self.image_key}', and no "
                "gradient path joins them (the model detaches or quantizes its input): use a layer method, "
                "such as gradcam"
            )
        starts = [image] + [output for _, output in outputs]
        gradients = target_gradients(scores, starts, self.chunk_size)
        self._require_finite(gradients[0], "gradients at the input")
        shape = [-1] + [1] * len(self.image_size)  # a bias per channel, broadcast over the grid
        return gradients[0].to(self.dtype) * image.detach().to(self.dtype)[:, None], [
            bias.to(self.dtype).reshape(shape) * gradient.to(self.dtype)
            for (bias, _), gradient in zip(outputs, gradients[1:])
        ]

    @cached_property
    def guided_input_gradients(self) -> Tensor:
        """Guided-backpropagation gradients of each target w.r.t. the image: (B, K, C_in, *grid)."""
        self.refuse_rows("guided methods draw on the images' pixels")
        image = self.image.detach().clone().requires_grad_(True)
        with guided_relus(self.model):
            output = self._run({**self.inputs, self.image_key: image})
        gradients = target_gradients(self.score(output), image, self.chunk_size).to(self.dtype)
        self._require_finite(gradients, "guided gradients at the input")
        return gradients
