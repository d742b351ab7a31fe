"""Explaining VQA answers on ViLT (classifier-style) and BLIP (generative), built from tiny configs offline."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.vqa import explain_answers
from mmcam.loading import load_vqa
from tests.hf_tiny import save_blip_vqa, save_vilt_vqa
from tests.model_state import assert_unchanged, snapshot

QUESTION = "what color is the circle?"


@pytest.fixture(scope="module")
def vilt(tmp_path_factory):
    return load_vqa(str(save_vilt_vqa(tmp_path_factory.mktemp("vilt"))))


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    return load_vqa(str(save_blip_vqa(tmp_path_factory.mktemp("blip-vqa"))))


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))


def test_vilt_answers_top_k_named_and_why_not_in_one_forward(vilt, picture):
    before = snapshot(vilt.model)
    calls = []
    handle = vilt.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        result = explain_answers(vilt, picture, QUESTION, answers=["circle"], top=2, why_not=["yes"])
    finally:
        handle.remove()
    assert len(calls) == 2  # the prediction, then one pass for every target
    assert_unchanged(vilt.model, before)
    explanation = result.explanation
    labels = explanation.labels[0]
    assert labels[0] == result.answer and "circle" in labels
    assert labels[-2:] == ["not yes", f"{result.answer} rather than yes"]
    assert explanation.raw.shape[-2:] == (4, 5)  # ViLT patch grid of a 32x40 input: text tokens are skipped
    assert (explanation.maps.flatten(2).std(dim=-1) > 0.05).all()
    scores = explanation.scores[0]
    torch.testing.assert_close(scores[-1], scores[0] + scores[-2])  # predicted - yes = predicted + (-yes)


def test_question_word_weights_come_with_every_target(vilt, picture):
    result = explain_answers(vilt, picture, QUESTION, top=3)
    weights = result.explanation.token_weights
    assert weights.shape == (1, 3, len(result.tokens))
    assert result.tokens[0] is None and result.tokens[-1] is None  # [CLS] and [SEP]
    assert result.tokens[1:-1] == ["what", "color", "is", "the", "circle", "?"]
    assert (weights.abs().sum(dim=-1) > 0).all()


def test_unknown_answer_lists_the_valid_ones(vilt, picture):
    with pytest.raises(ValueError, match="its answers are: red, blue, yes, no, circle"):
        explain_answers(vilt, picture, QUESTION, answers=["green"])


def test_blip_answer_is_its_teacher_forced_log_probability(blip, picture):
    before = snapshot(blip.model)
    result = explain_answers(blip, picture, QUESTION, answers=["red"], why_not=["blue"])
    assert_unchanged(blip.model, before)
    explanation = result.explanation
    assert explanation.labels[0][1:] == ["red", "not blue", f"{result.answer} rather than blue"]
    inputs = blip.prepare([picture], [QUESTION])
    extended, positions = blip.answer_inputs(inputs, ["red"])
    with torch.no_grad():
        log_probs = blip.forward(blip.model, extended).log_softmax(-1)[0]
    ids = extended["answer_ids"][0]
    expected = sum(float(log_probs[p - 1, ids[p]]) for p in positions[0])
    assert abs(float(explanation.scores[0, 1]) - expected) < 1e-4
    assert (explanation.maps.flatten(2).std(dim=-1) > 0.05).all()
    assert explanation.token_weights.shape[:2] == (1, 4)


def test_generative_models_have_no_top_k(blip, picture):
    with pytest.raises(ValueError, match="classifier-style"):
        explain_answers(blip, picture, QUESTION, top=3)


def test_vqa_command_json_has_the_question_and_word_weights(tmp_path, capsys, picture):
    import json
    from pathlib import Path

    from mmcam.cli import main

    folder = save_vilt_vqa(tmp_path / "vilt")
    image = tmp_path / "scene.png"
    picture.save(image)
    code = main(
        [
            "vqa",
            str(image),
            "-q",
            QUESTION,
            "--model",
            str(folder),
            "--top",
            "2",
            "--why-not",
            "no",
            "-o",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["task"] == "vqa" and record["question"] == QUESTION
    assert record["targets"][0]["label"] == record["answer"] and len(record["targets"]) == 4
    for target in record["targets"]:
        assert [token for token, _ in target["question_weights"]] == [
            "what",
            "color",
            "is",
            "the",
            "circle",
            "?",
        ]
    written = {path.name for path in (tmp_path / "out").iterdir()}  # only what the record and report use
    assert written == {Path(t["map"]).name for t in record["targets"]} | {"report.html", ".mmcam-files"}


def test_vilt_maps_do_not_depend_on_its_random_patch_order(vilt, picture):
    """ViLT draws its patch tokens in a random order every forward; the adapter puts them back in
    row-major order, so the same input explained twice gives the same maps."""
    torch.manual_seed(1)
    first = explain_answers(vilt, picture, QUESTION, top=3).explanation
    torch.manual_seed(2)
    second = explain_answers(vilt, picture, QUESTION, top=3).explanation
    torch.testing.assert_close(first.raw, second.raw, atol=1e-6, rtol=1e-5)


def test_row_major_patches_keep_the_answers_and_order_the_grid(vilt):
    """Under the wrapper, every image token sits in its own cell (row-major) and the logits are the
    model's own; in a batch padded to its largest image, the padding tokens fill the padded cells and
    each image's logits equal its logits alone."""
    from mmcam.adapters.vqa import row_major_patches

    small = Image.fromarray((np.random.default_rng(1).random((24, 24, 3)) * 255).astype(np.uint8))
    large = Image.fromarray((np.random.default_rng(2).random((32, 40, 3)) * 255).astype(np.uint8))
    inputs = vilt.prepare([small, large], [QUESTION] * 2)
    embeddings = vilt.model.vilt.embeddings
    with torch.no_grad(), row_major_patches(vilt.model, embeddings):
        _, mask, (patch_index, (height, width)) = embeddings.visual_embed(
            inputs["pixel_values"], inputs["pixel_mask"], max_image_length=200
        )
        batched = vilt.model(**inputs).logits
    assert "visual_embed" not in vars(embeddings)  # the instance is as it was
    cells = patch_index[..., 0] * width + patch_index[..., 1]
    valid = mask[:, 1:].bool()
    assert torch.equal(cells[1], torch.arange(height * width))  # the large image fills the grid
    assert torch.equal(cells[0][valid[0]], valid[0].nonzero()[:, 0])  # the small one's own cells, in place
    with torch.no_grad():
        for index, image in enumerate([small, large]):
            alone = vilt.model(**vilt.prepare([image], [QUESTION])).logits
            torch.testing.assert_close(batched[index], alone[0], atol=1e-5, rtol=1e-4)


def test_one_vilt_explainer_serves_questions_of_any_length(vilt, picture):
    """ViLT's grid starts after the question's tokens: one explainer follows each input's layout."""
    explainer = vilt.explainer()
    for question in ("what color?", QUESTION + " is it red or blue ?"):
        shared = explain_answers(vilt, picture, question, top=2, explainer=explainer).explanation
        fresh = explain_answers(vilt, picture, question, top=2).explanation
        torch.testing.assert_close(shared.raw, fresh.raw, atol=1e-6, rtol=1e-5)
        assert shared.raw.shape[-2:] == (4, 5)


def test_answers_match_whatever_their_case_and_why_not_the_prediction_is_refused(vilt, picture):
    predicted = explain_answers(vilt, picture, QUESTION).answer
    named = explain_answers(vilt, picture, QUESTION, answers=["  CIRCLE "]).explanation.labels[0]
    assert "circle" in named
    with pytest.raises(ValueError, match="is the predicted answer"):
        explain_answers(vilt, picture, QUESTION, why_not=[predicted.upper()])


def test_vilt_attention_relevance_comes_with_word_weights_and_follows_the_patch_order(vilt, picture):
    """Relevance reads ViLT's attention over text and image tokens; the question's word weights come from
    the same backward, and the maps do not depend on the order ViLT drew its patches in."""
    before = snapshot(vilt.model)
    torch.manual_seed(1)
    first = explain_answers(vilt, picture, QUESTION, top=2, method="attention-relevance").explanation
    torch.manual_seed(2)
    second = explain_answers(vilt, picture, QUESTION, top=2, method="attention-relevance").explanation
    assert_unchanged(vilt.model, before)
    assert first.method == "attention-relevance" and first.raw.shape == (1, 2, 4, 5)
    torch.testing.assert_close(first.raw, second.raw, atol=1e-6, rtol=1e-5)
    assert (first.token_weights.abs().sum(dim=-1) > 0).all()


def test_words_the_model_does_not_know_are_said_once(tmp_path, capsys, picture):
    """A question or asked-for answer word outside a generative model's vocabulary becomes its unknown
    token: the command says which, once, and lists them in the JSON."""
    import json

    from mmcam.cli import main

    folder = save_blip_vqa(tmp_path / "blip")
    image = tmp_path / "scene.png"
    picture.save(image)
    question = "what color is the zebra?"
    options = ["--model", str(folder), "--answer", "purple", "-o", str(tmp_path / "out"), "--json"]
    assert main(["vqa", str(image), "-q", question, *options]) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if "does not know" in line]
    rest = ": it reads them as its unknown token, like any other unknown word; rephrase with words it knows"
    assert said == [
        f"mmcam: the model does not know 'zebra' in the question{rest}",
        f"mmcam: the model does not know 'purple' in the answers{rest}",
    ]
    assert json.loads(captured.out)["unknown_words"] == ["zebra", "purple"]


def test_one_question_about_many_images_in_one_pass_gives_what_each_image_gives(vilt, blip):
    from mmcam.adapters.vqa import explain_top_answers

    rng = np.random.default_rng(5)
    sizes = [(40, 56), (40, 40), (40, 56)]  # the two of one size share a pass
    images = [Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)) for size in sizes]
    for vqa, top in [(vilt, 2), (blip, 1)]:  # BLIP generates its answers for the batch at once
        together = explain_top_answers(vqa, images, QUESTION, top=top)
        for image, got in zip(images, together):
            alone = explain_answers(vqa, image, QUESTION, top=top)
            assert (got.answer, got.tokens) == (alone.answer, alone.tokens)
            assert got.explanation.labels == alone.explanation.labels
            torch.testing.assert_close(got.explanation.scores, alone.explanation.scores, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got.explanation.raw, alone.explanation.raw, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(
                got.explanation.token_weights, alone.explanation.token_weights, rtol=1e-4, atol=1e-6
            )
    with pytest.raises(ValueError, match="classifier-style"):
        explain_top_answers(blip, images, QUESTION, top=2)


def test_why_not_the_prediction_is_refused_whatever_its_case_by_generative_models_too(blip, picture):
    """The one rule of both kinds of VQA model: answers compare without case and surrounding spaces."""
    predicted = explain_answers(blip, picture, QUESTION).answer
    assert predicted.upper() != predicted  # the test asks about case: the answer has letters
    with pytest.raises(ValueError, match="is the predicted answer"):
        explain_answers(blip, picture, QUESTION, why_not=[f" {predicted.upper()} "])
