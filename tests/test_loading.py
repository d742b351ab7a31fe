"""Loading a user's checkpoint: nothing wrong said with confidence, nothing run that was not asked (issue 32)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmcam.cli import main
from mmcam.loading import load_captioner, load_classifier, load_vqa

FIXTURES = Path(__file__).parent / "fixtures" / "models"
ROOT = Path(__file__).resolve().parents[1]


def test_a_checkpoint_for_another_task_is_refused_naming_its_task(tmp_path, capsys):
    """BLIP's captioner and VQA model share ``model_type`` "blip": loaded as the other, a third of the text
    model would be random (or unused). One line says so and names the task the checkpoint is for."""
    with pytest.raises(
        ValueError, match=r"saved from BlipForConditionalGeneration.*weights would be random"
    ) as refused:
        load_vqa(str(FIXTURES / "blip-caption-shapes"))
    assert str(refused.value).endswith("it is a captioner (mmcam caption), not a VQA model (mmcam vqa)")
    with pytest.raises(
        ValueError, match=r"saved from BlipForQuestionAnswering.*it is a VQA model \(mmcam vqa\)"
    ):
        load_captioner(str(FIXTURES / "blip-vqa-shapes"))
    from PIL import Image

    image = tmp_path / "s.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    command = ["vqa", str(image), "-q", "what?", "--model", str(FIXTURES / "blip-caption-shapes")]
    assert main([*command, "-o", str(tmp_path / "out")]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmcam")]
    assert len(errors) == 1 and "it is a captioner (mmcam caption)" in errors[0]


def test_a_classifier_with_a_random_head_is_refused(tmp_path):
    """A backbone saved without its classification head: the head would be random."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=32
    )
    ViTModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"saved from ViTModel; loaded as ViTForImageClassification.*random"):
        load_classifier(str(tmp_path))


def _truncated(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    weights = min(copy.glob("*.safetensors"))  # the file, or the first shard
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


def test_a_damaged_safetensors_file_gets_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="cannot be read .*damaged or incomplete") as caption:
        load_captioner(str(_truncated(FIXTURES / "blip-caption-shapes", tmp_path)))
    with pytest.raises(ValueError, match="cannot be read .*damaged or incomplete") as classify:
        load_classifier(f"torchvision:resnet18:{_truncated(FIXTURES / 'resnet18-shapes', tmp_path)}")
    assert "\n" not in str(caption.value) + str(classify.value)


def test_another_models_weights_in_a_torchvision_folder_are_described_in_full(tmp_path):
    """resnet34's weights under torchvision:resnet18:DIR: the message says what is missing, unexpected and of
    another shape, not torch's cut "Error(s) in loading state_dict for ResNet:"."""
    import torchvision
    from safetensors.torch import save_file

    save_file(torchvision.models.resnet34(num_classes=4).state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"num_classes": 4}))
    with pytest.raises(
        ValueError, match="does not hold a resnet18 state dict: .*unexpected \\(layer1.2"
    ) as refused:
        load_classifier(f"torchvision:resnet18:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"num_classes": 7}))
    with pytest.raises(
        ValueError, match=r"of another shape \(fc.bias: \(4,\) in the file, \(7,\) in the model"
    ):
        load_classifier(f"torchvision:resnet18:{tmp_path}")
    assert "Error(s)" not in str(refused.value)


def test_an_empty_model_folder_says_it_has_no_config(tmp_path):
    for load in (load_classifier, load_captioner, load_vqa):
        with pytest.raises(ValueError, match="has no config.json"):
            load(str(tmp_path))


class Payload:
    """Unpickling this writes a file: what a crafted checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cached_torchvision_weights_holding_code_are_refused_without_trust_pickle(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    marker = tmp_path / "ran"
    torch.save(
        {"fc.weight": torch.zeros(1), "payload": Payload(str(marker))},
        tmp_path / "checkpoints" / Path(url).name,
    )
    with pytest.raises(ValueError, match="hold more than tensors.*--trust-pickle"):
        load_classifier("resnet18")
    assert not marker.exists()


def test_a_model_from_the_local_hub_cache_makes_no_network_request(tmp_path):
    """hf:ID from the local cache: not one DNS query or connection (the hub library fetched a registry)."""
    snapshot = tmp_path / "hub" / "models--mmcam--vit-shapes" / "snapshots" / ("0" * 40)
    shutil.copytree(FIXTURES / "vit-shapes", snapshot)
    (tmp_path / "hub" / "models--mmcam--vit-shapes" / "refs").mkdir()
    (tmp_path / "hub" / "models--mmcam--vit-shapes" / "refs" / "main").write_text("0" * 40)
    script = """
import socket
calls = []
def refuse(*args, **kwargs):
    calls.append(args[:1])
    raise OSError("no network here")
socket.getaddrinfo = refuse
socket.socket.connect = lambda self, address: refuse(address)
from mmcam.loading import load_classifier
load_classifier("hf:mmcam/vit-shapes")
print("network:", calls)
"""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(HF_HOME=str(tmp_path), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "network: []"


@pytest.mark.parametrize("shown", [True, False])
def test_a_hugging_face_load_prints_no_progress_bar_and_leaves_the_switch_as_it_found_it(shown, capfd):
    """transformers 5 draws a "Loading weights" bar on every load; mmcam's loads draw none, and the user's
    own setting of the bars (on or off) is what it was after the load."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    try:
        (transformers_logging.enable_progress_bar if shown else transformers_logging.disable_progress_bar)()
        load_classifier(str(FIXTURES / "vit-shapes"))
        assert "Loading weights" not in capfd.readouterr().err
        assert transformers_logging.is_progress_bar_enabled() is shown
    finally:
        (transformers_logging.enable_progress_bar if before else transformers_logging.disable_progress_bar)()


def test_a_local_folder_is_named_by_its_path_as_given(monkeypatch):
    """Records and reports name a local checkpoint folder by the path the user gave, not ``hf:../...``."""
    monkeypatch.chdir(FIXTURES / "resnet18-shapes")
    given = "../vit-shapes"
    assert load_classifier(given).name == given
    assert load_classifier(f"hf:{given}").name == given
