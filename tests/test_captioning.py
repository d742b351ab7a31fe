"""Explaining caption words on real Hugging Face captioner families built from tiny configs (offline)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import explain_caption, explain_captions, word_targets
from mmcam.loading import load_captioner
from tests.hf_tiny import save_blip_captioner, save_git_captioner, save_vision_encoder_decoder
from tests.model_state import assert_unchanged, snapshot

FAMILIES = {
    "blip": save_blip_captioner,
    "git": save_git_captioner,
    "vision-encoder-decoder": save_vision_encoder_decoder,
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def captioner(request, tmp_path_factory):
    folder = FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    return load_captioner(str(folder))


@pytest.fixture
def picture():
    return Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))


def test_every_word_gets_a_nontrivial_map_and_the_model_is_untouched(captioner, picture):
    before = snapshot(captioner.model)
    result = explain_caption(captioner, picture, caption="a red circles to the left", whole_caption=True)
    assert_unchanged(captioner.model, before)
    explanation = result.explanation
    assert result.words == ["a", "red", "circles", "to", "the", "left"]
    assert explanation.labels[0] == [*result.words, "a red circles to the left"]
    assert explanation.indices[0] == [0, 1, 2, 3, 4, 5, None]
    assert explanation.maps.shape[:2] == (1, 7)
    assert (explanation.maps.flatten(2).std(dim=-1) > 0.05).all()
    assert (explanation.scores < 0).all()  # log-probabilities


def test_all_words_share_one_forward(captioner, picture):
    calls = []
    handle = captioner.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        explain_caption(captioner, picture, caption="a red circle to the left of a blue square")
    finally:
        handle.remove()
    assert len(calls) == 1


def test_word_score_is_the_sum_of_its_token_log_probabilities(captioner, picture):
    caption = "a red circles"
    result = explain_caption(captioner, picture, caption=caption, whole_caption=True)
    tokenized = captioner.tokenize(caption)
    assert tokenized.positions[2] == [3, 4]  # "circles" = circle ##s
    inputs = {"pixel_values": captioner.preprocess([picture]), "input_ids": torch.tensor([tokenized.ids])}
    with torch.no_grad():
        log_probs = captioner.forward(captioner.model, inputs).log_softmax(-1)[0]
    per_token = [float(log_probs[p - 1, tokenized.ids[p]]) for p in range(1, len(tokenized.ids))]
    expected = [per_token[0], per_token[1], sum(per_token[2:4]), sum(per_token)]
    torch.testing.assert_close(result.explanation.scores[0], torch.tensor(expected), rtol=1e-4, atol=1e-4)


def test_a_batch_of_captions_of_different_lengths_gives_what_each_image_gives_alone(captioner, picture):
    """Target k is each caption's k-th word, the token ids padded on the right; one forward for all."""
    other = Image.fromarray((np.random.default_rng(5).random((48, 48, 3)) * 255).astype(np.uint8))
    captions = ["a red circle to the left of a blue square", "blue squares"]
    calls = []
    handle = captioner.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        pixels = captioner.preprocess([picture, other])
        batch = explain_captions(captioner, pixels, captions, words="content", whole_caption=True)
    finally:
        handle.remove()
    assert len(calls) == 1
    for image, caption, together in zip([picture, other], captions, batch):
        alone = explain_caption(captioner, image, caption=caption, words="content", whole_caption=True)
        assert together.caption == caption and together.words == alone.words
        assert together.explanation.labels == alone.explanation.labels
        assert together.explanation.indices == alone.explanation.indices
        torch.testing.assert_close(
            together.explanation.scores, alone.explanation.scores, atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(together.explanation.maps, alone.explanation.maps, atol=1e-3, rtol=0)
    assert batch[1].explanation.labels[0] == ["blue", "squares", "blue squares"]


def test_content_words_and_counterfactual_maps(captioner, picture):
    content = explain_caption(captioner, picture, caption="a red circle to the left", words="content")
    assert content.explanation.labels[0] == ["red", "circle", "left"]
    against = explain_caption(
        captioner, picture, caption="a red circle", words="content", counterfactual=True
    )
    assert against.explanation.labels[0] == ["not red", "not circle"]
    torch.testing.assert_close(against.explanation.scores, -content.explanation.scores[:, :2])


def test_bad_word_selection_and_empty_captions_say_what_to_do(captioner, picture):
    with pytest.raises(ValueError, match="use one of all, content"):
        explain_caption(captioner, picture, caption="a red circle", words="nouns")
    with pytest.raises(ValueError, match="empty"):
        explain_caption(captioner, picture, caption="   ")
    with pytest.raises(ValueError, match="no content words"):
        word_targets(captioner.tokenize("a the of"), "content")


def test_caption_command_writes_a_figure_and_one_target_per_word(tmp_path, capsys):
    import json

    from mmcam.cli import main

    folder = save_blip_captioner(tmp_path / "blip")
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(1).random((30, 45, 3)) * 255).astype(np.uint8)).save(image)
    code = main(
        [
            "caption",
            str(image),
            "--model",
            str(folder),
            "--caption",
            "a blue square",
            "-o",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["task"] == "caption" and record["caption"] == "a blue square"
    assert record["model"] == str(folder) and record["size"] == [30, 45]
    assert [(t["label"], t["index"]) for t in record["targets"]] == [("a", 0), ("blue", 1), ("square", 2)]
    assert all((tmp_path / "out" / Path(t["map"]).name).is_file() for t in record["targets"])
    written = {path.name for path in (tmp_path / "out").iterdir()}  # only what the record and report use
    assert written == {Path(t["map"]).name for t in record["targets"]} | {"report.html", ".mmcam-files"}


def test_families_come_from_the_registries_in_docstrings_and_messages(tmp_path):
    """Each task's families are registry entries: the loaders' docstrings and refusals list every one of
    them (the 9 chat families too), and no adapter branches on a class name."""
    import ast

    from transformers import BertConfig

    import mmcam.adapters
    from mmcam.adapters import captioning, chat, vqa
    from mmcam.loading import load_captioner, load_vqa

    chat_titles = [entry.title for entry in chat.FAMILIES.values()]
    assert len(chat.FAMILIES) == 9
    for function, own in ((load_captioner, captioning.FAMILIES), (load_vqa, vqa.FAMILIES)):
        assert all(entry.title in function.__doc__ for entry in [*own.values(), *chat.FAMILIES.values()])
    BertConfig(
        num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path)
    for function, own in ((load_captioner, captioning.FAMILIES), (load_vqa, vqa.FAMILIES)):
        with pytest.raises(ValueError, match="is a bert model") as refused:
            function(str(tmp_path))
        assert all(entry.title in str(refused.value) for entry in own.values()) and all(
            title in str(refused.value) for title in chat_titles
        )
    with pytest.raises(ValueError, match="--prompt is for chat models") as refused:
        load_captioner("shapes", prompt="Describe it.")
    assert all(title in str(refused.value) for title in chat_titles)
    for path in Path(mmcam.adapters.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                assert not any(
                    isinstance(side, ast.Attribute) and side.attr == "__name__" for side in sides
                ), f"{path.name}:{node.lineno} branches on a class name"
