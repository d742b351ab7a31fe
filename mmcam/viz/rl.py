"""Pictures of explained RL episodes: an animation of frames with their maps, and attention over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from mmcam.viz.overlay import overlay

CAPTION_HEIGHT = 14


def episode_images(
    frames: np.ndarray, maps: Tensor, captions: Sequence[str], scale: int = 4
) -> list[Image.Image]:
    """One picture per step: the frame and its map over it side by side, ``scale`` times enlarged
    (nearest neighbour, so cells stay sharp), with the step's caption underneath."""
    height, width = frames.shape[1] * scale, frames.shape[2] * scale
    images = []
    for frame, heatmap, caption in zip(frames, maps, captions):
        picture = Image.fromarray(frame).resize((width, height), Image.NEAREST)
        canvas = Image.new("RGB", (2 * width, height + CAPTION_HEIGHT), "white")
        canvas.paste(picture, (0, 0))
        canvas.paste(overlay(picture, heatmap), (width, 0))
        ImageDraw.Draw(canvas).text((3, height + 1), caption, fill="black")
        images.append(canvas)
    return images


def save_animation(images: Sequence[Image.Image], path: str | Path, fps: float = 4) -> Path:
    """Write the pictures as an animated GIF, or as an MP4 (through OpenCV) when ``path`` ends in .mp4."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, images[0].size)
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write MP4 video to {path}; write a .gif instead")
        for image in images:
            writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        duration = round(1000 / fps)
        images[0].save(path, save_all=True, append_images=list(images[1:]), duration=duration, loop=0)
    return path


def attention_figure(
    shares: Sequence[dict[str, Tensor]], areas: dict[str, float], title: str = "", max_episodes: int = 10
) -> Figure:
    """The share of map mass on each object at every step, episode after episode (dotted lines between
    episodes); a dashed line per object marks its mean share of the image, the level of a uniform map."""
    figure = Figure(figsize=(10, 3.5))
    axis = figure.subplots()
    names = list(shares[0])
    colors = dict(zip(names, ("tab:blue", "tab:red", "tab:gray", "tab:green", "tab:purple", "tab:orange")))
    start = 0
    for i, episode in enumerate(shares[:max_episodes]):
        steps = len(next(iter(episode.values())))
        for name in names:
            axis.plot(
                range(start, start + steps),
                episode[name].cpu().numpy(),
                color=colors.get(name),
                marker=".",
                label=name if i == 0 else None,
            )
        start += steps
        axis.axvline(start - 0.5, color="black", linestyle=":", linewidth=0.8)
    for name in names:
        axis.axhline(areas[name], color=colors.get(name), linestyle="--", linewidth=0.8)
    axis.set_xlabel("step (episodes one after another)")
    axis.set_ylabel("share of map mass")
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper right", fontsize=8)
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure
