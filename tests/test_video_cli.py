"""Clips on the command line: folders of frames and animated GIFs through a torchvision video model."""

import json

import numpy as np
import pytest
from PIL import Image

from mmcam.cli import main
from mmcam.videos import frame_indices, load_clip


def _frames(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(count)]


def test_clips_are_sampled_evenly_from_folders_and_gifs(tmp_path):
    assert frame_indices(10, 4) == [0, 3, 6, 9] and frame_indices(2, 3) == [0, 0, 1]
    frames = _frames(6)
    for t, frame in enumerate(frames):
        frame.save(tmp_path / f"frame-{t:02d}.png")
    loaded = load_clip(tmp_path, 3)
    assert [np.array(f).tolist() for f in loaded] == [np.array(frames[t]).tolist() for t in (0, 2, 5)]
    frames[0].save(tmp_path.parent / "clip.gif", save_all=True, append_images=frames[1:])
    assert len(load_clip(tmp_path.parent / "clip.gif", 4)) == 4
    with pytest.raises(ValueError, match="no such file or folder"):
        load_clip(tmp_path / "missing", 4)


def test_classify_video_gives_a_map_per_frame(tmp_path, capsys):
    clip = tmp_path / "clip"
    clip.mkdir()
    for t, frame in enumerate(_frames(4)):
        frame.save(clip / f"{t}.png")
    arguments = ["classify", str(clip), "--video", "--frames", "4", "--model", "torchvision:r3d_18:random"]
    assert main([*arguments, "--top", "2", "-o", str(tmp_path / "out"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frames"] == 4 and record["size"] == [40, 48] and len(record["targets"]) == 2
    for target in record["targets"]:
        t, x, y = target["peak"]
        assert 0 <= t < 4 and 0 <= x < 48 and 0 <= y < 40
        assert Image.open(target["map"]).size[0] > 0


def test_video_and_image_models_say_which_inputs_they_read(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output folder, mmcam-out, is never another test's
    image = tmp_path / "frame.png"
    _frames(1)[0].save(image)
    assert main(["classify", str(image), "--model", "torchvision:r3d_18:random"]) != 0
    assert "pass --video" in capsys.readouterr().err
    assert main(["classify", str(image), "--video"]) != 0
    assert "needs a video model" in capsys.readouterr().err
