"""The chat cost bench's arithmetic (ratios, the line through the depths, the peers' scaling), and that
explaining a reply's words a group of targets at a time gives the maps and scores of one group of all."""

import pytest
import torch
from PIL import Image

from mmcam.chat_cost import Case, Depth, Measured, extrapolated, full_depth_estimate, linear_fit, ratio
from mmcam.cli.chat_cost import depths_of
from mmcam.loading import load_captioner
from tests.hf_tiny import save_llava


def measured(tool: str, depth: int, words: int, seconds: float, peak_mb: float, forward_seconds: float):
    case = Case("llava-1.5-7b", depth, tool, words, 30, 32, "cpu", "bfloat16")
    return Measured(case, seconds, peak_mb, forward_seconds)


def depth_row(depth: int, forward_mb: float, explain_mb: float, explain_s: float, forward_s: float) -> Depth:
    return Depth(
        depth,
        measured("forward", depth, 30, forward_s, forward_mb, forward_s),
        measured("mmcam", depth, 30, explain_s, explain_mb, forward_s),
        # 2 words in 9 s against a 3 s forward: 30 words are 45 forwards
        {"captum": measured("captum", depth, 2, 9.0, 1.0, 3.0)},
    )


def test_ratios_read_each_time_against_the_forward_of_its_own_process():
    row = depth_row(2, forward_mb=2000, explain_mb=2620, explain_s=12.0, forward_s=4.0)
    assert row.memory_ratio == 1.31
    assert row.time_ratio == 3.0
    assert row.peer_seconds("captum") == 135.0  # 9 s for 2 words, times 15
    assert row.peer_ratio("captum") == 15.0  # 45 forwards against mmcam's 3
    assert ratio(1, 3) == 0.33


def test_the_full_depth_comes_from_a_least_squares_line_in_the_depth():
    assert linear_fit([2, 4, 8], [5.0, 9.0, 17.0]) == pytest.approx((1.0, 2.0))
    assert extrapolated([2, 4, 8], [5.0, 9.0, 17.0], 32) == pytest.approx(65.0)
    # off the line: slope cov / var = 20 / (56 / 3) = 15 / 14, through the means (14 / 3, 6): intercept 1
    assert extrapolated([2, 4, 8], [4.0, 4.0, 10.0], 32) == pytest.approx(1 + 32 * 15 / 14)
    rows = [depth_row(d, 1000 + 100 * d, 1200 + 150 * d, 4.0 * d, 1.0 * d + 1) for d in (2, 4, 8)]
    estimate = full_depth_estimate("llava-1.5-7b", rows)  # full depth 32
    assert estimate["forward_mb"] == pytest.approx(4200)
    assert estimate["explain_mb"] == pytest.approx(6000)
    assert estimate["memory_ratio"] == round(6000 / 4200, 2)
    assert estimate["time_ratio"] == round(128 / 33, 2)
    with pytest.raises(ValueError, match="two depths"):
        linear_fit([4, 4], [1.0, 2.0])


def test_depths_are_layer_counts_or_full():
    assert depths_of(["2", "4", "full"]) == [2, 4, None]
    with pytest.raises(ValueError, match="layer counts"):
        depths_of(["0"])


def test_words_explained_a_group_at_a_time_equal_all_at_once(tmp_path):
    """max_targets_per_backward (the Explainer's chunk_size) below the number of words: the targets go a group
    at a time through their own backward over the same forward; maps, scores and weights are those of one
    backward of all of them."""
    captioner = load_captioner(str(save_llava(tmp_path / "llava")))
    tokenized = captioner.tokenize("a red circle and a blue square")
    inputs = {
        "pixel_values": captioner.preprocess([Image.new("RGB", (32, 32), (200, 30, 30))]),
        "input_ids": torch.tensor([tokenized.ids]),
    }
    from mmcam.adapters.captioning import word_targets

    targets = word_targets(tokenized)
    assert len(targets) == 7
    whole = captioner.explainer(method="gradcam", chunk_size=64)(inputs, targets)
    grouped = captioner.explainer(method="gradcam", chunk_size=3)(inputs, targets)
    assert whole.raw.abs().amax() > 0
    torch.testing.assert_close(grouped.raw, whole.raw)
    torch.testing.assert_close(grouped.maps, whole.maps)
    torch.testing.assert_close(grouped.scores, whole.scores)
    torch.testing.assert_close(grouped.weights, whole.weights)


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_the_bench_inputs_hold_the_images_tokens_and_every_word_is_explained(family, tmp_path):
    """The bench's inputs on tiny models of both families (the published configs are 7B): the prompt holds the
    image's tokens (LLaVA: (side / patch)^2 of them; Qwen2-VL: one, which the family expands for a 448 px
    image), the reply's words get maps on the image's token grid, and the logits are kept from the prompt's
    last token on (TailLogits): the scores are the full forward's log-probabilities."""
    from transformers import AutoModelForImageTextToText

    from mmcam.adapters.chat import _forward
    from mmcam.chat_cost import chat_inputs, explainer, word_targets
    from tests.hf_tiny import save_qwen_vl

    folder = save_llava(tmp_path / "m") if family == "llava" else save_qwen_vl(tmp_path / "m")
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    name = "llava-1.5-7b" if family == "llava" else "qwen2-vl-7b"
    chat, inputs, positions = chat_inputs(name, model, reply=4)
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == (16 if family == "llava" else 1)  # 32 px in 8 px patches; Qwen2-VL's one token
    assert positions == list(range(inputs["input_ids"].shape[1] - 4, inputs["input_ids"].shape[1]))
    targets = word_targets(inputs, positions)
    explanation = explainer(model, chat, inputs, positions[0] - 1, chunk=3)(inputs, targets)
    grid = (4, 4) if family == "llava" else (56, 56)
    assert explanation.raw.shape == (1, 4, *grid)
    assert torch.isfinite(explanation.raw).all() and explanation.raw.abs().amax() > 0
    with torch.no_grad():
        log_probs = _forward(chat, model, inputs)[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    expected = torch.stack([log_probs[p - 1, ids[p]] for p in positions])
    torch.testing.assert_close(explanation.scores[0], expected, rtol=1e-4, atol=1e-4)
