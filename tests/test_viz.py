"""The overlays: coloured and blended as tensor ops, they keep the pixels matplotlib and NumPy drew."""

import json

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from safetensors.torch import load_file

from mmcam.cli import main
from mmcam.viz.overlay import image_tensor, overlay, overlays, resize_map


def _drawn_by_matplotlib(image: Image.Image, heatmap: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """An overlay as mmcam drew it until 2026-12-06: matplotlib's jet called on the resized map,
    blended with the image in NumPy."""
    resized = resize_map(heatmap, (image.height, image.width)).numpy()
    colored = colormaps["jet"](resized)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return ((1 - alpha) * base + alpha * colored) * 255


def test_batched_overlays_are_the_pixels_matplotlib_draws():
    generator = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(70, 90, 3, generator=generator) * 255).byte().numpy())
    maps = torch.rand(5, 7, 11, generator=generator)
    maps[0] = 1.0  # the top colour, which matplotlib reads as its last entry
    maps[1] = 0.0
    batched = overlays(image_tensor(image), maps)
    assert batched.shape == (5, 70, 90, 3) and batched.dtype == torch.uint8
    for k in range(5):
        expected = _drawn_by_matplotlib(image, maps[k])
        np.testing.assert_allclose(batched[k].numpy(), expected, atol=0.5 + 1e-6)
        assert np.array_equal(np.asarray(overlay(image, maps[k])), batched[k].numpy())


def test_the_overlays_a_command_writes_are_those_matplotlib_drew(tmp_path, capsys):
    path = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)).save(path)
    command = ["classify", str(path), "--model", "torchvision:resnet18:random", "--top", "2"]
    assert main([*command, "--save-maps", "--json", "-o", str(tmp_path / "out")]) == 0
    record = json.loads(capsys.readouterr().out)
    maps = load_file(record["maps_file"])["maps"][0]
    image = Image.open(path)
    for k, target in enumerate(record["targets"]):
        with Image.open(target["map"]) as written:
            drawn = np.asarray(written).astype(float)
        assert np.abs(drawn - _drawn_by_matplotlib(image, maps[k])).max() <= 1
