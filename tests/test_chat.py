"""Chat models of a fixed resolution (LLaVA, PaliGemma, Gemma 3) as captioners and VQA models, built from a tiny config saved to disk
(offline); every test runs for every family."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import explain_caption
from mmcam.adapters.chat import CAPTION_PROMPT
from mmcam.adapters.vqa import explain_answers
from mmcam.cli import main
from mmcam.loading import load_captioner, load_vqa
from tests.chat_checks import assert_contrast_is_the_difference_of_two_replies, caption_maps_while
from tests.hf_tiny import save_gemma3, save_llava, save_paligemma
from tests.model_state import assert_unchanged, counted_forwards, snapshot

GRID = 4  # a 32 px image in 8 px patches
FAMILIES = {"llava": save_llava, "paligemma": save_paligemma, "gemma3": save_gemma3}
# the first layer after the vision tower that reads the image's patch tokens (LLaVA's drops the CLS token)
PROJECTOR_INPUT = {
    "llava": "model.multi_modal_projector.linear_1",
    "paligemma": "model.multi_modal_projector.linear",
    "gemma3": "model.multi_modal_projector.mm_soft_emb_norm",
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def chat_dir(request, tmp_path_factory):
    return FAMILIES[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def captioner(chat_dir):
    return warmed(load_captioner(str(chat_dir)))


PROJECTOR = "model.multi_modal_projector"


def one_token(row: int, column: int):
    """A forward hook for the projector that passes the image token of (row, column) on, zeroing the others."""
    keep = torch.zeros(1, GRID * GRID, 1)
    keep[0, row * GRID + column] = 1
    return lambda module, args, output: output * keep


def warmed(adapter):
    """The adapter after one plain forward: on its first forward a transformers 5 model adds hooks of its
    own (to record hidden states) and keeps them, which is not mmcam's doing."""
    image = Image.new("RGB", (32, 32))
    if hasattr(adapter, "prepare"):  # a VQA model
        inputs = adapter.prepare([image], ["a"])
    else:
        inputs = {
            "pixel_values": adapter.preprocess([image]),
            "input_ids": torch.tensor([adapter.tokenize("a").ids]),
        }
    with torch.no_grad():
        adapter.forward(adapter.model, inputs)
    return adapter


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))


def test_every_word_of_a_reply_from_one_forward_with_its_token_log_probabilities(captioner, picture):
    result, forwards = counted_forwards(
        captioner.model,
        lambda: explain_caption(captioner, picture, caption="a red circles", whole_caption=True),
    )
    assert forwards == 1
    assert result.words == ["a", "red", "circles"]
    tokenized = captioner.tokenize("a red circles")
    start = tokenized.positions[0][0]  # the reply follows the prompt, which holds the image's tokens
    assert tokenized.positions == [[start], [start + 1], [start + 2, start + 3]]  # circle ##s
    inputs = {"pixel_values": captioner.preprocess([picture]), "input_ids": torch.tensor([tokenized.ids])}
    with torch.no_grad():
        log_probs = captioner.forward(captioner.model, inputs).padded().log_softmax(-1)[0]
    per_token = [float(log_probs[p - 1, tokenized.ids[p]]) for p in range(start, len(tokenized.ids))]
    expected = [per_token[0], per_token[1], sum(per_token[2:]), sum(per_token)]
    torch.testing.assert_close(result.explanation.scores[0], torch.tensor(expected), rtol=1e-4, atol=1e-4)
    assert result.explanation.raw.shape == (1, 4, GRID, GRID)


def forced_generation_log_probs(model, inputs: dict, reply: list[int]) -> torch.Tensor:
    """The log-probabilities ``generate`` gives the tokens of ``reply`` when made to write them, one token
    at a time on its cache (how the model reads its own reply)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    prompt_length = inputs["input_ids"].shape[1]

    class Force(LogitsProcessor):
        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -torch.inf)
            forced[:, reply[input_ids.shape[1] - prompt_length]] = 0
            return forced

    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=len(reply),
            do_sample=False,
            logits_processor=LogitsProcessorList([Force()]),
            output_logits=True,
            return_dict_in_generate=True,
        )
    logits = torch.stack(out.logits, dim=1)[0].float()
    return logits.log_softmax(-1)[torch.arange(len(reply)), reply]


def test_teacher_forced_replies_are_read_as_generation_reads_them(chat_dir, captioner, picture):
    """A reply's token log-probabilities under teacher forcing, as captioner and as VQA answer, equal those
    of generation writing it (PaliGemma: the reply is marked as its causal suffix, not its prefix)."""
    vqa = warmed(load_vqa(str(chat_dir)))
    inputs = vqa.prepare([picture], [CAPTION_PROMPT])
    tokenized = captioner.tokenize("a red circles")
    start = tokenized.positions[0][0]
    assert tokenized.ids[:start] == inputs["input_ids"][0].tolist()  # the captioner's prompt
    reply = tokenized.ids[start:]
    expected = forced_generation_log_probs(vqa.model, inputs, reply)
    pixels = captioner.preprocess([picture])
    extended, positions = vqa.answer_inputs(inputs, ["a red circles"])
    with torch.no_grad():
        caption = captioner.forward(
            captioner.model, {"pixel_values": pixels, "input_ids": torch.tensor([tokenized.ids])}
        ).padded()
        answer = vqa.forward(vqa.model, extended)
    for logits, read in [(caption, range(start, len(tokenized.ids))), (answer, positions[0])]:
        log_probs = logits[0].float().log_softmax(-1)[[p - 1 for p in read], reply]
        torch.testing.assert_close(log_probs, expected, rtol=1e-4, atol=1e-4)


def test_the_map_lands_on_the_patch_whose_token_alone_reaches_the_language_model(captioner, picture):
    """Planted evidence: the projector passes one image token (row 1, column 2) and zeroes the others, so
    only that patch's token decides the reply's scores; at the projector's first layer, which reads the
    image's patch tokens, every word's map peaks in that patch's cell (the image tokens' grid read right).
    (Not the tower's last block: LLaVA reads that block's output from the hidden states a hook of
    transformers 5 records, registered before mmcam's, so the captured copy would not flow on.)"""
    row, column = 1, 2
    layer = PROJECTOR_INPUT[captioner.model.config.model_type]
    explanation = caption_maps_while(captioner, picture, PROJECTOR, one_token(row, column), layer)
    raw = explanation.raw[0].abs()  # (words, 4, 4)
    assert (raw.flatten(1).argmax(dim=1) == row * GRID + column).all()
    maps = explanation.maps[0]  # upsampled to 32x32: the peak lies in that 8 px cell
    peaks = [divmod(int(m.flatten().argmax()), m.shape[-1]) for m in maps]
    assert all(row * 8 <= y < (row + 1) * 8 and column * 8 <= x < (column + 1) * 8 for y, x in peaks)


def test_a_layer_of_the_language_model_is_read_at_the_image_tokens(captioner, picture):
    """The option of explaining the language model's hidden states at the image's tokens: with the
    projector passing one image token (row 1, column 2) and zeroing the others, the first block's input
    norm holds zeros at every other image position, so every word's NormGrad map is positive in that
    token's cell and zero elsewhere: the image tokens are picked from the sequence and laid out row-major."""
    row, column = 1, 2
    layer = "model.language_model.layers.0.input_layernorm"
    raw = caption_maps_while(captioner, picture, PROJECTOR, one_token(row, column), layer).raw[
        0
    ]  # (words, 4, 4)
    assert raw.shape[-2:] == (GRID, GRID)
    cell = torch.zeros(GRID, GRID, dtype=torch.bool)
    cell[row, column] = True
    assert (raw[:, cell] > 0).all() and (raw[:, ~cell] == 0).all()
    last = f"model.language_model.layers.{len(captioner.model.model.language_model.layers) - 1}"
    with pytest.raises(
        ValueError, match="does not depend on the image's tokens"
    ):  # they reach no reply token
        explain_caption(captioner, picture, caption="a red", explainer=captioner.explainer(layer=last))


def test_answers_given_and_why_not_come_with_the_question_word_weights(chat_dir, picture):
    vqa = warmed(load_vqa(str(chat_dir)))
    before = snapshot(vqa.model)
    result = explain_answers(vqa, picture, "what color is the circle?", answers=["red"], why_not=["blue"])
    assert_unchanged(vqa.model, before)
    explanation = result.explanation
    assert explanation.labels[0] == [result.answer, "red", "not blue", f"{result.answer} rather than blue"]
    assert explanation.kinds == [
        "log-probability",
        "log-probability",
        "minus the log-probability",
        "log-probability difference",
    ]
    assert explanation.token_weights.shape == (1, 4, len(result.tokens))
    words = [token for token in result.tokens if token is not None]
    assert words[-6:-1] == ["what", "color", "is", "the", "circle"]  # the image's tokens are not words
    with pytest.raises(ValueError, match="--top needs a classifier-style VQA model"):
        explain_answers(vqa, picture, "what color is the circle?", top=2)


def test_a_contrast_of_two_replies_is_the_difference_of_their_maps_from_one_pass(chat_dir, picture):
    assert_contrast_is_the_difference_of_two_replies(warmed(load_vqa(str(chat_dir))), picture)


def test_bfloat16_autocast_gives_the_full_precision_maps(captioner, picture):
    """Under the caller's bf16 autocast (the forward runs in bf16, the map arithmetic in float32) the words'
    scores and maps stay those of full precision."""
    full = explain_caption(captioner, picture, caption="a red circle").explanation
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = explain_caption(captioner, picture, caption="a red circle").explanation
    assert half.maps.dtype == torch.float32
    torch.testing.assert_close(half.scores, full.scores, atol=0.05, rtol=0.02)
    for ours, reference in zip(half.maps[0], full.maps[0]):
        assert torch.corrcoef(torch.stack([ours.flatten(), reference.flatten()]))[0, 1] > 0.98


def test_a_batch_of_images_gives_what_each_image_gives_alone(chat_dir, captioner, monkeypatch):
    """Captions and answers of several images generated at once, every word of every reply explained in
    one forward (replies of different lengths padded on the right). Captions of at most 16 tokens keep it
    fast: each word is a target, and PaliGemma's vocabulary holds 1152 location and segmentation tokens."""
    from mmcam.adapters import chat
    from mmcam.adapters.captioning import explain_captions
    from mmcam.adapters.vqa import explain_top_answers

    monkeypatch.setattr(chat, "MAX_CAPTION_TOKENS", 16)

    rng = np.random.default_rng(3)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    vqa = warmed(load_vqa(str(chat_dir)))
    pairs = [
        (explain_captions(captioner, captioner.preprocess(images)), lambda i: explain_caption(captioner, i)),
        (explain_top_answers(vqa, images, "what is it?"), lambda i: explain_answers(vqa, i, "what is it?")),
    ]
    for together, explain_alone in pairs:
        for image, got in zip(images, together):
            if isinstance(got, ValueError):  # this random model may reply nothing
                with pytest.raises(ValueError, match="empty"):
                    explain_alone(image)
                continue
            alone = explain_alone(image)
            assert got.explanation.labels == alone.explanation.labels
            torch.testing.assert_close(got.explanation.scores, alone.explanation.scores, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got.explanation.raw, alone.explanation.raw, rtol=1e-3, atol=1e-5)


def test_caption_and_vqa_commands_accept_a_chat_model(chat_dir, picture, tmp_path, capsys):
    image = tmp_path / "picture.png"
    picture.save(image)
    common = [str(image), "--model", str(chat_dir), "--json", "--no-figures"]
    assert (
        main(
            [
                "caption",
                *common,
                "--caption",
                "a red circle",
                "--prompt",
                "what is it?",
                "-o",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    default = "model.multi_modal_projector" if chat_dir.name.startswith("llava") else "model.vision_tower"
    assert record["words"] == ["a", "red", "circle"] and record["layer"].startswith(default)
    assert (
        main(
            ["vqa", *common, "-q", "what color is the circle?", "--answer", "red", "-o", str(tmp_path / "v")]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in record["targets"]][1:] == ["red"]
    assert main(["caption", str(image), "--prompt", "what is it?", "-o", str(tmp_path / "s")]) == 2
    assert "--prompt is for chat models" in capsys.readouterr().err
