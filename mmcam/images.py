"""Reading user images: any format PIL reads, as RGB, with one clear error when it can't."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB (grayscale and RGBA are converted; RGBA over white)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGBA") if opened.mode in ("RGBA", "LA", "P") else opened.convert("RGB")
            image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: not an image file PIL can open ({error})") from error
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    return image
