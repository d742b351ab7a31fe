"""Negligible evidence: a blank input's maps are drawn empty and flagged, a real scene's are not
(thresholds measured in docs/python.md, "Negligible evidence")."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam import explain
from mmcam.cli import main
from mmcam.cli.records import shown_maps
from mmcam.engine.evidence import NEGLIGIBLE, in_margin_units
from mmcam.loading import bundled_classifier, load_classifier
from mmcam.targets import TopClass
from mmcam.zoo.world import make_scenes

RESNET = "torchvision:resnet18:tests/fixtures/models/resnet18-shapes"
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def bundled():
    return bundled_classifier()


@pytest.mark.parametrize(
    "method",
    [
        "gradcam",
        "hirescam",
        "gradcam++",
        "layercam",
        "normgrad",
        "guided-backprop",
        "perturbation",
        "occlusion",
    ],
)
def test_a_blank_image_gets_flagged_empty_maps(bundled, method):
    """A white canvas: the bundled classifier rejects every class (logits near -7.6) and its Grad-CAM's raw
    maximum is 0.002; min-max scaling made that a full-range spot. Every method's map is now empty."""
    images = bundled.preprocess([Image.new("RGB", (128, 128), WHITE)])
    explanation = bundled.explainer(method=method)(images, [TopClass(0), TopClass(1)])
    assert explanation.negligible.all()
    assert (explanation.evidence < NEGLIGIBLE).all()
    assert shown_maps(explanation).abs().amax() == 0


def test_a_blank_images_tiny_grad_cam_is_kept_raw_and_not_scaled_up(bundled):
    images = bundled.preprocess([Image.new("RGB", (128, 128), WHITE)])
    explanation = bundled.explainer(method="gradcam")(images, [TopClass(0)])
    assert 0 < explanation.raw.amax() < NEGLIGIBLE  # the raw map is kept: only its display is empty
    assert explanation.negligible.all() and explanation.maps.amax() == 1  # min-max scaled a 0.002 map
    assert shown_maps(explanation).abs().amax() == 0


def test_real_scenes_of_a_trained_fixture_are_not_flagged():
    classifier = load_classifier(RESNET)
    scenes = [Image.fromarray(scene.image) for scene in make_scenes(4, seed=77)]
    explanation = classifier.explainer()(classifier.preprocess(scenes), [TopClass(0)])
    assert not explanation.negligible.any()
    assert (explanation.evidence > 10 * NEGLIGIBLE).all()
    assert (explanation.maps.flatten(1).amax(dim=1) == 1).all()


def test_a_one_cell_grid_is_flagged_constant():
    """A 1 x 1 image reaches layer4 as one cell: the map is constant whatever its evidence."""
    model = load_classifier(RESNET).model
    explanation = explain(model, torch.rand(2, 3, 1, 1), [0, 3], layer="layer4")
    assert explanation.raw.shape[-2:] == (1, 1)
    assert explanation.negligible.all() and explanation.maps.abs().amax() == 0  # constant maps scale to 0


def test_a_certain_words_evidence_is_judged_against_its_headroom():
    """d log p = (1 - p) d(margin): a log-probability of -1e-4 with 1e-4 nats of evidence has a logit
    margin's worth of evidence (1 nat), a logit with the same evidence has none."""
    evidence, scores = torch.tensor([[1e-4, 1e-4]]), torch.tensor([[-1e-4, -1e-4]])
    judged = in_margin_units(evidence, scores, ["log-probability", "logit"])
    assert judged[0, 0] == pytest.approx(1.0, rel=1e-3) and judged[0, 1] == pytest.approx(1e-4)


def test_the_command_says_once_and_records_it(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (128, 128), WHITE).save(folder / f"blank {name}.png")
    Image.fromarray(make_scenes(1, seed=77)[0].image).save(folder / "scene.png")
    out = tmp_path / "out"
    assert main(["classify", str(folder), "--top", "2", "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    records = {
        json.loads(line)["image"].rsplit("/", 1)[1]: json.loads(line) for line in captured.out.splitlines()
    }
    for name in ("blank a.png", "blank b.png"):
        for target in records[name]["targets"]:
            assert target["negligible"] is True and target["peak"] is None
            assert target["evidence"] < NEGLIGIBLE
    scene_top = records["scene.png"]["targets"][0]
    assert "negligible" not in scene_top and scene_top["evidence"] > 1
    warnings = [line for line in captured.err.splitlines() if "negligible evidence" in line]
    assert warnings == [warnings[0]] and warnings[0].startswith("mmcam: warning: 4 of 6 maps")
    report = (out / "report.html").read_text()
    assert "Negligible evidence for &#x27;" in report or "Negligible evidence for '" in report
    blank_map = np.asarray(
        Image.open(records["blank a.png"]["targets"][0]["map"]).convert("RGB"), dtype=float
    )
    assert np.ptp(blank_map, axis=(0, 1)).max() == 0  # one colour over the uniform canvas: no spot


def test_a_question_longer_than_vilt_reads_is_refused_in_one_line():
    """A 2000-word question to the ViLT fixture (32 text positions) failed with a tensor size mismatch."""
    from mmcam.adapters.vqa import explain_answers
    from mmcam.loading import load_vqa

    vilt = load_vqa("tests/fixtures/models/vilt-vqa-shapes")
    picture = Image.fromarray(make_scenes(1, seed=77)[0].image)
    with pytest.raises(ValueError, match=r"the question is \d+ tokens long; this model reads at most 32"):
        explain_answers(vilt, picture, " ".join(["what"] * 2000) + "?")


def test_a_caption_longer_than_blip_reads_is_refused_in_one_line():
    """A 2000-word --caption ran for over 5 minutes with no output; BLIP's fixture reads 32 text positions."""
    from mmcam.adapters.captioning import explain_caption
    from mmcam.loading import load_captioner

    blip = load_captioner("tests/fixtures/models/blip-caption-shapes")
    picture = Image.fromarray(make_scenes(1, seed=77)[0].image)
    with pytest.raises(ValueError, match=r"the caption is \d+ tokens long; this model reads at most 32"):
        explain_caption(blip, picture, caption=" ".join(["circle"] * 2000))


@pytest.fixture(scope="module")
def llava_vqa():
    from mmcam.loading import load_vqa

    return load_vqa("tests/fixtures/models/llava-shapes")


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray(make_scenes(1, seed=77)[0].image)


LLAVA_LIMIT = r"this model's language model reads at most 128 \(max_position_embeddings of its text config\)"


def test_a_question_past_llava_context_is_refused_in_one_line(llava_vqa, picture):
    """The LLaVA fixture reads 128 positions, 64 of them the image's: a 200-word question answered "the
    model's answer is empty"; the image's tokens and the answer's 10 count against the limit."""
    from mmcam.adapters.vqa import explain_answers

    with pytest.raises(
        ValueError, match=r"the prompt is \d+ tokens long .* " + LLAVA_LIMIT + ": shorten the q"
    ):
        explain_answers(llava_vqa, picture, " ".join(["what"] * 200) + "?")
    question = " ".join(["what"] * 40) + "?"  # 41 question tokens + 64 image tokens + template: under 128
    assert llava_vqa.prepare([picture], [question])["input_ids"].shape[1] + 10 <= 128


def test_a_given_answer_past_llava_context_is_refused(llava_vqa, picture):
    from mmcam.adapters.vqa import explain_answers

    with pytest.raises(ValueError, match="the given answer takes up to .* " + LLAVA_LIMIT):
        explain_answers(llava_vqa, picture, "what shape?", answers=[" ".join(["circle"] * 100)])


def test_a_caption_past_llava_context_is_refused(picture):
    """A 200-word given caption ran past the 128 positions the LLaVA fixture's language model reads."""
    from mmcam.adapters.captioning import explain_caption
    from mmcam.loading import load_captioner

    llava = load_captioner("tests/fixtures/models/llava-shapes")
    with pytest.raises(
        ValueError, match="the given caption takes up to .* " + LLAVA_LIMIT + ": shorten the c"
    ):
        explain_caption(llava, picture, caption=" ".join(["circle"] * 200))
    long_prompt = load_captioner("tests/fixtures/models/llava-shapes", prompt=" ".join(["describe"] * 100))
    with pytest.raises(ValueError, match="the caption takes up to 30 more; .*" + LLAVA_LIMIT):
        explain_caption(long_prompt, picture)


def test_a_question_longer_than_blip_vqa_reads_is_refused_in_one_line(picture):
    """A 200-word question to the BLIP VQA fixture (32 text positions) failed with a tensor size mismatch."""
    from mmcam.adapters.vqa import explain_answers
    from mmcam.loading import load_vqa

    blip = load_vqa("tests/fixtures/models/blip-vqa-shapes")
    with pytest.raises(ValueError, match=r"the question is \d+ tokens long; this model reads at most 32"):
        explain_answers(blip, picture, " ".join(["what"] * 200) + "?")
