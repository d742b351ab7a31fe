"""Choosing the layer and reading its layout."""

import pytest
import torch
import torchvision
from torch import nn

import mmcam
from mmcam.engine.layers import resolve_layer
from mmcam.engine.layouts import Layout, infer_layout


def test_layer_by_module_name_and_negative_index(resnet18):
    assert resolve_layer(resnet18, resnet18.layer4[1]) == "layer4.1"
    assert resolve_layer(resnet18, "layer4.-1.conv2") == "layer4.1.conv2"
    assert resolve_layer(resnet18, "layer4") == "layer4"


def test_unknown_layer_names_the_closest(resnet18):
    with pytest.raises(ValueError, match="closest valid names: layer4"):
        resolve_layer(resnet18, "layr4")
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(resnet18, nn.Conv2d(1, 1, 1))


def test_auto_layer_is_the_last_spatial_layer_with_a_grid_of_seven(resnet18, cam_net, images):
    """At 224 px the last stage (7x7); on smaller inputs the last stage with at least 7 cells a side
    (96 px: layer3 is 6x6, layer2 12x12); the last grid of all when none is that fine."""
    assert mmcam.explain(resnet18, torch.randn(1, 3, 224, 224), 0).layer == "layer4"
    assert mmcam.explain(resnet18, images, 0).layer == "layer2"
    assert mmcam.explain(cam_net, images, 0).layer == "features"
    coarse = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()  # fmt: skip
    assert mmcam.explain(coarse, torch.randn(1, 3, 16, 16), 0).layer == "2"  # 4x4, then 2x2: the last


def test_auto_layer_ends_a_stage_not_inside_a_downsampling_block():
    """A bottleneck block that downsamples runs its first convolution on the finer grid it was given:
    auto picks the stage before it, not that convolution."""
    torch.manual_seed(0)
    resnet50 = torchvision.models.resnet50(num_classes=4).eval()
    assert mmcam.explain(resnet50, torch.randn(1, 3, 128, 128), 0).layer == "layer3"


def test_auto_layer_skips_layers_the_target_does_not_depend_on(images):
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(3, 4, 3, padding=1)
            self.unused = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            kept = self.used(x)
            self.unused(x)
            return self.fc(kept.mean(dim=(2, 3)))

    assert mmcam.explain(TwoBranches().eval(), images, 0).layer == "used"


def test_auto_layer_skips_a_backbone_whose_head_reads_what_it_pooled_inside(images):
    """A Hugging Face backbone returns (grid, pooled) and its head reads the pooled tensor, computed inside
    the backbone: replacing the grid downstream reaches no score, so auto must pick a layer below it."""

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stage = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            grid = self.stage(x)
            return grid, grid.mean(dim=(2, 3))

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.backbone(x)[1])

    explanation = mmcam.explain(Classifier().eval(), images, 0)
    assert explanation.layer == "backbone.stage"
    assert explanation.raw.abs().sum() > 0


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((2, 64, 7, 7), (224, 224), Layout("nchw")),
        ((2, 7, 7, 768), (224, 224), Layout("nhwc")),
        ((2, 4, 5, 96), (128, 160), Layout("nhwc")),
        ((2, 197, 768), (224, 224), Layout("tokens", 1, (14, 14))),
        ((2, 198, 768), (224, 224), Layout("tokens", 2, (14, 14))),
        ((2, 1 + 14 * 20, 64), (224, 320), Layout("tokens", 1, (14, 20))),
        ((2, 64), (224, 224), None),
    ],
)
def test_layout_inference(shape, size, expected):
    assert infer_layout(torch.zeros(shape), size, strict=False) == expected


def test_unreadable_layout_says_what_to_pass():
    with pytest.raises(ValueError, match="pass layout="):
        infer_layout(torch.zeros(2, 64), (224, 224))
    with pytest.raises(ValueError, match="needs its patch grid"):
        Layout("tokens", prefix=1)


class Permute(nn.Module):
    def __init__(self, *order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x.permute(*self.order)


class LayoutNet(nn.Module):
    """conv -> NHWC per-position mix -> NCHW, and a token branch with a CLS token: the same grid three ways."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.to_nhwc = Permute(0, 2, 3, 1)
        self.mix = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.to_nchw = Permute(0, 3, 1, 2)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.tokens = nn.Identity()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        grid = self.to_nchw(self.act(self.mix(self.to_nhwc(self.conv(x)))))
        tokens = torch.cat([self.cls.expand(len(x), 1, 8), grid.flatten(2).transpose(1, 2)], dim=1)
        tokens = self.tokens(tokens)
        return self.fc(torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1))


def test_nhwc_and_token_layouts_give_the_nchw_maps():
    net = LayoutNet().eval()
    x = torch.randn(2, 3, 32, 48)
    nchw = mmcam.explain(net, x, [0, 2], layer="to_nchw")
    nhwc = mmcam.explain(net, x, [0, 2], layer="act")  # the same values as to_nchw's, channels last
    tokens = mmcam.explain(net, x, [0, 2], layer="tokens")
    explicit = mmcam.explain(net, x, [0, 2], layer="tokens", layout=Layout("tokens", prefix=1, grid=(8, 12)))
    assert nchw.raw.shape == (2, 1, 8, 12)
    for other in (nhwc, tokens, explicit):
        torch.testing.assert_close(other.raw, nchw.raw)
        torch.testing.assert_close(other.maps, nchw.maps)


def test_capturing_two_layers_keeps_gradients_flowing_through_both(resnet18, images):
    """The upper layer is recorded inside the graph that starts at the lower one, so both get exact gradients."""
    from mmcam.engine import LayerCapture

    for p in resnet18.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), LayerCapture(resnet18, ["layer3", "layer4"]) as capture:
            score = resnet18(images)[:, 1].sum()
        low, high = capture.activations["layer3"], capture.activations["layer4"]
        assert low.is_leaf and not high.is_leaf
        got_low, got_high = torch.autograd.grad(score, [low, high])
        reference = {}
        hooks = [
            getattr(resnet18, name).register_forward_hook(
                lambda m, a, o, name=name: reference.setdefault(name, o)
            )
            for name in ("layer3", "layer4")
        ]
        x = images.clone().requires_grad_(True)
        with torch.enable_grad():
            expected = torch.autograd.grad(
                resnet18(x)[:, 1].sum(), [reference["layer3"], reference["layer4"]]
            )
        for hook in hooks:
            hook.remove()
    finally:
        for p in resnet18.parameters():
            p.requires_grad_(True)
    torch.testing.assert_close(got_low, expected[0])
    torch.testing.assert_close(got_high, expected[1])
    assert all(not m._forward_hooks for m in resnet18.modules())
