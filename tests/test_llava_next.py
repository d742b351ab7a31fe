"""LLaVA-NeXT's tiles put back where they came from in the image (``adapters.llava_next``), checked against
what the processor itself makes of an image."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.llava_next import image_map, tiling
from tests.hf_tiny import TILE_PINPOINTS

CELL = 8  # pixels of a tile per token (4x4 tokens a tile)
TOP, BOTTOM, LEFT, RIGHT = 12, 24, 28, 42  # a white block in a black image, 24 x 56 pixels


def cell_brightness(pixels: torch.Tensor) -> torch.Tensor:
    """The mean of each tile's pixels over each token's cell: (tiles, 3, 32, 32) -> (tiles, 4, 4)."""
    return torch.nn.functional.avg_pool2d(pixels.mean(dim=1, keepdim=True), CELL)[:, 0]


@pytest.fixture(scope="module")
def tiles():
    """The processor's tiles of an image whose only content is a white block, and the image's tiling."""
    from transformers import LlavaNextImageProcessor

    image = np.zeros((24, 56, 3), dtype=np.uint8)
    image[TOP:BOTTOM, LEFT:RIGHT] = 255
    processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=TILE_PINPOINTS
    )
    pixels = processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"][0]
    return cell_brightness(pixels), tiling((24, 56), TILE_PINPOINTS, 32)


def test_a_wide_image_is_tiled_as_the_processor_tiles_it(tiles):
    brightness, layout = tiles
    assert layout.canvas == (32, 64) and layout.tiles == (1, 2) and brightness.shape[0] == layout.count == 3
    assert layout.resized == (28, 64) and layout.offset == (2, 0)  # 2 px of padding above, 2 below


@pytest.mark.parametrize("kept", ["base", "canvas", "both"])
def test_maps_of_the_tiles_land_where_their_pixels_came_from(tiles, kept):
    """Planted evidence: each tile's map is the brightness of its own cells, as the processor cut them;
    put back on the image, the base tile's map, the canvas tiles' map and their sum peak in the white
    block, and nowhere outside it do they reach half their peak."""
    brightness, layout = tiles
    maps = brightness - brightness.amin()
    if kept == "base":
        maps[1:] = 0
    elif kept == "canvas":
        maps[0] = 0
    drawn = image_map(maps[:, None], layout, mode="nearest")[0]
    assert drawn.shape == (24, 56)
    y, x = divmod(int(drawn.argmax()), 56)
    assert TOP <= y < BOTTOM and LEFT <= x < RIGHT
    outside = drawn.clone()
    outside[TOP:BOTTOM, LEFT:RIGHT] = 0
    assert outside.max() < drawn.max() / 2


def test_a_map_for_another_tiling_is_refused(tiles):
    brightness, layout = tiles
    with pytest.raises(ValueError, match="2 tile maps for an image of 3 tiles"):
        image_map(brightness[:2], layout)
