"""Pictures for the report: small, compressed, embedded as data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RecordPictures:
    """An explained image's pictures as its report view embeds them (data URIs): the input, and the overlay
    of each target in the record's order."""

    image: str
    maps: list[str]


def record_pictures(image: Image.Image, overlays: Sequence[Image.Image]) -> RecordPictures:
    """The report's pictures of an input and its overlays: each a ``thumbnail``, as a JPEG data URI. Made
    where the overlays are drawn, from the pictures in memory (not read back from their files)."""
    return RecordPictures(data_uri(thumbnail(image)), [data_uri(thumbnail(picture)) for picture in overlays])
