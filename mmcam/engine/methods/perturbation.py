"""Perturbation methods: no gradient, no layer weights; the map is how each target's score changes when
regions of the input are filled, each filling a copy of the input. One machinery serves them all
(``CamContext.masked_scores``): the copies of a batch run in chunked forwards of ``batch_size`` rows, and
every target of an input is read from the same forwards, so the cost is (copies x images) / batch_size
forwards whatever the number of targets."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur
from tqdm import tqdm

from mmcam.engine.evidence import span
from mmcam.engine.methods.base import CamMethod, CamResult

if TYPE_CHECKING:
    from mmcam.engine.context import CamContext

FILLS = ("background", "blur", "mean", "zero")
DROP = "drop"  # occlusion on token layers: the window's tokens leave the sequence (engine.token_drop)


def filling(image: Tensor, fill: str | float | Tensor) -> Tensor:
    """What fills an occluded region of ``image`` (B, C, H, W): an image of the same shape.

    ``"background"``: each image's per-channel median over its frame (the outermost rows and columns of
    pixels), a background estimate where the objects do not fill the edges; ``"mean"``: each image's
    per-channel mean; ``"zero"``: 0; ``"blur"``: the image blurred by a Gaussian of standard deviation
    3 px at 84 px, scaled to the image's shorter side (Greydanus et al.'s); a number or a tensor that
    broadcasts to the image: that baseline.
    """
    if isinstance(fill, (int, float, Tensor)):
        return torch.as_tensor(fill, dtype=image.dtype, device=image.device).expand_as(image)
    if fill == "zero":
        return torch.zeros_like(image)
    if fill == "mean":
        return image.mean(dim=(2, 3), keepdim=True).expand_as(image)
    if fill == "background":
        frame = torch.cat([image[..., 0, :], image[..., -1, :], image[..., 0], image[..., -1]], dim=-1)
        return frame.median(dim=-1).values[..., None, None].expand_as(image)
    if fill == "blur":
        sigma = 3 * min(image.shape[-2:]) / 84
        kernel = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur(
            image.to(torch.promote_types(image.dtype, torch.float32)), [kernel, kernel], [sigma, sigma]
        )
    raise ValueError(f"unknown fill '{fill}'; use one of {', '.join(FILLS)}, a number or a baseline tensor")


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive number of cells or a pair of them, got {value}")
    return pair


def cell_edges(length: int, cells: int) -> Tensor:
    """The pixel edges of ``cells`` equal cells along a side of ``length`` pixels: (cells + 1,)."""
    return torch.round(torch.arange(cells + 1) * length / cells).long()


def window_starts(cells: int, window: int, stride: int) -> list[int]:
    """The first cell of each window along a side: every ``stride`` cells until the window reaches the end,
    the last one cut at the edge where the stride overshoots (captum's ``Occlusion`` convention)."""
    return [i * stride for i in range(math.ceil(max(cells - window, 0) / stride) + 1)]


def _image_grid(ctx: CamContext, what: str) -> tuple[int, int]:
    if len(ctx.image_size) != 2:
        raise ValueError(f"{what} explains images; for video use a CAM method")
    return ctx.image_size


class Occlusion(CamMethod):
    """Occlusion (Zeiler & Fergus, arXiv 1311.2901): a window slides over the image's grid of cells; the map
    is the drop of each target's score when the window is filled, averaged over the windows that cover a cell.

    W_p: the cells of window p (``window`` cells a side, every ``stride`` cells);  x_p = x outside W_p, f
    inside (``fill``: ``filling``);  D_kp = y_k(x) - y_k(x_p);  L_kij = sum_{p: ij in W_p} D_kp / #{p: ij in W_p}.
    ``fill="drop"`` on a token layer: x_p is x, and the tokens of W_p are dropped from the sequence where the
    model makes it (``engine.token_drop``), for models that run on fewer tokens (ViT-family towers).
    The cells are those of the explained layer's grid (a token model's patches; a CNN's layer cells, each
    some pixels a side), or ``cell`` pixels a side when given (``cell=1``: window and stride in pixels).
    Signed (a cell whose filling raises the score is negative). P windows of B images take P B / batch_size
    forwards for all K targets together, the masks built ``chunk`` windows at a time; no gradient.
    """

    name = "occlusion"
    summary = (
        "the drop of each target's score when a window of cells is filled (per-image background, blur, mean, "
        "zero or a baseline), averaged over the windows covering each cell; all targets from the same forwards"
    )
    paper = "Zeiler & Fergus, arXiv 1311.2901"
    peers = "captum (Occlusion: 1e-5 with the same window, stride and baseline)"
    needs_gradients = False
    perturbation = True

    def __init__(
        self,
        window: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        fill: str | float | Tensor = "background",
        cell: int | None = None,
        batch_size: int = 64,
        chunk: int = 256,
    ):
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride")
        if isinstance(fill, str) and fill not in (*FILLS, DROP):
            raise ValueError(
                f"unknown fill '{fill}'; use one of {', '.join(FILLS)}, {DROP}, a number or a baseline tensor"
            )
        if fill == DROP and cell is not None:
            raise ValueError(
                "fill='drop' drops the layer's tokens: its cells are the token grid, give no cell"
            )
        self.fill = fill
        self.cell = cell
        self.batch_size = batch_size
        self.chunk = chunk

    def _grid(self, ctx: CamContext) -> tuple[int, int]:
        height, width = _image_grid(ctx, "occlusion")
        if self.cell is None:
            return tuple(ctx.activations.shape[2:])
        return math.ceil(height / self.cell), math.ceil(width / self.cell)

    def __call__(self, ctx: CamContext) -> CamResult:
        height, width = _image_grid(ctx, "occlusion")
        rows, columns = self._grid(ctx)
        if self.window[0] > rows or self.window[1] > columns:
            raise ValueError(f"the window {self.window} is larger than the grid of cells ({rows}, {columns})")
        starts = [
            (top, left)
            for top in window_starts(rows, self.window[0], self.stride[0])
            for left in window_starts(columns, self.window[1], self.stride[1])
        ]
        edges = cell_edges(height, rows), cell_edges(width, columns)
        fill = None if self.fill == DROP else filling(ctx.image, self.fill)
        clean = ctx.scores.detach().to(ctx.activations.dtype)[:, None]
        total, covered = 0.0, 0.0
        for begin in progress(ctx, len(starts), self.chunk, self.batch_size, "occlusion"):
            chunk = starts[begin : begin + self.chunk]
            cells = torch.zeros(
                len(chunk), rows, columns, dtype=ctx.activations.dtype, device=ctx.image.device
            )
            for index, (top, left) in enumerate(chunk):
                cells[index, top : top + self.window[0], left : left + self.window[1]] = 1
            if fill is None:
                scores = ctx.dropped_scores(cells, self.batch_size)  # (B, n, K)
            else:
                keep = (1 - _on_pixels(cells, *edges))[None].expand(ctx.image.shape[0], -1, -1, -1)
                scores = ctx.masked_scores(keep, self.batch_size, fill=fill)
            total = total + torch.einsum("bpk,pij->bkij", clean - scores, cells)
            covered = covered + cells.sum(dim=0)
        return CamResult(total / covered)

    def evidence(self, ctx: CamContext, result: CamResult) -> Tensor:
        """In the score's units: the largest mean score drop over a cell beyond the smallest, max L - min L."""
        return span(result.raw)


def progress(ctx: CamContext, copies: int, chunk: int, batch_size: int, what: str) -> Iterable[int]:
    """The first copy of each chunk of ``chunk`` copies of the batch, with a progress bar on stderr when the
    ``copies`` take 50 forwards of ``batch_size`` rows or more."""
    forwards = math.ceil(copies / max(1, batch_size // ctx.image.shape[0]))
    starts = range(0, copies, chunk)
    return tqdm(starts, desc=what, unit="chunk", file=sys.stderr, leave=False, disable=forwards < 50)


def _on_pixels(cells: Tensor, row_edges: Tensor, column_edges: Tensor) -> Tensor:
    """(N, rows, columns) values per cell -> (N, H, W) per pixel, each cell spanning its edges."""
    row_index = torch.repeat_interleave(torch.arange(len(row_edges) - 1), row_edges.diff()).to(cells.device)
    column_index = torch.repeat_interleave(torch.arange(len(column_edges) - 1), column_edges.diff()).to(
        cells.device
    )
    return cells[:, row_index][:, :, column_index]


class RISE(CamMethod):
    """RISE (Petsiuk, Das & Saenko, arXiv 1806.07421): the targets' scores under random masks, each mask
    weighted by its score.

    m_n: an s x s grid of cells each kept with probability p, upsampled bilinearly to (s + 1) cells a side
    and cropped to the image at a random shift of less than a cell (seeded);  x_n = x m_n + f (1 - m_n);
    L_k = 1 / (N p) sum_n y_k(x_n) m_n, at the image's pixels. s: the explained layer's grid (a cell of it
    a side, the paper's 7 at 224 px for a ResNet's last stage) or ``cells`` when given; N = ``masks``;
    f = ``fill`` (``filling``; the paper's is ``"zero"``). The masks are drawn and scored in chunks of
    ``chunk`` (bounded memory), all K targets from the same forwards.
    """

    name = "rise"
    summary = (
        "random masks of a coarse grid, upsampled and shifted, weighted by the targets' scores under them"
    )
    paper = "Petsiuk et al., arXiv 1806.07421"
    needs_gradients = False
    perturbation = True

    def __init__(
        self,
        masks: int = 1000,
        keep: float = 0.5,
        cells: int | tuple[int, int] | None = None,
        fill: str | float | Tensor = "background",
        batch_size: int = 64,
        chunk: int = 256,
        seed: int = 0,
    ):
        if not 0 < keep < 1:
            raise ValueError(f"keep is the probability that a cell is kept, in (0, 1), got {keep}")
        if fill == DROP:
            raise ValueError("RISE's masks are smooth, not whole tokens: use a fill, such as background")
        self.masks = masks
        self.keep = keep
        self.cells = None if cells is None else _pair(cells, "cells")
        self.fill = fill
        self.batch_size = batch_size
        self.chunk = chunk
        self.seed = seed

    def random_masks(
        self,
        size: tuple[int, int],
        cells: tuple[int, int],
        device: torch.device,
        starts: Iterable[int] | None = None,
    ) -> Iterator[Tensor]:
        """The N masks in chunks of ``chunk`` ((n, H, W) in [0, 1]), one chunk per item of ``starts`` (the
        first mask of each; default all), drawn from a generator seeded ``seed``."""
        starts = range(0, self.masks, self.chunk) if starts is None else starts
        generator = torch.Generator().manual_seed(self.seed)
        cell = (math.ceil(size[0] / cells[0]), math.ceil(size[1] / cells[1]))
        for begin in starts:
            count = min(self.chunk, self.masks - begin)
            grid = (torch.rand(count, 1, *cells, generator=generator) < self.keep).float()
            shifts = (
                torch.randint(0, cell[0], (count,), generator=generator),
                torch.randint(0, cell[1], (count,), generator=generator),
            )
            upsampled = F.interpolate(
                grid.to(device), size=((cells[0] + 1) * cell[0], (cells[1] + 1) * cell[1]), mode="bilinear"
            )[:, 0]
            crops = [m[dy : dy + size[0], dx : dx + size[1]] for m, dy, dx in zip(upsampled, *shifts)]
            yield torch.stack(crops).clamp(0, 1)  # bilinear rounding can pass 1 by an ulp

    def __call__(self, ctx: CamContext) -> CamResult:
        size = _image_grid(ctx, "RISE")
        cells = self.cells or tuple(ctx.activations.shape[2:])
        fill = filling(ctx.image, self.fill)
        total = 0.0
        starts = progress(ctx, self.masks, self.chunk, self.batch_size, "RISE")
        for masks in self.random_masks(size, cells, ctx.image.device, starts):
            scores = ctx.masked_scores(
                masks[None].expand(ctx.image.shape[0], -1, -1, -1), self.batch_size, fill
            )
            total = total + torch.einsum("bnk,nij->bkij", scores, masks.to(scores.dtype))
        return CamResult(total / (self.masks * self.keep))

    def evidence(self, ctx: CamContext, result: CamResult) -> Tensor:
        """In the score's units: the mean score of the masks that keep a cell, its largest beyond its
        smallest, max L - min L."""
        return span(result.raw)


class Perturbation(CamMethod):
    """Perturbation saliency (Greydanus et al., arXiv 1711.00138): how much each target's score changes
    when the image around a point is blurred, for every point of a grid; no gradient, no layer.

    M_ij(x) = exp(-||x - p_ij||^2 / (2 sigma^2)),  Phi_ij(I) = I (1 - M_ij) + blur(I) M_ij,
    S_k(i, j) = 1/2 (y_k(I) - y_k(Phi_ij(I)))^2,
    p_ij the centres of an h x w grid of cells of side ``stride``. ``stride``, ``sigma`` and the blur's
    standard deviation default to the paper's 5, 5 and 3 px at 84 px, scaled to the image's shorter
    side. Occlusion's machinery with a Gaussian disc for a window and its ``"blur"`` fill: all points of
    all samples share batched forwards (``batch_size`` rows each).
    """

    name = "perturbation"
    summary = (
        "half the squared score change when a blurred disc replaces the image around each grid point "
        "(occlusion's machinery with the blur fill; no layer; fails the RL sanity check, see docs/rl.md)"
    )
    paper = "Greydanus et al., arXiv 1711.00138"
    needs_gradients = False
    perturbation = True

    def __init__(self, batch_size: int = 256, stride: int | None = None, sigma: float | None = None):
        self.batch_size = batch_size
        self.stride = stride
        self.sigma = sigma

    def __call__(self, ctx: CamContext) -> CamResult:
        height, width = _image_grid(ctx, "perturbation saliency")
        scale = min(height, width) / 84
        stride = self.stride or max(1, round(5 * scale))
        sigma = self.sigma or 5 * scale
        rows, columns = math.ceil(height / stride), math.ceil(width / stride)
        device = ctx.image.device
        across_y = _bumps(height, rows, sigma, device)[:, None, :, None]  # (rows, 1, H, 1)
        across_x = _bumps(width, columns, sigma, device)[None, :, None, :]  # (1, columns, 1, W)
        blurred_disc = (across_y * across_x).flatten(0, 1)  # (rows * columns, H, W): M_ij
        keep = (1 - blurred_disc)[None].expand(ctx.image.shape[0], -1, -1, -1)
        scores = ctx.masked_scores(keep, self.batch_size, fill=filling(ctx.image, "blur"))  # (B, P, K)
        change = 0.5 * (ctx.scores.detach().to(ctx.activations.dtype)[:, None] - scores) ** 2
        batch, targets = ctx.scores.shape
        return CamResult(change.transpose(1, 2).reshape(batch, targets, rows, columns))

    def evidence(self, ctx: CamContext, result: CamResult) -> Tensor:
        """In the score's units: the largest score change a blurred disc causes beyond the smallest,
        max sqrt(2 S_k) - min sqrt(2 S_k)."""
        return span((2 * result.raw).sqrt())


def _bumps(length: int, count: int, sigma: float, device: torch.device) -> Tensor:
    """(count, length) Gaussians exp(-(t - c)^2 / (2 sigma^2)) centred on the middles of ``count`` equal
    cells of a line of ``length`` pixels."""
    pixels = torch.arange(length, device=device, dtype=torch.float32)
    centres = (torch.arange(count, device=device, dtype=torch.float32) + 0.5) * length / count
    return torch.exp(-((pixels[None] - centres[:, None]) ** 2) / (2 * sigma**2))
