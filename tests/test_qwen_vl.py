"""Qwen2-VL and Qwen2.5-VL as captioners and VQA models, built from tiny configs saved to disk (offline)."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import explain_caption, explain_captions, word_targets
from mmcam.adapters.chat import CAPTION_PROMPT
from mmcam.adapters.chat_family import chat_template_prompt
from mmcam.adapters.qwen_vl import QwenVL
from mmcam.adapters.vqa import explain_answers, explain_top_answers, hf_question_tokens
from mmcam.cli import main
from mmcam.loading import load_captioner, load_vqa
from mmcam.targets import right_padded
from mmcam.viz.overlay import peak_in_image
from tests.chat_checks import (
    assert_batch_matches_alone,
    assert_contrast_is_the_difference_of_two_replies,
    caption_maps_while,
    processor_log_probs,
)
from tests.hf_tiny import save_qwen_vl
from tests.model_state import assert_unchanged, counted_forwards, snapshot
from tests.test_chat import warmed

PATCH = 8
SIZE = (60, 100)  # (H, W): the processor stretches it to 64 x 96 pixels, 8 x 12 patches, 4 x 6 merged tokens
GRID = (8, 12)
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")


TOWER = "model.visual"


def one_token(row: int, column: int):
    """A forward hook for the vision tower that hands the language model the merged token of (row, column)
    of the 4 x 6 merged grid, zeroing the others."""
    keep = torch.zeros(4 * 6, 1)
    keep[row * 6 + column] = 1

    def hook(module, args, output):
        output.pooler_output = output.pooler_output * keep

    return hook


@pytest.fixture(scope="module", params=["2", "2.5"])
def qwen_dir(request, tmp_path_factory):
    return save_qwen_vl(tmp_path_factory.mktemp(f"qwen{request.param}"), request.param)


@pytest.fixture(scope="module")
def captioner(qwen_dir):
    return warmed(load_captioner(str(qwen_dir)))


@pytest.fixture(scope="module")
def vqa(qwen_dir):
    return warmed(load_vqa(str(qwen_dir)))


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((*SIZE, 3)) * 255).astype(np.uint8))


def test_every_word_of_a_reply_from_one_forward_with_the_processors_token_log_probabilities(
    qwen_dir, captioner, picture
):
    """The words' scores equal the log-probabilities of the model run on its processor's inputs: the image
    stretched and cut into patches as the processor does, its token expanded as the processor does."""
    result, forwards = counted_forwards(
        captioner.model,
        lambda: explain_caption(captioner, picture, caption="a red circles", whole_caption=True),
    )
    assert forwards == 1
    assert result.words == ["a", "red", "circles"]
    per_token = processor_log_probs(
        qwen_dir, picture, CAPTION_PROMPT, "a red circles", MODEL_INPUTS
    )  # circle ##s
    expected = [per_token[0], per_token[1], sum(per_token[2:]), sum(per_token)]
    torch.testing.assert_close(result.explanation.scores[0], torch.tensor(expected), rtol=1e-4, atol=1e-4)
    assert result.explanation.raw.shape == (1, 4, *GRID)
    assert result.explanation.layer == "model.visual.blocks.1.norm1"


def test_the_map_lands_on_the_patches_whose_merged_token_alone_reaches_the_language_model(captioner, picture):
    """Planted evidence: the vision tower hands the language model one merged token (row 1, column 2 of the
    4 x 6 merged grid; in Qwen2.5-VL's window order it comes 7th, not 9th) and zeroes the others, so only
    its 2 x 2 patches decide the reply. At the merger's norm, which reads the blocks' tokens in the same
    order as the first block, every word's map is zero outside those patches, and stretched back onto the
    60 x 100 image it peaks on their pixels (rows 2-3, columns 4-5 of 8 px patches, stretched by 60/64 and
    100/96): the merge windows, the attention windows and the resize are read right."""
    row, column = 1, 2
    result = caption_maps_while(captioner, picture, TOWER, one_token(row, column), "model.visual.merger.ln_q")
    raw = result.raw[0]  # (words, 8, 12)
    block = torch.zeros(GRID, dtype=torch.bool)
    block[2 * row : 2 * row + 2, 2 * column : 2 * column + 2] = True
    assert (raw[:, ~block] == 0).all() and (raw[:, block] > 0).all()
    height, width = SIZE
    for word_map in result.maps[0]:
        x, y = peak_in_image(word_map, SIZE)
        assert 2 * row * PATCH * height / 64 <= y < (2 * row + 2) * PATCH * height / 64
        assert 2 * column * PATCH * width / 96 <= x < (2 * column + 2) * PATCH * width / 96


def test_a_layer_of_the_language_model_is_read_at_the_merged_image_tokens(captioner, picture):
    """The language model's hidden states at the image's merged tokens: with the vision tower handing on
    one merged token (row 1, column 2 of 4 x 6), the first block's input norm is zero at the image's other
    positions, so every word's map is positive in that merged cell alone."""
    row, column = 1, 2
    layer = "model.language_model.layers.0.input_layernorm"
    raw = caption_maps_while(captioner, picture, TOWER, one_token(row, column), layer).raw[0]
    cell = torch.zeros(4, 6, dtype=torch.bool)
    cell[row, column] = True
    assert raw.shape[-2:] == (4, 6) and (raw[:, cell] > 0).all() and (raw[:, ~cell] == 0).all()


def test_a_batch_of_images_gives_what_each_image_gives_alone(captioner, vqa):
    """Answers of several images generated at once, and every word of every caption (of several lengths)
    explained in one forward; images of another size are stretched to the first one's (the processor
    stretches anyway)."""
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
    assert not any(
        isinstance(got, ValueError) for together, _ in pairs for got in together
    )  # replies are words
    assert_batch_matches_alone(pairs)
    wide = Image.new("RGB", SIZE[::-1], "red")
    mixed = captioner.preprocess([wide, images[0]])
    assert mixed.shape == (2, 3, 64, 96)
    assert torch.equal(mixed[:1], captioner.preprocess([wide]))


def test_answers_given_and_why_not_weigh_every_token_the_language_model_reads(qwen_dir, vqa, picture):
    """The question's token weights line up with the sequence the processor makes (the image's 24 tokens
    expanded, each None), although mmcam's inputs hold the image token once."""
    from transformers import AutoProcessor

    question = "what color is the circle?"
    before = snapshot(vqa.model)
    result = explain_answers(vqa, picture, question, answers=["red"], why_not=["blue"])
    assert_unchanged(vqa.model, before)
    explanation = result.explanation
    assert explanation.labels[0][1:] == ["red", "not blue", f"{result.answer} rather than blue"]
    processor = AutoProcessor.from_pretrained(qwen_dir, local_files_only=True)
    read = processor(images=[picture], text=[chat_template_prompt(processor, question)], return_tensors="pt")
    assert result.tokens == hf_question_tokens(processor.tokenizer, read)
    assert explanation.token_weights.shape == (1, 4, len(result.tokens))
    assert [token for token in result.tokens if token is not None][-6:] == [*question[:-1].split(), "?"]


def test_a_contrast_of_two_replies_is_the_difference_of_their_maps_from_one_pass(vqa, picture):
    """As for LLaVA, with the copies' packed tokens read per copy."""
    assert_contrast_is_the_difference_of_two_replies(vqa, picture)


def test_inputs_the_processor_already_expanded_or_not_made_by_the_adapter_are_refused(
    qwen_dir, captioner, picture
):
    from transformers import AutoProcessor

    before = snapshot(captioner.model)
    ids = torch.tensor([captioner.tokenize("a red").ids])
    with pytest.raises(ValueError, match="sides multiples of 16"):
        explain_captions(captioner, torch.zeros(1, 3, 50, 50), ["a red"])
    family = QwenVL(captioner.model, AutoProcessor.from_pretrained(qwen_dir, local_files_only=True))
    expanded = family.arguments({"pixel_values": captioner.preprocess([picture]), "input_ids": ids})
    inputs = {"pixel_values": captioner.preprocess([picture]), "input_ids": expanded["input_ids"]}
    with pytest.raises(ValueError, match="the image token once"):
        captioner.explainer()(inputs, 0)
    with pytest.raises(ValueError, match="packs the batch's tokens"):
        explain_caption(
            captioner, picture, "a red", explainer=captioner.explainer(method="attention-relevance")
        )
    assert_unchanged(captioner.model, before)


def test_units_of_the_packed_tokens_are_zeroed_in_every_image_of_a_batch(captioner):
    """What a set of units carries (concept naming, Ablation-CAM): the scores with those channels of the
    first block's norm zeroed in every image's tokens, the batch copied once per set."""
    rng = np.random.default_rng(4)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    tokenized = [captioner.tokenize(caption) for caption in ("a red circle", "blue")]
    inputs = {
        "pixel_values": captioner.preprocess(images),
        "input_ids": right_padded([t.ids for t in tokenized]),
    }
    targets = word_targets(tokenized)
    scores, zeroed = captioner.explainer().zeroed_scores(inputs, targets, [[0], [3, 5]])
    keep = torch.ones(32)
    keep[[3, 5]] = 0
    norm = captioner.model.get_submodule(captioner.layer)
    handle = norm.register_forward_hook(lambda module, args, output: output * keep)
    try:
        with torch.no_grad():
            output = captioner.forward(captioner.model, inputs)
    finally:
        handle.remove()
    expected = torch.stack([target(output) for target in targets], dim=1)
    torch.testing.assert_close(zeroed[:, 1], expected, rtol=1e-4, atol=1e-5)
    assert zeroed.shape == (2, 2, len(targets)) and not torch.allclose(zeroed[:, 1], scores)


def test_caption_and_vqa_commands_accept_qwen_models(qwen_dir, picture, tmp_path, capsys):
    image, square = tmp_path / "picture.png", tmp_path / "square.png"
    picture.save(image)
    picture.resize((40, 40)).save(square)
    common = ["--model", str(qwen_dir), "--json", "--no-figures", "--workers", "0"]
    caption = ["caption", str(image), str(square), *common, "--prompt", "what is it?", "--caption", "a red"]
    assert main([*caption, "-o", str(tmp_path / "c")]) == 0  # two sizes in one batch
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["words"] for record in records] == [["a", "red"]] * 2
    assert records[0]["layer"] == "model.visual.blocks.1.norm1"
    question = ["-q", "what color is the circle?", "--answer", "red", "--why-not", "blue"]
    assert main(["vqa", str(image), *common, *question, "-o", str(tmp_path / "v")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in record["targets"]][1:3] == ["red", "not blue"]
