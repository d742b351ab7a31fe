"""Turn a layer's activation into a spatial grid (..., C, h, w), whatever its layout."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class Layout:
    """How one sample's activation is laid out.

    ``"nchw"``: (C, h, w), CNNs. ``"nhwc"``: (h, w, C), Swin and ConvNeXt blocks.
    ``"tokens"``: (prefix + h*w, C), transformers: ``prefix`` leading tokens (CLS, distillation,
    registers) then a row-major patch grid of ``grid = (h, w)``, which need not be square.
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("nchw", "nhwc", "tokens"):
            raise ValueError(f"unknown layout '{self.kind}'; use 'nchw', 'nhwc' or 'tokens'")
        if self.kind == "tokens" and self.grid is None:
            raise ValueError("a token layout needs its patch grid: Layout('tokens', prefix=1, grid=(h, w))")

    def to_grid(self, x: Tensor) -> Tensor:
        """(..., <one sample>) -> (..., C, h, w): leading dimensions (batch, targets) are kept."""
        if self.kind == "nchw":
            return x
        if self.kind == "nhwc":
            return x.movedim(-1, -3)
        h, w = self.grid
        patches = x[..., self.prefix :, :]
        if patches.shape[-2] != h * w:
            raise ValueError(
                f"token layout expects {self.prefix} prefix + {h}x{w} patch tokens, got {x.shape[-2]} tokens"
            )
        return patches.reshape(*x.shape[:-2], h, w, x.shape[-1]).movedim(-1, -3)


def _same_aspect(h: int, w: int, image_size: tuple[int, int]) -> bool:
    """Whether an h x w grid covers an H x W image, up to one cell of rounding."""
    height, width = image_size
    return h >= 1 and w >= 1 and abs(h * width - w * height) <= max(height, width)


def _token_grid(tokens: int, image_size: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
    """The fewest prefix tokens that leave a patch grid with the image's aspect ratio."""
    height, width = image_size
    for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        cells = tokens - prefix
        h = max(1, round(math.sqrt(cells * height / width)))
        for rows in (h - 1, h, h + 1):
            if rows >= 1 and cells % rows == 0 and _same_aspect(rows, cells // rows, image_size):
                return prefix, (rows, cells // rows)
    return None


def infer_layout(activation: Tensor, image_size: tuple[int, int], strict: bool = True) -> Layout | None:
    """Guess the layout of a batched activation (B, ...) from its shape and the input image size.

    4-D: NCHW when (d2, d3) has the image's aspect ratio, else NHWC when (d1, d2) has it.
    3-D: tokens, with the fewest prefix tokens that leave a grid of the image's aspect ratio.
    Returns None (or raises, when ``strict``) otherwise.
    """
    shape = tuple(activation.shape[1:])
    layout = None
    if len(shape) == 3:
        if _same_aspect(shape[1], shape[2], image_size):
            layout = Layout("nchw")
        elif _same_aspect(shape[0], shape[1], image_size):
            layout = Layout("nhwc")
    elif len(shape) == 2 and shape[0] >= 2:
        found = _token_grid(shape[0], image_size)
        if found is not None:
            layout = Layout("tokens", prefix=found[0], grid=found[1])
    if layout is None and strict:
        raise ValueError(
            f"cannot tell the layout of an activation of shape {tuple(activation.shape)} for a "
            f"{image_size[0]}x{image_size[1]} input; pass layout='nchw', 'nhwc' or "
            "Layout('tokens', prefix=P, grid=(h, w))"
        )
    return layout


def as_layout(spec: str | Layout, activation: Tensor, image_size: tuple[int, int]) -> Layout:
    """A Layout from the user's spec: ``"auto"``, ``"nchw"``, ``"nhwc"``, ``"tokens"`` or a Layout."""
    if isinstance(spec, Layout):
        return spec
    if spec == "auto":
        return infer_layout(activation, image_size)
    if spec == "tokens":
        inferred = infer_layout(activation, image_size)
        if inferred.kind != "tokens":
            raise ValueError(f"activation of shape {tuple(activation.shape)} is not a token sequence")
        return inferred
    return Layout(spec)
