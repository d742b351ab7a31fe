"""Matplotlib figures: an image and one overlay per explained target; a clip and its map per frame."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from mmcam.viz.overlay import overlay


def targets_figure(
    image: Image.Image, maps: Tensor, titles: Sequence[str], heading: str = "", columns: int = 4
) -> Figure:
    """The input, then one panel per target: its map over the image, titled with label and score."""
    panels = len(titles) + 1
    columns = min(columns, panels)
    rows = -(-panels // columns)
    figure = Figure(figsize=(3 * columns, 3.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=10)
    for axis, heatmap, title in zip(axes.flat[1:], maps, titles):
        axis.imshow(overlay(image, heatmap))
        axis.set_title(title, fontsize=10)
    if heading:
        figure.suptitle(heading, fontsize=11)
    figure.tight_layout()
    return figure


def frames_figure(frames: Sequence[Image.Image], maps: Tensor, title: str, columns: int = 8) -> Figure:
    """A clip's map (T, h, w) over its T frames, one panel per frame, numbered."""
    rows = -(-len(frames) // columns)
    columns = min(columns, len(frames))
    figure = Figure(figsize=(2 * columns, 2.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for t, (axis, frame, heatmap) in enumerate(zip(axes.flat, frames, maps)):
        axis.imshow(overlay(frame, heatmap))
        axis.set_title(f"frame {t}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path) -> None:
    figure.savefig(path, dpi=100)


def notebook_figure(figure: Figure, path, dpi: int = 60):
    """Save ``figure`` to ``path`` (JPEG for ``.jpg``, small enough to keep in a committed notebook) and
    return it for display in a notebook cell."""
    from IPython.display import Image as Shown

    figure.savefig(path, dpi=dpi, pil_kwargs={"quality": 80} if str(path).endswith(".jpg") else None)
    return Shown(filename=str(path))
