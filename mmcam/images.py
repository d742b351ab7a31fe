"""Reading user images: any format PIL reads, as RGB, with one clear error when it can't."""

from __future__ import annotations

import glob
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 4096  # larger images are reduced to this long side on loading; models read a few hundred pixels
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "F")


def image_paths(arguments: list[str]) -> list[str]:
    """The image files named by ``arguments``: a file stays as given, a folder gives the image files in it
    (by extension, sorted), a glob pattern (``'scans/*.png'``) the files it matches (sorted), and a
    ``datasets.Dataset`` saved with ``save_to_disk`` one entry ``FOLDER#ROW`` per row (its ``image``
    column). A folder or pattern that yields nothing is kept as given, so that reading it fails with one
    clear line."""
    extensions = {extension for extension, format in Image.registered_extensions().items() if format}
    paths = []
    for argument in arguments:
        path = Path(argument)
        if _is_dataset(path):
            found = [f"{argument}{ROW}{row}" for row in range(len(_dataset(str(path))))]
        elif path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in extensions and p.is_file())
        elif not path.exists() and _is_pattern(argument):
            found = sorted(p for p in glob.glob(argument) if Path(p).is_file())
        else:
            found = []
        paths.extend(found or [argument])
    return paths


ORIGINAL_SIZE = "mmcam_original_size"  # image.info key: (W, H) of a file reduced on loading
FRAMES = "mmcam_frames"  # image.info key: how many frames an animated file has (its first is read)
ROW = "#"  # FOLDER#ROW: a row of a saved datasets.Dataset


def _is_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


@lru_cache(maxsize=4)
def _dataset(folder: str):
    """A saved ``datasets.Dataset`` (memory-mapped, so each worker process opens its own cheaply)."""
    from datasets import load_from_disk

    dataset = load_from_disk(folder)
    if "image" not in dataset.column_names:
        raise ValueError(
            f"the dataset at {folder} has no 'image' column (it has {', '.join(dataset.column_names)})"
        )
    return dataset


def _dataset_image(path: str) -> Image.Image | None:
    """The image of a ``FOLDER#ROW`` entry, or None when ``path`` names no dataset row."""
    folder, _, row = path.rpartition(ROW)
    if not (folder and row.isdigit() and _is_dataset(Path(folder))):
        return None
    dataset = _dataset(folder)
    if int(row) >= len(dataset):
        raise ValueError(f"cannot read image {path}: the dataset has {len(dataset)} rows")
    image = dataset[int(row)]["image"]
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


def load_image(path: str | Path, max_side: int = MAX_SIDE) -> Image.Image:
    """The image at ``path`` as RGB: turned upright by its EXIF orientation, grayscale and 16-bit or float
    images stretched to 0-255, RGBA over white, and reduced to ``max_side`` pixels on its long side. A
    reduced image keeps the file's upright size (W, H) in ``image.info[ORIGINAL_SIZE]``; of an animated file
    (GIF, WebP, APNG) the first frame is read, and ``image.info[FRAMES]`` holds its frame count. ``FOLDER#ROW``
    reads the ``image`` of a row of a saved ``datasets.Dataset``."""
    row_image = _dataset_image(str(path))
    if row_image is not None:
        return _reduced_keeping_size(_as_rgb(row_image), row_image.size, max_side)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot read image {path}: a folder with no image files in it")
    if not path.is_file():
        what = "no file matches this pattern" if _is_pattern(str(path)) else "no such file"
        raise ValueError(f"cannot read image {path}: {what}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large images are reduced below
            with Image.open(path) as opened:
                original = _upright_size(opened)
                frames = getattr(opened, "n_frames", 1)
                opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, cheaply
                ImageOps.exif_transpose(opened, in_place=True)  # upright, without a copy of the pixels
                opened.load()
                image = opened
    except Image.DecompressionBombError as error:
        raise ValueError(f"cannot read image {path}: too large for PIL to open safely ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: not an image file PIL can open ({error})") from error
    image = _reduced_keeping_size(_as_rgb(image), original, max_side)
    if frames > 1:
        image.info[FRAMES] = frames
    return image


def _reduced_keeping_size(image: Image.Image, original: tuple[int, int], max_side: int) -> Image.Image:
    image = reduced(image, max_side)
    if image.size != original:
        image.info[ORIGINAL_SIZE] = original
    return image


def _upright_size(opened: Image.Image) -> tuple[int, int]:
    """(W, H) of a file as shown upright: EXIF orientations 5-8 swap its axes."""
    transposed = opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (opened.height, opened.width) if transposed else opened.size


def reduced(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down (keeping its aspect ratio) to ``max_side`` pixels on its long side, if larger."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=3.0)


def _is_pattern(text: str) -> bool:
    return any(character in text for character in "*?[")


def _as_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "P") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
