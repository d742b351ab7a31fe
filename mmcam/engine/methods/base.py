"""The method contract. Notation: A (B, C, h, w) activations of the layer, G = dy/dA (B, K, C, h, w) for
K targets y per sample; ij runs over the layer's grid cells ((t, h, w) for video: every formula sums or
averages over all grid axes alike). A method returns the signed map before its final ReLU (B, K, h, w)
and, where it has them, the per-channel importance weights (B, K, C) that name neurons in textual
explanations; ``CamResult.raw`` applies the ReLU each formula ends with.

A method is one subclass of ``CamMethod`` with a ``name``, a docstring stating its formula, a one-line
``summary`` and ``paper`` for the method table, and its capabilities declared as class attributes; defining
it registers it in ``METHODS``, from which the command line's choices, the capability lists and the table
of ``docs/methods.md`` are derived."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from mmcam.engine.evidence import first_order, spread
from mmcam.engine.methods.components import first_component

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext

# name -> class, in the order the classes were defined (the families' modules are imported in a fixed order)
METHODS: dict[str, type[CamMethod]] = {}

CAPABILITIES = ("channel_weights", "second_order", "reads_attention", "needs_gradients", "perturbation")


@dataclass
class CamResult:
    """``signed``: the map before the final ReLU; ``raw``: ReLU(signed), the map the formulas define."""

    signed: Tensor
    weights: Tensor | None = None

    @property
    def raw(self) -> Tensor:
        return torch.relu(self.signed)


class CamMethod:
    """A CAM method: ``method(ctx)`` maps a ``CamContext`` to a ``CamResult``.

    Capabilities (class attributes, read by the engine and the command line):
    ``channel_weights``: the map is ReLU(sum_c w_kc A_c) (or built from it) and the weights w (B, K, C) come
    back: they name units (``--concepts``) and allow eigen smoothing. ``second_order``: the context keeps the
    backward's graph for ``ctx.curvature``. ``reads_attention``: the context records the attention
    probabilities above the layer. ``needs_gradients``: the method differentiates the targets (a target
    that does not depend on the layer is an error). ``perturbation``: the method runs forwards on altered
    copies of the input (masked, ablated, occluded), so its cost grows with the copies, not the targets.
    ``map_in_score_units``: the map's cells are first-order contributions to the score (not bounds on
    them, which cancellations make loose: LayerCAM, NormGrad), so the map's own sum says how much of the
    score it accounts for (``evidence``).
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # the map in a line, for the method table
    paper: ClassVar[str]  # where the formula comes from
    peers: ClassVar[str] = ""  # the peers that ship it and how closely mmcam agrees (tests/test_reference.py)
    channel_weights: ClassVar[bool] = False
    second_order: ClassVar[bool] = False
    reads_attention: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = True
    perturbation: ClassVar[bool] = False
    # reads only G and A of its own targets: the engine may explain the targets a group of ``chunk_size`` at a
    # time, each group's gradients freed before the next (not a capability of the table: a cost bound)
    per_target: ClassVar[bool] = False
    map_in_score_units: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in METHODS:
                raise ValueError(f"two methods are named '{cls.name}'")
            missing = [field for field in ("summary", "paper") if field not in cls.__dict__]
            if missing or not cls.__doc__:
                raise TypeError(f"method '{cls.name}' needs a formula docstring, a summary and a paper")
            METHODS[cls.name] = cls

    def __call__(self, ctx: CamContext) -> CamResult:
        raise NotImplementedError

    def evidence(self, ctx: CamContext, result: CamResult) -> Tensor | None:
        """How much of each target's score the map accounts for, (B, K) in the score's units
        (``engine.evidence``): E = sum_ij (L_kij - min L_k) of the map itself where ``map_in_score_units``,
        else ``layer_evidence``."""
        return spread(result.raw) if self.map_in_score_units else self.layer_evidence(ctx)

    def layer_evidence(self, ctx: CamContext) -> Tensor | None:
        """E of HiResCAM's map at the layer, the target's first-order evidence there, for a method that reads
        the gradients; None for one that does not (its map is then judged only on being constant)."""
        return first_order(ctx) if self.needs_gradients else None

    def unit_contributions(self, ctx: CamContext, result: CamResult) -> Tensor | None:
        """Each channel's part in each target's score, (B, K, C), what the sentences of ``mmcam.concepts`` rank
        units by: x_kc = w_kc mean_ij A_cij, the method's channel weight times the channel's mean activation;
        None without channel weights."""
        if result.weights is None:
            return None
        means = ctx.activations.flatten(2).mean(-1)[:, None]  # (B, 1, C)
        return result.weights * means.to(result.weights.device, result.weights.dtype)

    def eigen_smoothed(self, ctx: CamContext) -> CamResult:
        """The map with the sum over channels replaced by their first principal component (``--eigen-smooth``);
        only methods with channel weights have one."""
        raise ValueError(
            f"eigen smoothing needs a method with channel weights, not {self.name}: one of "
            + ", ".join(capable("channel_weights"))
        )


class ChannelWeightCAM(CamMethod):
    """The CAM template (pytorch-grad-cam's ``BaseCAM.get_cam_weights``): a method says how it weighs the
    channels, ``weights(ctx)`` (B, K, C); the map is L_k = ReLU(sum_c w_kc A_c)."""

    channel_weights = True

    def weights(self, ctx: CamContext) -> Tensor:
        raise NotImplementedError

    def __call__(self, ctx: CamContext) -> CamResult:
        weights = self.weights(ctx)
        return CamResult(weighted_activations(weights, ctx.activations), weights)

    def eigen_smoothed(self, ctx: CamContext) -> CamResult:
        """pytorch-grad-cam's ``eigen_smooth``: in place of the sum over channels of the weighted activations
        w_kc A_c, their first principal component over the channels, per sample and target
        (``first_component``), signed to correlate with the sum: L_k = ReLU(first component of {w_kc A_c}_c).
        It keeps the map's dominant pattern and drops the rest (noise, in the authors' words)."""
        result = self(ctx)
        activations = ctx.activations
        weights = result.weights.reshape(*result.weights.shape, *[1] * (activations.ndim - 2))
        weighted = (weights * activations[:, None]).flatten(0, 1)  # (B K, C, *grid)
        projection = first_component(weighted, result.signed.flatten(0, 1))
        return CamResult(projection.reshape(result.signed.shape), result.weights)


def grid_axes(x: Tensor, first: int) -> tuple[int, ...]:
    """The grid axes of ``x``: every axis from ``first`` on (2 for A, 3 for G)."""
    return tuple(range(first, x.ndim))


def weighted_activations(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_c w_kc A_c: (B, K, C) weights and (B, C, *grid) activations -> (B, K, *grid)."""
    return torch.einsum("bkc,bc...->bk...", weights, activations)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1), 0)


def capable(capability: str) -> tuple[str, ...]:
    """The names of the methods that declare ``capability`` (one of ``CAPABILITIES``)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability '{capability}'; one of {', '.join(CAPABILITIES)}")
    return tuple(name for name, method in METHODS.items() if getattr(method, capability))


def _key(name: str) -> str:
    return name.lower().replace("plusplus", "++").replace("_", "").replace("-", "").replace(" ", "")


def get_method(method: str | CamMethod, **options) -> CamMethod:
    """A method instance from its name (case, '-' and '_' ignored; 'plusplus' = '++'), built with ``options``
    (its constructor's keywords, such as occlusion's ``window``), or an instance (taken as it is)."""
    if isinstance(method, CamMethod):
        if options:
            raise ValueError(f"{method.name} is already built: give its options to its constructor")
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"a method is a name or a mmcam.engine.methods.CamMethod instance, not {type(method).__name__}"
        )
    by_key = {_key(name): cls for name, cls in METHODS.items()}
    if _key(method) not in by_key:
        raise ValueError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    return by_key[_key(method)](**options)
