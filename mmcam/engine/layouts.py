"""Turn a layer's activation into a spatial grid (..., C, h, w) or, for video, (..., C, t, h, w)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

from mmcam.engine.capture import PackedTokens, SelectedTokens, TokenReader
from mmcam.engine.tiles import Tiles
from mmcam.engine.warn import warn_user

MAX_PREFIX_TOKENS = 16
_ALIASES = {"ncthw": "nchw", "nthwc": "nhwc"}


@dataclass(frozen=True)
class Layout:
    """How one sample's activation is laid out.

    ``"nchw"``: (C, h, w), CNNs; for video and volumes (C, t, h, w) (alias ``"ncthw"``).
    ``"nhwc"``: (h, w, C), Swin and ConvNeXt blocks; (t, h, w, C) for video (alias ``"nthwc"``).
    ``"tokens"``: (prefix + h*w, C), transformers: ``prefix`` leading tokens (CLS, distillation,
    registers) then a row-major patch grid of ``grid = (h, w)``, which need not be square. With
    ``features_first=True`` the sequence runs along the last axis instead: (C, prefix + h*w).
    ``packed`` (tokens only): for a layer whose output packs the tokens of every sample into one sequence
    (N, C) without a batch axis, in an order of the model's own (Qwen2-VL's vision tower), a (B, h*w)
    index: the row of the layer's output that holds sample b's token of grid cell l (row-major). The
    output is then read through it as (B, h*w, C) (``capture.PackedTokens``) and laid out as above.
    ``selected`` (tokens only): for a layer whose sequences (B, S, C) hold other tokens besides the grid's
    (a language model's hidden states), a (B, h*w) index: the position of sample b's token of grid cell l
    (``capture.SelectedTokens``).
    ``tiles``: for a layer whose rows are tiles of the images (N rows for B images, ``tiles.Tiles``): each
    row is laid out as above and gets a map of its own, and each image's map is stitched from its tiles'.
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None
    features_first: bool = False
    packed: Tensor | None = field(default=None, compare=False, repr=False)
    selected: Tensor | None = field(default=None, compare=False, repr=False)
    tiles: Tiles | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _ALIASES.get(self.kind, self.kind))
        if self.kind not in ("nchw", "nhwc", "tokens"):
            raise ValueError(f"unknown layout '{self.kind}'; use 'nchw', 'nhwc' or 'tokens'")
        if self.kind == "tokens" and self.grid is None:
            raise ValueError("a token layout needs its patch grid: Layout('tokens', prefix=1, grid=(h, w))")
        for name in ("packed", "selected"):
            index = getattr(self, name)
            if index is not None and (
                self.kind != "tokens" or self.prefix or tuple(index.shape[1:]) != (math.prod(self.grid),)
            ):
                raise ValueError(
                    f"a {name} layout reads patch tokens only, one per grid cell: {name} (B, h*w)"
                )
        if sum(part is not None for part in (self.packed, self.selected, self.tiles)) > 1:
            raise ValueError("a layout reads packed tokens, selected tokens or tiles, only one of them")

    def token_reader(self) -> TokenReader | None:
        """How the layer's output is read as (B, h*w, C) grid tokens, when it is not laid out by sample."""
        if self.packed is not None:
            return PackedTokens(self.packed)
        if self.selected is not None:
            return SelectedTokens(self.selected)
        return None

    def sample_rank(self, spatial: int) -> int:
        """The number of dimensions of one sample's activation for an input with ``spatial`` grid axes."""
        return 2 if self.kind == "tokens" else spatial + 1

    def check(self, activation: Tensor, spatial: int, layer: str) -> None:
        """Raise a layout message when ``activation`` (B, ...) cannot be read this way."""
        expected = self.sample_rank(spatial)
        if self.kind == "tokens" and spatial != 2:
            raise ValueError(
                "token layouts cover images; for video use layout='nchw' or 'nhwc' on a (B, C, t, h, w) layer"
            )
        if activation.ndim - 1 != expected:
            shapes = {"nchw": "(B, C, h, w)", "nhwc": "(B, h, w, C)", "tokens": "(B, L, C)"}
            wanted = shapes[self.kind] if spatial == 2 else f"a batch of {expected}-D samples"
            raise ValueError(
                f"layout '{self.kind}' expects {wanted} activations, but layer '{layer}' gives "
                f"{tuple(activation.shape)}; pass layout='auto' or the layout that fits"
            )

    def channel_axis(self) -> int:
        """The axis of a batched activation (B, ...) that holds its channels (features)."""
        if self.kind == "nchw":
            return 1
        return -2 if self.features_first else -1

    def to_grid(self, x: Tensor, leading: int = 1) -> Tensor:
        """(<leading dims>, <one sample>) -> (<leading dims>, C, *grid): leading dims (batch, targets) are kept."""
        if self.kind == "nchw":
            return x
        if self.kind == "nhwc":
            return x.movedim(-1, leading)
        if self.features_first:
            x = x.transpose(-2, -1)
        h, w = self.grid
        patches = x[..., self.prefix :, :]
        if patches.shape[-2] != h * w:
            raise ValueError(
                f"token layout expects {self.prefix} prefix + {h}x{w} patch tokens, got {x.shape[-2]} tokens"
            )
        return patches.reshape(*x.shape[:-2], h, w, x.shape[-1]).movedim(-1, -3)


def _same_aspect(h: int, w: int, image_size: tuple[int, ...]) -> bool:
    """Whether an h x w grid covers the input's last two axes (H x W), up to one cell of rounding."""
    height, width = image_size[-2:]
    return h >= 1 and w >= 1 and abs(h * width - w * height) <= max(height, width)


def _fits_time(grid: tuple[int, ...], image_size: tuple[int, ...]) -> bool:
    """For video, whether a grid (t, h, w) has no more frames than the input (layers do not add frames)."""
    return len(image_size) == 2 or 1 <= grid[0] <= image_size[0]


def _token_grid(tokens: int, image_size: tuple[int, ...], max_prefix: int = MAX_PREFIX_TOKENS):
    """The fewest prefix tokens that leave a patch grid with the image's aspect ratio, or None."""
    height, width = image_size
    for prefix in range(min(max_prefix, tokens - 1) + 1):
        cells = tokens - prefix
        h = max(1, round(math.sqrt(cells * height / width)))
        for rows in (h - 1, h, h + 1):
            if rows >= 1 and cells % rows == 0 and _same_aspect(rows, cells // rows, image_size):
                return prefix, (rows, cells // rows)
    return None


def layout_readings(activation: Tensor, image_size: tuple[int, ...]) -> list[Layout]:
    """Every layout that fits a batched activation's shape for this input size, the preferred first.

    Grids (B, C, *g) or (B, *g, C), with g as many axes as the input's (two for images, three for
    video), fit when g's last two axes have the input's aspect ratio (and, for video, g has no more
    frames than the input); channels-first is preferred.
    Token sequences (B, L, C) of images fit with the fewest prefix tokens that leave such a grid;
    a prefix-free sequence whose last axis also makes a grid reads as (B, C, L) too.
    """
    shape = tuple(activation.shape[1:])
    spatial = len(image_size)
    readings = []
    if len(shape) == spatial + 1:
        if _same_aspect(shape[-2], shape[-1], image_size) and _fits_time(shape[1:], image_size):
            readings.append(Layout("nchw"))
        if _same_aspect(shape[-3], shape[-2], image_size) and _fits_time(shape[:-1], image_size):
            readings.append(Layout("nhwc"))
    elif len(shape) == 2 and spatial == 2 and shape[0] >= 2:
        found = _token_grid(shape[0], image_size)
        if found is not None:
            readings.append(Layout("tokens", prefix=found[0], grid=found[1]))
        flipped = _token_grid(shape[1], image_size, max_prefix=0)
        if flipped is not None and (found is None or found[0] == 0):
            readings.append(Layout("tokens", prefix=0, grid=flipped[1], features_first=True))
    return readings


def infer_layout(activation: Tensor, image_size: tuple[int, ...], strict: bool = True) -> Layout | None:
    """The preferred layout of a batched activation (B, ...) for the input size (see ``layout_readings``).

    Returns None (or raises, when ``strict``) when no layout fits.
    """
    readings = layout_readings(activation, image_size)
    if not readings and strict:
        raise ValueError(
            f"cannot tell the layout of an activation of shape {tuple(activation.shape)} for a "
            f"{'x'.join(map(str, image_size))} input; pass layout='nchw', 'nhwc' or "
            "Layout('tokens', prefix=P, grid=(h, w))"
        )
    return readings[0] if readings else None


def _describe(layout: Layout) -> str:
    if layout.kind != "tokens":
        return f"layout='{layout.kind}'"
    flags = ", features_first=True" if layout.features_first else ""
    return f"layout=Layout('tokens', prefix={layout.prefix}, grid={layout.grid}{flags})"


def _auto_layout(activation: Tensor, image_size: tuple[int, ...], layer: str) -> Layout:
    """The inferred layout; a warning that names both readings when the shape fits two."""
    readings = layout_readings(activation, image_size)
    layout = infer_layout(activation, image_size)
    if len(readings) > 1:
        warn_user(
            f"layer '{layer}' gives {tuple(activation.shape)}, which reads as {_describe(readings[0])} or as "
            f"{_describe(readings[1])}; mmcam used the first: pass layout= explicitly to choose (and silence this)"
        )
    return layout


def as_layout(
    spec: str | Layout, activation: Tensor, image_size: tuple[int, ...], layer: str = "the layer"
) -> Layout:
    """A Layout that fits ``activation``, from the user's spec: ``"auto"``, ``"nchw"``, ``"nhwc"``,
    ``"ncthw"``, ``"nthwc"``, ``"tokens"`` or a Layout."""
    if spec == "auto":
        return _auto_layout(activation, image_size, layer)
    if spec == "tokens":
        layout = infer_layout(activation, image_size, strict=False)
        if layout is None or layout.kind != "tokens":
            raise ValueError(
                f"layer '{layer}' gives {tuple(activation.shape)}, not a token sequence (B, L, C) with a patch "
                "grid; pass Layout('tokens', prefix=P, grid=(h, w)) or another layout"
            )
    else:
        layout = spec if isinstance(spec, Layout) else Layout(spec)
    layout.check(activation, len(image_size), layer)
    return layout
