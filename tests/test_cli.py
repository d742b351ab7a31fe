"""The mmcam command: JSON schema, files written, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmcam.cli import main


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "street scene.jpg"
    Image.fromarray((np.random.default_rng(0).random((90, 150, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_help_reads_well():
    result = subprocess.run(
        [sys.executable, "-m", "mmcam", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "classify", "bench"):
        assert command in result.stdout
    assert "gradcam++" in result.stdout


def test_classify_json_schema_and_files(image_path, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "classify",
            str(image_path),
            "--model",
            "torchvision:resnet18:random",
            "--top",
            "2",
            "--method",
            "gradcam++",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"task", "model", "layer", "method", "image", "size", "targets"}
    assert record["task"] == "classify" and record["layer"] == "layer4" and record["method"] == "gradcam++"
    assert record["size"] == [90, 150] and len(record["targets"]) == 2
    for target in record["targets"]:
        assert set(target) == {"label", "index", "score", "peak", "map"}
        x, y = target["peak"]
        assert 0 <= x < 150 and 0 <= y < 90
        with Image.open(target["map"]) as overlay:
            assert overlay.size == (150, 90)
    assert (out / "street-scene-classify.png").is_file()
    assert record["targets"][0]["score"] >= record["targets"][1]["score"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["classify", "{missing}", "--model", "torchvision:resnet18:random"], "no such file"),
        (
            ["classify", "{image}", "--model", "torchvision:resnet18:random", "--layer", "layr4"],
            "closest valid names",
        ),
        (["classify", "{image}", "--model", "nope"], "unknown model"),
        (
            ["classify", "{image}", "--model", "torchvision:resnet18:random", "--method", "gradkam"],
            "unknown method",
        ),
        (["classify", "{image}", "--model", "torchvision:resnet18:random", "--top", "0"], "at least 1"),
    ],
)
def test_errors_are_one_line_without_traceback(arguments, message, image_path, tmp_path):
    argv = [a.format(missing=tmp_path / "missing.png", image=image_path) for a in arguments]
    result = subprocess.run(
        [sys.executable, "-m", "mmcam", *argv, "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_image_in_a_batch_is_skipped_and_the_rest_go_on(image_path, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_text("nope")
    code = main(
        [
            "classify",
            str(broken),
            str(image_path),
            "--model",
            "torchvision:resnet18:random",
            "--top",
            "1",
            "-o",
            str(tmp_path / "o"),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped" in captured.err and "broken.png" in captured.err
    assert json.loads(captured.out)["image"] == str(image_path)


def test_version_and_a_missing_extra_in_one_line(capsys, monkeypatch):
    import mmcam
    from mmcam.cli import rl

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"mmcam {mmcam.__version__}"

    def without_gymnasium(arguments):
        raise ModuleNotFoundError("No module named 'gymnasium'", name="gymnasium")

    monkeypatch.setattr(rl, "run", without_gymnasium)
    assert main(["rl"]) == 2
    assert capsys.readouterr().err.strip() == (
        'mmcam: error: this needs the package gymnasium, which is not installed (pip install "mmcam[rl]")'
    )
