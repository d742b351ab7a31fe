"""Chat models that read an image as tiles (LLaVA-NeXT, LLaVA-OneVision, Idefics3, SmolVLM): the tiles put
back where they came from in the image (``adapters.llava_next``, ``adapters.idefics3``, ``engine.tiles``),
checked against what the processors themselves make of an image, and the models explained as captioners
and VQA models, built from tiny configs saved to disk (offline)."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import explain_caption, explain_captions
from mmcam.adapters.chat import CAPTION_PROMPT
from mmcam.adapters.chat_family import chat_template_prompt
from mmcam.adapters.idefics3 import split_boxes
from mmcam.adapters.image_tokens import unit_pixels
from mmcam.adapters.llava_next import tile_boxes, tiling
from mmcam.adapters.vqa import explain_answers, explain_top_answers, hf_question_tokens
from mmcam.cli import main
from mmcam.engine.tiles import Tiles
from mmcam.loading import load_captioner, load_vqa
from tests.chat_checks import (
    assert_batch_matches_alone,
    assert_contrast_is_the_difference_of_two_replies,
    caption_maps_while,
    processor_log_probs,
)
from tests.hf_tiny import TILE_PINPOINTS, save_idefics3, save_llava_next
from tests.model_state import assert_unchanged, counted_forwards, snapshot
from tests.test_chat import warmed

CELL = 8  # pixels of a tile per token (4x4 tokens a tile)
TOP, BOTTOM, LEFT, RIGHT = 12, 24, 28, 42  # a white block in a black image, 24 x 56 pixels
# a wide image: a canvas of 1 x 2 tiles (32 x 64), the image resized to 28 x 64 between 2 px of padding
SIZE = (24, 56)
# family: (builder, the processor's outputs the model reads, the module that hands the image's tokens to the
# language model, its tokens per tile)
FAMILIES = {
    "next": (partial(save_llava_next, version="next"), ("image_sizes",), "model.multi_modal_projector", 16),
    "onevision": (
        partial(save_llava_next, version="onevision"),
        ("image_sizes",),
        "model.multi_modal_projector",
        16,
    ),
    "idefics3": (partial(save_idefics3, version="idefics3"), ("pixel_attention_mask",), "model.connector", 4),
    "smolvlm": (partial(save_idefics3, version="smolvlm"), ("pixel_attention_mask",), "model.connector", 4),
}


def cell_brightness(pixels: torch.Tensor) -> torch.Tensor:
    """The mean of each tile's pixels over each token's cell: (tiles, 3, 32, 32) -> (tiles, 4, 4)."""
    return torch.nn.functional.avg_pool2d(pixels.mean(dim=1, keepdim=True), CELL)[:, 0]


def white_block() -> Image.Image:
    image = np.zeros((*SIZE, 3), dtype=np.uint8)
    image[TOP:BOTTOM, LEFT:RIGHT] = 255
    return Image.fromarray(image)


@pytest.fixture(scope="module")
def tiles():
    """The processor's tiles of an image whose only content is a white block, and the image's tiling."""
    from transformers import LlavaNextImageProcessor

    processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=TILE_PINPOINTS
    )
    pixels = processor(images=[white_block()], return_tensors="pt")["pixel_values"][0]
    return cell_brightness(pixels), tiling(SIZE, TILE_PINPOINTS, 32)


def test_a_wide_image_is_tiled_as_the_processor_tiles_it(tiles):
    brightness, layout = tiles
    assert layout.canvas == (32, 64) and layout.tiles == (1, 2) and brightness.shape[0] == layout.count == 3
    assert layout.resized == (28, 64) and layout.offset == (2, 0)  # 2 px of padding above, 2 below
    boxes = tile_boxes(layout)
    assert boxes[0] == (0, 0, 24, 56)  # the base tile: the whole image
    torch.testing.assert_close(torch.tensor(boxes[2]), torch.tensor([-2 * 24 / 28, 28.0, 30 * 24 / 28, 56.0]))


@pytest.mark.parametrize("kept", ["base", "canvas", "both"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_maps_of_the_tiles_land_where_their_pixels_came_from(tiles, kept, mode):
    """Planted evidence: each tile's map is the brightness of its own cells, as the processor cut them;
    stitched on the image, the base tile's map, the canvas tiles' map and their sum peak in the white
    block, and nowhere outside it do they reach half their peak."""
    brightness, layout = tiles
    maps = brightness - brightness.amin()
    if kept == "base":
        maps[1:] = 0
    elif kept == "canvas":
        maps[0] = 0
    boxes = torch.tensor(tile_boxes(layout))
    drawn = Tiles(torch.zeros(3, dtype=torch.long), boxes).stitch(maps[:, None], 1, SIZE, mode)[0, 0]
    assert drawn.shape == SIZE
    y, x = divmod(int(drawn.argmax()), SIZE[1])
    assert TOP <= y < BOTTOM and LEFT <= x < RIGHT
    outside = drawn.clone()
    outside[TOP:BOTTOM, LEFT:RIGHT] = 0
    assert outside.max() < drawn.max() / 2


def test_split_images_land_where_the_processor_cut_them():
    """Idefics3's split of the 24 x 56 image (resized to 64 px wide: 1 x 2 tiles of 32 px, then the global
    image): each tile's map is the brightness of its own cells; stitched on the image, the maps peak in the
    white block and stay below half their peak outside it."""
    from transformers import Idefics3ImageProcessor

    processor = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processed = processor(images=[[white_block()]], return_tensors="pt", return_row_col_info=True)
    assert (processed["rows"], processed["cols"]) == ([[1]], [[2]])
    assert processor.get_number_of_image_patches(*SIZE) == (3, 1, 2)
    brightness = cell_brightness(processed["pixel_values"][0])
    boxes = torch.tensor(split_boxes(SIZE, 1, 2))
    assert boxes.tolist() == [[0, 0, 24, 28], [0, 28, 24, 56], [0, 0, 24, 56]]
    drawn = Tiles(torch.zeros(3, dtype=torch.long), boxes).stitch(
        (brightness - brightness.amin())[:, None], 1, SIZE
    )
    y, x = divmod(int(drawn[0, 0].argmax()), SIZE[1])
    assert TOP <= y < BOTTOM and LEFT <= x < RIGHT
    outside = drawn[0, 0].clone()
    outside[TOP:BOTTOM, LEFT:RIGHT] = 0
    assert outside.max() < drawn.max() / 2


def test_a_tile_over_the_whole_image_is_upsampled_as_a_map_is():
    from mmcam.engine.resize import upsample

    maps = torch.rand(2, 3, 4, 5)
    tiles = Tiles(torch.tensor([0, 1]), torch.tensor([[0.0, 0.0, 20.0, 30.0]] * 2))
    for mode in ("bilinear", "nearest"):
        torch.testing.assert_close(tiles.stitch(maps, 2, (20, 30), mode), upsample(maps, (20, 30), mode))
    with pytest.raises(ValueError, match="one owner and one box"):
        Tiles(torch.tensor([0, 1]), torch.zeros(3, 4))


@pytest.fixture(scope="module", params=list(FAMILIES))
def model_dir(request, tmp_path_factory):
    return FAMILIES[request.param][0](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def captioner(model_dir):
    return warmed(load_captioner(str(model_dir)))


@pytest.fixture(scope="module")
def vqa(model_dir):
    return warmed(load_vqa(str(model_dir)))


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((*SIZE, 3)) * 255).astype(np.uint8))


def family(model) -> tuple:
    return FAMILIES[
        {"llava_next": "next", "llava_onevision": "onevision"}.get(
            model.config.model_type, model.config.model_type
        )
    ]


def test_every_word_of_a_reply_from_one_forward_with_the_processors_token_log_probabilities(
    model_dir, captioner, picture
):
    """The words' scores equal the log-probabilities of the model run on its processor's inputs for the
    same pixels: the image tiled and its token expanded by the processor. (mmcam hands the processor the
    image in [0, 1], which it resizes without rounding to bytes first.)"""
    result, forwards = counted_forwards(
        captioner.model,
        lambda: explain_caption(captioner, picture, caption="a red circles", whole_caption=True),
    )
    assert forwards == 1
    assert result.words == ["a", "red", "circles"]
    inputs = ("input_ids", "attention_mask", "pixel_values", *family(captioner.model)[1])
    image = unit_pixels([picture])[0]
    per_token = processor_log_probs(
        model_dir, image, CAPTION_PROMPT, "a red circles", inputs, do_rescale=False
    )  # circle ##s
    expected = [per_token[0], per_token[1], sum(per_token[2:]), sum(per_token)]
    torch.testing.assert_close(result.explanation.scores[0], torch.tensor(expected), rtol=1e-4, atol=1e-4)
    assert result.explanation.raw.shape == (1, 4, *SIZE)  # stitched on the image's pixels
    assert result.explanation.layer.endswith("encoder.layers.1.layer_norm1")
    assert result.explanation.weights is None  # channel weights are the tiles', not the image's


# (tile, its token, the token's rows and columns on the 24 x 56 image) per way of tiling
PLANTED = {
    "model.multi_modal_projector": [
        (0, 2 * 4 + 1, (12, 18), (14, 28)),  # the base tile: 4 x 4 tokens of 6 x 14 image pixels
        (2, 1 * 4 + 2, (6 * 24 / 28, 14 * 24 / 28), (42, 49)),  # the right canvas tile, below 2 px of padding
    ],
    "model.connector": [
        (1, 1 * 2 + 0, (12, 24), (28, 42)),  # the right tile: 2 x 2 tokens of 2 x 2 patches
        (2, 0 * 2 + 1, (0, 12), (28, 56)),  # the global image
    ],
}


@pytest.mark.parametrize("planted", [0, 1])
def test_the_map_lands_on_the_pixels_of_the_one_tile_token_that_reaches_the_language_model(
    captioner, picture, planted
):
    """Planted evidence: the module that hands the image's tokens to the language model passes one token
    of one tile and zeroes the others, so only that token decides the reply's scores. At the last block's
    norm before its MLP, above which each patch stays in its place, the map of every word is zero outside
    that token's patches and positive on them, stitched on the 24 x 56 image where the processor took them
    from: the tile order, each tile's box and the padding are read right. (Not the block's output: the
    model reads it from the hidden states that a hook of transformers 5 records, before mmcam's.)"""
    _, _, module, tokens = family(captioner.model)
    tile, token, rows, columns = PLANTED[module][planted]
    keep = torch.zeros(3, tokens, 1)
    keep[tile, token] = 1
    last_norm = captioner.layer.rsplit(".", 2)[0] + ".1.layer_norm2"
    hook = lambda m, args, output: output * keep
    explanation = caption_maps_while(captioner, picture, module, hook, last_norm, upsampling="nearest")
    centres_y, centres_x = torch.arange(SIZE[0]) + 0.5, torch.arange(SIZE[1]) + 0.5  # pixel centres
    in_cell = ((centres_y >= rows[0]) & (centres_y < rows[1]))[:, None] & (
        (centres_x >= columns[0]) & (centres_x < columns[1])
    )[None, :]
    for word_map in explanation.raw[0]:
        assert (word_map[in_cell] > 0).all() and (word_map[~in_cell] == 0).all()


def test_a_batch_of_images_gives_what_each_image_gives_alone(captioner, vqa):
    """Answers of several images generated at once, and every word of every caption (of several lengths)
    explained in one forward; images of another size are resized to the first one's."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    captions = ["a red circle", "blue", "a small square"]
    pairs = [
        (
            explain_captions(captioner, captioner.preprocess(images), captions),
            [partial(explain_caption, captioner, image, caption) for image, caption in zip(images, captions)],
        ),
        (
            explain_top_answers(vqa, images, "what is it?"),
            [partial(explain_answers, vqa, image, "what is it?") for image in images],
        ),
    ]
    assert_batch_matches_alone(pairs)
    wide = Image.new("RGB", SIZE[::-1], "red")
    mixed = captioner.preprocess([wide, images[0]])
    assert mixed.shape == (2, 3, *SIZE)
    assert torch.equal(mixed[:1], captioner.preprocess([wide]))


def test_answers_given_and_why_not_weigh_every_token_the_language_model_reads(model_dir, vqa, picture):
    """The question's token weights line up with the sequence the processor makes (the image's tokens
    expanded, each None), although mmcam's inputs hold the image token once."""
    from transformers import AutoProcessor

    question = "what color is the circle?"
    before = snapshot(vqa.model)
    result = explain_answers(vqa, picture, question, answers=["red"], why_not=["blue"])
    assert_unchanged(vqa.model, before)
    assert result.explanation.labels[0][1:] == ["red", "not blue", f"{result.answer} rather than blue"]
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    read = processor(images=[picture], text=[chat_template_prompt(processor, question)], return_tensors="pt")
    assert result.tokens == hf_question_tokens(processor.tokenizer, read)
    assert result.explanation.token_weights.shape == (1, 4, len(result.tokens))


def test_a_contrast_of_two_replies_is_the_difference_of_their_maps_from_one_pass(vqa, picture):
    """As for the fixed-resolution families, with the copies' tiles summed tile by tile."""
    assert_contrast_is_the_difference_of_two_replies(vqa, picture)


def test_methods_that_perturb_the_image_with_their_maps_are_refused_on_tiles(captioner, picture):
    before = snapshot(captioner.model)
    for method in ("scorecam", "ablationcam", "guided-gradcam", "fullgrad"):
        with pytest.raises(ValueError, match="a row per tile of an image"):
            explain_caption(captioner, picture, "a red", explainer=captioner.explainer(method=method))
    language = (
        captioner.layer.split(".")[0]
        + "."
        + ("text_model" if "vision_model" in captioner.layer else "language_model")
    )
    with pytest.raises(ValueError, match="tokens form no one grid"):
        explain_caption(
            captioner, picture, "a red", explainer=captioner.explainer(layer=f"{language}.layers.0")
        )
    assert_unchanged(captioner.model, before)
    flipped = explain_caption(captioner, picture, "a red", explainer=captioner.explainer(aug_smooth=True))
    assert flipped.explanation.maps.shape == (1, 2, *SIZE)  # augmentations act on the image, then tiled


def test_caption_and_vqa_commands_accept_tiling_models(model_dir, picture, tmp_path, capsys):
    image = tmp_path / "picture.png"
    picture.save(image)
    common = ["--model", str(model_dir), "--json", "--no-figures", "--workers", "0"]
    caption = ["caption", str(image), *common, "--prompt", "what is it?", "--caption", "a red"]
    assert main([*caption, "-o", str(tmp_path / "c")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["words"] == ["a", "red"] and record["layer"].endswith("encoder.layers.1.layer_norm1")
    question = ["-q", "what color is the circle?", "--answer", "red", "--why-not", "blue"]
    assert main(["vqa", str(image), *common, *question, "-o", str(tmp_path / "v")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in record["targets"]][1:3] == ["red", "not blue"]
