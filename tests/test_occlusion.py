"""Occlusion and RISE: the perturbation family on one machinery (copies of the input with cells filled, in
batched forwards whose scores serve every target): planted evidence, K targets at once equal to one at a
time at the cost of one, and captum's Occlusion."""

import pytest
import torch
import torchvision
from torch import nn

import mmcam
from mmcam.engine.methods.perturbation import RISE, Occlusion, filling
from tests.conftest import ConvPoolLinear


class PlantedRegions(nn.Module):
    """A conv of 4 px cells (the layer ``cells``, an 8 x 8 grid on 32 px) whose features are summed over one
    region per score: score 0 reads cells (1-2, 1-2) alone, score 1 cells (5-6, 4-5), score 2 both."""

    REGIONS = ((slice(1, 3), slice(1, 3)), (slice(5, 7), slice(4, 6)))

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cells = nn.Sequential(nn.Conv2d(3, 5, 4, stride=4), nn.ReLU())
        with torch.no_grad():  # brighter pixels, larger features: removing a region lowers its score
            self.cells[0].weight.abs_()
            self.cells[0].bias.zero_()

    def forward(self, x):
        features = self.cells(x)
        first, second = (features[:, :, rows, columns].sum(dim=(1, 2, 3)) for rows, columns in self.REGIONS)
        return torch.stack([first, second, first + second], dim=1)


def _images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) + 0.5


@pytest.mark.parametrize("fill", ["background", "blur", "mean", "zero", 0.25])
def test_occlusion_peaks_on_the_one_region_a_score_reads(fill):
    model = PlantedRegions().eval()
    explanation = mmcam.explain(
        model, _images(), [[0, 1]] * 2, layer="cells", method=Occlusion(fill=fill), signed=True
    )
    assert explanation.raw.shape == (2, 2, 8, 8)  # the layer's cells
    for k, (rows, columns) in enumerate(PlantedRegions.REGIONS):
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[rows, columns] = True
        maps = explanation.raw[:, k]
        assert (
            maps[:, ~inside].abs() < 1e-5
        ).all()  # a cell the score does not read: filling it changes nothing
        assert (maps[:, inside].abs().amax(dim=1) > 1e-2).all()
        peaks = maps.abs().flatten(1).argmax(dim=1)
        assert inside.flatten()[peaks].all()


def _counted(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


def test_all_targets_come_from_one_set_of_forwards_and_equal_one_target_at_a_time():
    model = ConvPoolLinear(classes=16).eval()
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    method = Occlusion(window=4, stride=2, cell=1, batch_size=50)
    calls = _counted(model)
    every = mmcam.explain(model, images, [list(range(16))] * 2, layer="features", method=method, signed=True)
    forwards_for_all = len(calls)
    for k in range(16):
        calls.clear()
        one = mmcam.explain(model, images, [k, k], layer="features", method=method, signed=True)
        torch.testing.assert_close(every.raw[:, k], one.raw[:, 0], rtol=1e-5, atol=1e-6)
        assert len(calls) == forwards_for_all
    assert (
        forwards_for_all == 1 + 5
    )  # the explainer's forward, then 11 x 11 windows of 2 images, 25 a forward


@pytest.mark.parametrize(
    "window, stride, baseline", [(8, 4, 0.0), (5, 3, 0.3), (1, 1, "tensor"), (30, 1, 0.0)], ids=str
)
def test_occlusion_equals_captums(window, stride, baseline):
    """captum's Occlusion with the window over all channels, the same window, stride and baseline: its
    attribution is the same at every channel and equals mmcam's signed map (1e-5), also where the last
    window is cut at the edge (30 px, window 8, stride 4)."""
    captum_attr = pytest.importorskip("captum.attr", reason="the comparison needs the dev extra (captum)")
    model = ConvPoolLinear(classes=5).eval()
    images = torch.rand(2, 3, 30, 30, generator=torch.Generator().manual_seed(3))
    if baseline == "tensor":
        baseline = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(4))
    classes = [1, 4]
    method = Occlusion(window=window, stride=stride, fill=baseline, cell=1, chunk=7)  # chunks cut rows
    ours = mmcam.explain(model, images, [classes] * 2, layer="features", method=method, signed=True)
    occlusion = captum_attr.Occlusion(model)
    for k, c in enumerate(classes):
        expected = occlusion.attribute(
            images,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=baseline,
            target=c,
        )
        torch.testing.assert_close(ours.raw[:, k], expected[:, 0], rtol=0, atol=1e-5)


def test_occlusion_on_a_token_model_fills_patches():
    """On a ViT's token layer the cells are its patches: filling one patch (8 x 8 px) with the background
    estimate drops the score by what the map says at that patch."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
    ).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ours = mmcam.explain(
        model, images, [[1, 3]] * 2, layer="encoder.layers.0.ln_1", method="occlusion", signed=True
    )
    assert ours.raw.shape == (2, 2, 4, 4)
    fill = filling(images, "background")
    with torch.no_grad():
        clean = model(images)
        for row, column in [(0, 0), (2, 3)]:
            occluded = images.clone()
            box = (..., slice(8 * row, 8 * row + 8), slice(8 * column, 8 * column + 8))
            occluded[box] = fill[box]
            drop = clean - model(occluded)
            torch.testing.assert_close(ours.raw[:, :, row, column], drop[:, [1, 3]], rtol=1e-4, atol=1e-5)


def test_background_fill_is_the_frame_median():
    image = torch.full((1, 3, 20, 20), 0.5)
    image[0, :, 1, 1:4] = torch.tensor([0.9, 0.1, 0.2])[:, None]  # not on the frame
    image[0, 0, 0, :3] = 1.0  # three outliers on the frame (of 76 pixels)
    image[0, 2, 5:15, 5:15] = 0.0  # an object inside
    torch.testing.assert_close(filling(image, "background"), torch.full_like(image, 0.5))


def test_rise_is_the_score_weighted_mean_of_its_masks():
    """L_k = 1 / (N p) sum_n y_k(x m_n + f (1 - m_n)) m_n, each masked image scored by a forward of its own."""
    model = ConvPoolLinear(classes=3).eval()
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    method = RISE(masks=12, cells=(3, 4), fill="mean", chunk=5)
    ours = mmcam.explain(model, images, [[0, 2]] * 2, layer="features", method=method)
    masks = torch.cat(list(method.random_masks((24, 24), (3, 4), torch.device("cpu"))))
    assert masks.shape == (12, 24, 24) and 0 <= masks.min() and masks.max() <= 1
    fill = filling(images, "mean")
    expected = torch.zeros(2, 2, 24, 24)
    with torch.no_grad():
        for mask in masks:
            scores = model(images * mask + fill * (1 - mask))[:, [0, 2]]
            expected += scores[:, :, None, None] * mask / (12 * 0.5)
    torch.testing.assert_close(ours.raw, torch.relu(expected), rtol=1e-4, atol=1e-5)


def test_rise_masks_keep_about_p_of_the_image_and_are_seeded():
    method = RISE(masks=400, keep=0.3, cells=(4, 4), chunk=128)
    masks = torch.cat(list(method.random_masks((40, 40), (4, 4), torch.device("cpu"))))
    assert abs(float(masks.mean()) - 0.3) < 0.03
    again = torch.cat(list(method.random_masks((40, 40), (4, 4), torch.device("cpu"))))
    torch.testing.assert_close(masks, again)
    assert masks.std(dim=0).min() > 0.1  # every pixel is kept by some masks and not by others


def test_rise_peaks_on_the_region_a_score_reads():
    model = PlantedRegions().eval()
    explanation = mmcam.explain(
        model, _images(), [[0, 1]] * 2, layer="cells", method=RISE(masks=500, fill="zero")
    )
    for k, (rows, columns) in enumerate(PlantedRegions.REGIONS):
        cells = nn.functional.avg_pool2d(explanation.raw[:, k], 4)  # (2, 8, 8): the mean per 4 px cell
        peaks = cells.flatten(1).argmax(dim=1)
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[rows, columns] = True
        assert inside.flatten()[peaks].all()


def test_occlusion_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown fill 'gray'"):
        Occlusion(fill="gray")
    with pytest.raises(ValueError, match="window must be a positive number of cells"):
        Occlusion(window=0)
    model = ConvPoolLinear().eval()
    with pytest.raises(
        ValueError, match=r"the window \(40, 40\) is larger than the grid of cells \(24, 24\)"
    ):
        mmcam.explain(model, torch.rand(1, 3, 24, 24), 0, layer="features", method=Occlusion(window=40))


def test_every_task_command_explains_with_occlusion(tmp_path, capsys):
    """--method occlusion on classify, caption, vqa and rl (the bundled shapes models): every target of an
    input from one set of masked forwards, the record says so."""
    import json

    from PIL import Image

    from mmcam.cli import main
    from mmcam.zoo import make_scenes

    image = tmp_path / "scene.png"
    Image.fromarray(make_scenes(1, seed=11, n_objects=(3, 3))[0].image).save(image)
    commands = {
        "classify": ["classify", str(image), "--top", "3", "--no-figures"],
        "caption": ["caption", str(image), "--no-figures"],
        "vqa": ["vqa", str(image), "-q", "what color is the circle?", "--top", "2", "--no-figures"],
        "rl": ["rl", "--episodes", "1"],
    }
    for task, command in commands.items():
        assert main([*command, "--method", "occlusion", "--json", "-o", str(tmp_path / task)]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert records and all(r["task"] == task and r["method"] == "occlusion" for r in records)
        assert all(t["peak"] is not None for r in records for t in r["targets"])


def test_long_occlusion_shows_its_progress_and_short_one_does_not(capsys):
    model = ConvPoolLinear().eval()
    image = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    mmcam.explain(model, image, 0, layer="features", method=Occlusion(cell=1, batch_size=2, chunk=16))
    assert "occlusion" in capsys.readouterr().err  # 144 windows, 2 a forward: 72 forwards
    mmcam.explain(model, image, 0, layer="features", method=Occlusion(cell=1, batch_size=64))
    assert "occlusion" not in capsys.readouterr().err  # 3 forwards


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    from PIL import Image

    from mmcam.zoo import make_scenes

    image = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(make_scenes(1, seed=11, n_objects=(3, 3))[0].image).save(image)
    return image


@pytest.mark.parametrize(
    ("options", "method"),
    [
        (["--occlusion-window", "2", "--occlusion-stride", "1", "--fill", "0.25"], Occlusion(2, 1, 0.25)),
        (["--rise-masks", "40", "--rise-cells", "4", "--fill", "mean"], RISE(masks=40, cells=4, fill="mean")),
    ],
)
def test_classify_builds_occlusion_and_rise_from_their_options(scene_file, tmp_path, capsys, options, method):
    """The command line's settings reach the method: the maps classify saves equal those of the Python API
    with the same settings, and differ from the method's defaults."""
    import json

    from PIL import Image
    from safetensors import safe_open

    from mmcam.adapters.classification import top_targets
    from mmcam.cli import main
    from mmcam.loading import load_classifier

    argv = ["classify", str(scene_file), "--top", "1", "--method", method.name, "--save-maps", "--json"]
    assert main([*argv, *options, "--no-figures", "-o", str(tmp_path)]) == 0
    with safe_open(json.loads(capsys.readouterr().out)["maps_file"], "pt") as saved:
        raw = saved.get_tensor("raw")
    classifier = load_classifier("shapes")
    pixels = classifier.preprocess([Image.open(scene_file).convert("RGB")])
    expected = classifier.explainer(None, method)(pixels, top_targets(1)).raw
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-6)
    default = classifier.explainer(None, method.name)(pixels, top_targets(1)).raw
    assert raw.abs().amax() > 0 and not torch.allclose(raw, default, atol=1e-3)


COMMANDS = {
    "classify": lambda image: ["classify", str(image)],
    "caption": lambda image: ["caption", str(image)],
    "vqa": lambda image: ["vqa", str(image), "-q", "what color is the circle?"],
    "rl": lambda image: ["rl", "--episodes", "1", "--max-steps", "2"],
    "eval": lambda image: ["eval", "--task", "classify", "--limit", "1", "--metric", "pointing"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_hands_its_occlusion_and_rise_settings_to_the_method(
    command, scene_file, tmp_path, capsys
):
    """Bad values are refused at parse time naming the option; a setting of a method not asked for is
    refused before any work; a window larger than the explained grid reaches occlusion, which refuses it
    (so the option got there, in every command)."""
    from mmcam.cli import main

    argv = COMMANDS[command](scene_file)
    method = ["--methods" if command == "eval" else "--method"]
    for bad, message in [
        (["--occlusion-window", "0"], "argument --occlusion-window: must be 1 or more, got 0"),
        (
            ["--fill", "gray"],
            "argument --fill: expected one of background, blur, mean, zero, drop or a number",
        ),
        (["--rise-cells", "two"], "argument --rise-cells: expected a whole number, got 'two'"),
    ]:
        with pytest.raises(SystemExit):
            main([*argv, *bad, "-o", str(tmp_path / "bad")])
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    assert main([*argv, *method, "gradcam", "--rise-masks", "10", "-o", str(tmp_path / "other")]) == 2
    assert "--rise-masks is a setting of rise, not of gradcam" in capsys.readouterr().err
    too_large = [*method, "occlusion", "--occlusion-window", "99", "-o", str(tmp_path / "large")]
    assert main([*argv, *too_large]) == 2
    assert "the window (99, 99) is larger than the grid of cells" in capsys.readouterr().err


def _vit_blocks(model, tokens):
    """The ViT fixture's classifier from its embeddings' output on: the blocks, the final norm, the head
    on the class token (transformers' ViTForImageClassification.forward, written out)."""
    for layer in model.vit.layers:
        tokens = layer(tokens, None)
    return model.classifier(model.vit.layernorm(tokens)[:, 0])


@pytest.mark.parametrize("window", [1, 2])
def test_dropping_tokens_equals_a_forward_without_them(window):
    """fill='drop' on a ViT (the trained fixture): each window's score drop is that of a forward by hand with
    the window's patch tokens left out of the embeddings' output (class token and the others kept, in
    order); the map keeps its positive part, as every map does."""
    from PIL import Image

    from mmcam.loading import load_classifier
    from mmcam.zoo.world import make_scenes

    classifier = load_classifier("tests/fixtures/models/vit-shapes")
    model = classifier.model
    scene = make_scenes(1, 51_000, n_objects=2)[0]
    pixels = classifier.preprocess([Image.fromarray(scene.image)])
    classes = [o.class_index for o in scene.objects]
    method = Occlusion(window=window, stride=window, fill="drop")
    raw = classifier.explainer(None, method)(pixels, [classes]).raw[0]
    expected = torch.zeros(len(classes), 8, 8)
    with torch.no_grad():
        tokens = model.vit.embeddings(pixels)
        clean = _vit_blocks(model, tokens)[0, classes]
        torch.testing.assert_close(clean, model(pixels).logits[0, classes])
        for top in range(0, 8, window):
            for left in range(0, 8, window):
                dropped = {
                    1 + row * 8 + column
                    for row in range(top, top + window)
                    for column in range(left, left + window)
                }
                kept = [t for t in range(tokens.shape[1]) if t not in dropped]
                drop = clean - _vit_blocks(model, tokens[:, kept])[0, classes]
                expected[:, top : top + window, left : left + window] = drop[:, None, None]
    assert expected.amax() > 1  # the objects' tokens carry their classes
    torch.testing.assert_close(raw, expected.clamp(min=0), rtol=1e-4, atol=1e-5)


def test_tokens_are_dropped_only_where_a_layer_has_them():
    model = ConvPoolLinear().eval()
    with pytest.raises(ValueError, match="dropping tokens needs a layer whose output is each image's tokens"):
        mmcam.explain(model, torch.rand(1, 3, 24, 24), 0, layer="features", method=Occlusion(fill="drop"))
    with pytest.raises(ValueError, match="RISE's masks are smooth, not whole tokens"):
        RISE(fill="drop")
    with pytest.raises(ValueError, match="give no cell"):
        Occlusion(fill="drop", cell=1)
