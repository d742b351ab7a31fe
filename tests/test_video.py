"""Video and volumes: (B, C, T, H, W) inputs explained at 3-D conv layers give (B, K, T, H, W) maps."""

import pytest
import torch
import torchvision
from torch import nn

import mmcam

VIDEO_METHODS = ["gradcam", "gradcam++", "smooth-gradcam++", "xgradcam", "layercam", "scorecam"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(3)
    return torch.randn(1, 3, 4, 32, 32)


@pytest.fixture(scope="module", params=["r3d_18", "r2plus1d_18"])
def video_net(request):
    torch.manual_seed(0)
    return getattr(torchvision.models.video, request.param)(num_classes=5).eval()


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_torchvision_video_models_give_one_map_per_frame(video_net, clip, method):
    got = mmcam.explain(video_net, clip, [[1, 3]], layer="layer2", method=method)
    assert got.maps.shape == (1, 2, 4, 32, 32)
    assert got.raw.shape == (1, 2, 2, 8, 8)  # layer2: frames strided by 2, pixels by 4
    assert torch.isfinite(got.maps).all() and got.maps.amin() >= 0 and got.maps.amax() <= 1


def test_auto_layer_of_a_video_model_is_its_last_block_with_a_fine_grid(video_net, clip):
    """The 7-cell rule reads a frame's height and width, not the frames: at 32 px layer2 is 8x8, layer3 4x4."""
    assert mmcam.explain(video_net, clip, 1).layer == "layer2"


def test_video_gradcam_is_the_formula_over_time_and_space(video_net, clip):
    got = mmcam.explain(video_net, clip, 2, layer="layer2")
    captured = {}
    handle = video_net.layer2.register_forward_hook(lambda m, a, o: captured.setdefault("a", o))
    x = clip.clone().requires_grad_(True)
    score = video_net(x)[0, 2]
    handle.remove()
    (gradient,) = torch.autograd.grad(score, captured["a"])
    alpha = gradient[0].mean(dim=(1, 2, 3))
    expected = torch.relu(torch.einsum("c,cthw->thw", alpha, captured["a"][0].detach()))
    torch.testing.assert_close(got.raw[0, 0], expected, rtol=1e-4, atol=1e-6)


class Tiny3D(nn.Module):
    """Two positive 3-D convs (no bias) -> global average pool -> positive linear: the score counts evidence,
    and only the cells near non-zero input have any."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv3d(4, 8, 3, stride=(1, 2, 2), padding=1, bias=False),
            nn.ReLU(),
        )
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            for module in (self.features[0], self.features[2], self.fc):
                module.weight.abs_()

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_planted_evidence_in_one_frame_region_is_where_the_map_peaks(method):
    clip = torch.zeros(1, 1, 6, 32, 32)
    clip[0, 0, 4, 20:26, 6:12] = 1.0  # frame 4, rows 20-25, columns 6-11: the only evidence
    got = mmcam.explain(Tiny3D().eval(), clip, 0, layer="features", method=method)
    assert got.maps.shape == (1, 1, 6, 32, 32)
    peak = torch.nonzero(got.maps[0, 0] == got.maps[0, 0].max())[0].tolist()
    frame, row, column = peak
    assert frame in (3, 4, 5) and 18 <= row <= 27 and 4 <= column <= 13, peak
    far = got.maps[0, 0, 0, :, 20:]  # two frames away, on the other side of the picture
    assert far.max() < 0.05
