"""Pictures for the report: small, compressed, embedded as data URIs."""

from __future__ import annotations

import base64
import io

from PIL import Image

SIDE = 256  # the long side of every embedded picture, in pixels


def thumbnail(image: Image.Image, side: int = SIDE, pixelated: bool = False) -> Image.Image:
    """``image`` as RGB scaled to ``side`` pixels on its long side; ``pixelated`` scales by nearest
    neighbour (for small pixel-art frames, whose cells should stay sharp)."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.NEAREST if pixelated else Image.BILINEAR)


def data_uri(image: Image.Image, format: str = "JPEG") -> str:
    """``image`` encoded as a ``data:`` URI: JPEG (quality 80) for photos and maps, PNG for flat pictures."""
    buffer = io.BytesIO()
    if format == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=80, optimize=True)
    else:
        image.save(buffer, format, optimize=True)
    return f"data:image/{format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
