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
    _check_word_scores(explanation, chat, model, inputs, positions)


@pytest.mark.parametrize("rows, columns", [(0, 0), (1, 1), (2, 3), (4, 4)])
def test_smolvlm_image_tokens_are_spelled_as_the_processor_spells_them(rows, columns, tmp_path):
    """SmolVLM's prompt, built without its tokenizer (``SpelledTiles``): the same tokens in the same order as
    the tiny Idefics3 processor's text for ``rows`` x ``columns`` tiles, each tag and newline one token, with
    ``image_seq_len`` image tokens per tile (here (32 / 8)^2 / 2^2 = 4, as the processor was saved)."""
    import re

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmcam.chat_cost import SpelledTiles
    from tests.hf_tiny import save_idefics3

    folder = save_idefics3(tmp_path / "m")
    processor = AutoProcessor.from_pretrained(folder)
    config = AutoModelForImageTextToText.from_pretrained(folder).config
    spelled = SpelledTiles.of(config)
    assert spelled.tile_tokens == processor.image_seq_len == 4
    tiles = {"rows": [[rows]], "cols": [[columns]]}
    text = processor.replace_image_token(tiles, 0)
    image, tag = config.image_token_id, config.image_token_id - 1
    expected = [image if token == "<image>" else tag for token in re.findall(r"<[^<>]+>|\n", text)]
    assert "".join(re.findall(r"<[^<>]+>|\n", text)) == text  # nothing in the text but tags and newlines
    ids = spelled.tokenizer(spelled.replace_image_token(tiles, 0))["input_ids"]
    assert ids == expected
    assert ids.count(image) == 4 * (rows * columns + 1)


def test_smolvlm_bench_explains_every_word_from_the_tiles(tmp_path):
    """The bench's inputs on a tiny Idefics3 (SmolVLM's family): a square image of 4 tiles' side becomes
    4 x 4 tiles and the global image (17 tiles' image tokens in the expanded prompt), and every reply word gets
    a map, scored with the full forward's log-probabilities."""
    from transformers import AutoModelForImageTextToText

    from mmcam.chat_cost import chat_inputs, explainer, word_targets
    from tests.hf_tiny import save_idefics3

    model = AutoModelForImageTextToText.from_pretrained(save_idefics3(tmp_path / "m")).eval()
    chat, inputs, positions = chat_inputs("smolvlm-2b", model, reply=4)
    assert inputs["pixel_values"].shape == (1, 3, 128, 128)
    expanded, _ = chat.expanded_ids(inputs)
    assert int((expanded == model.config.image_token_id).sum()) == 17 * 4
    explanation = explainer(model, chat, inputs, positions[0] - 1, chunk=3)(
        inputs, word_targets(inputs, positions)
    )
    assert explanation.raw.shape[:2] == (1, 4)
    assert torch.isfinite(explanation.raw).all() and explanation.raw.abs().amax() > 0
    _check_word_scores(explanation, chat, model, inputs, positions)


def test_word_targets_on_kept_rows_share_one_row_gradient_per_backward():
    """K word targets on ``TailLogits`` read the rows through one shared ``unbind``: scores and gradients are
    those of targets indexing the full logits, and a batched backward makes one gradient as large as all the
    rows (S, N, T, V), not one per target (before: K of them, added up; 300 words cost 300 per backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mmcam.engine.gradients import target_gradients
    from mmcam.targets import TailLogits, TokenLogProb

    torch.manual_seed(0)
    rows, vocabulary, chunk = 12, 50, 4
    hidden = torch.randn(1, rows, 8, requires_grad=True)
    head = torch.randn(8, vocabulary)
    ids = torch.randint(0, vocabulary, (1, rows + 1))
    targets = [TokenLogProb(ids, [p], f"w{p}") for p in range(1, rows + 1)]

    class RowGradients(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.shape == (chunk, 1, rows, vocabulary):
                RowGradients.count += 1
            return out

    found = {}
    for name, output in (("indexed", hidden @ head), ("shared", TailLogits(hidden @ head, 0))):
        scores = torch.stack([target(output) for target in targets], dim=1)
        RowGradients.count = 0
        with RowGradients():
            gradients = target_gradients(scores, hidden, chunk_size=chunk)
        found[name] = scores, gradients, RowGradients.count
    torch.testing.assert_close(found["shared"][0], found["indexed"][0])
    torch.testing.assert_close(found["shared"][1], found["indexed"][1])
    assert found["indexed"][2] >= rows  # a row gradient per target (and more for the sums)
    assert found["shared"][2] == rows // chunk  # one per batched backward


def _check_word_scores(explanation, chat, model, inputs, positions):
    """Each word's score is its log-probability in the plain forward: log p(w_p | w_<p) at row p - 1."""
    from mmcam.adapters.chat import _forward

    with torch.no_grad():
        log_probs = _forward(chat, model, inputs)[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    expected = torch.stack([log_probs[p - 1, ids[p]] for p in positions])
    torch.testing.assert_close(explanation.scores[0], expected, rtol=1e-4, atol=1e-4)
