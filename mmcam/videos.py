"""Reading user clips: a folder of frames, an animated GIF or multi-frame TIFF, or a video file (OpenCV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from mmcam.images import image_paths, load_image

VIDEO_FILES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def frame_indices(count: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly over ``count`` frames, first and last included (repeats when short)."""
    return np.linspace(0, count - 1, frames).round().astype(int).tolist()


def load_clip(path: str | Path, frames: int = 16) -> list[Image.Image]:
    """``frames`` RGB frames sampled evenly from the clip at ``path``: a folder of image files (in name
    order), an animated GIF or multi-frame TIFF, or a video file (read with OpenCV:
    ``pip install opencv-python-headless``, which the RL extra installs)."""
    path = Path(path)
    if frames < 1:
        raise ValueError("--frames must be at least 1")
    if path.is_dir():
        files = [p for p in image_paths([str(path)]) if p != str(path)]
        if not files:
            raise ValueError(f"cannot read clip {path}: a folder with no image files in it")
        return [load_image(files[i]) for i in frame_indices(len(files), frames)]
    if not path.is_file():
        raise ValueError(f"cannot read clip {path}: no such file or folder")
    if path.suffix.lower() in VIDEO_FILES:
        return _video_frames(path, frames)
    with Image.open(path) as opened:
        stack = [frame.convert("RGB") for frame in ImageSequence.Iterator(opened)]
    return [stack[i] for i in frame_indices(len(stack), frames)]


def _video_frames(path: Path, frames: int) -> list[Image.Image]:
    try:
        import cv2
    except ImportError as error:
        raise ValueError(
            f"reading {path.name} needs OpenCV: pip install opencv-python-headless (or pass a folder of frames)"
        ) from error
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    if not decoded:
        raise ValueError(f"cannot read clip {path}: OpenCV decoded no frame from it")
    return [Image.fromarray(decoded[i][:, :, ::-1].copy()) for i in frame_indices(len(decoded), frames)]
