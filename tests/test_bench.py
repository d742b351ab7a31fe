"""The benchmark times the same work for every tool, and its table divides by the right times (its
figures are read, not asserted: no timed tests)."""

import builtins

import pytest
import torch

from mmcam import bench
from mmcam.bench import Timing, caption_cases, chat_cases, classification_cases, ratio_table, vqa_cases

CPU = torch.device("cpu")


def _outputs(cases) -> dict:
    return {(case, tool): run() for case, tool, run in cases}


def test_ratio_table_divides_each_tool_by_mmcam_on_the_same_case():
    timings = [
        Timing("s", "forward only", "torch", 0.5, 2.0, None),
        Timing("s", "a", "mmcam", 2.0, 0.5, None),
        Timing("s", "a", "peer", 6.0, 1 / 6, None),
        Timing("s", "b", "mmcam", 4.0, 0.25, None),
        Timing("s", "b", "peer", 5.0, 0.2, None),
    ]
    rows = ratio_table(timings)
    assert [row["mmcam_speedup"] for row in rows] == [None, 1.0, 3.0, 1.0, 1.25]
    assert [row["share_of_forward_throughput"] for row in rows] == [1.0, 0.25, 0.083, 0.125, 0.1]


def test_classification_cases_time_the_same_maps_for_every_tool():
    """mmcam's maps for 1 and for K targets equal captum's (K calls) and pytorch-grad-cam's: the speed-ups
    compare equal work."""
    outputs = _outputs(classification_cases(CPU, batch=2, targets=3, size=224))  # auto is layer4 at 224 px
    one, every = outputs[("1 target/image", "mmcam")], outputs[("3 targets/image", "mmcam")]
    torch.testing.assert_close(every.raw[:, :1], one.raw)
    captum = torch.cat([a.detach() for a in outputs[("3 targets/image", "captum")]], dim=1)
    scale = float(
        every.raw.abs().max()
    )  # random weights: raw maps of a few 1e-2; float sums differ in the last bits
    torch.testing.assert_close(every.raw, captum, atol=1e-3 * scale, rtol=1e-4)
    auto = outputs[("1 target/image", "mmcam.explain, auto layer")]
    assert auto.layer == "layer4"
    torch.testing.assert_close(auto.raw, one.raw)
    theirs = torch.as_tensor(outputs[("1 target/image", "pytorch-grad-cam")])
    assert theirs.shape == one.maps[:, 0].shape
    assert torch.corrcoef(torch.stack([theirs.flatten(), one.maps[:, 0].flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize(("cases", "name"), [(caption_cases, "word"), (vqa_cases, "answer")])
def test_all_targets_in_one_call_equal_a_call_per_target_and_captum(cases, name):
    outputs = _outputs(cases(CPU))
    every = next(v for (case, tool), v in outputs.items() if tool == "mmcam" and case.startswith("all"))
    calls = next(v for (case, tool), v in outputs.items() if tool == f"mmcam, a call per {name}")
    captum = next(v for (case, tool), v in outputs.items() if tool == f"captum, a call per {name}")
    torch.testing.assert_close(every.raw, torch.cat([c.raw for c in calls], dim=1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        every.raw, torch.cat([a.detach() for a in captum], dim=1), atol=1e-5, rtol=1e-4
    )


def test_bench_runs_without_the_peers_installed(monkeypatch):
    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name.split(".")[0] in ("pytorch_grad_cam", "captum"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peers)
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda module: None)
    tools = {tool for _, tool, _ in classification_cases(CPU, batch=1, targets=2, size=32)}
    assert tools == {"torch", "mmcam", "mmcam.explain, auto layer"}
    assert bench.missing_peers() == ["pytorch-grad-cam", "captum", "torch-cam"]


def test_the_folder_suite_times_mmcam_with_and_without_figures_against_the_forward_and_a_peer_loop(tmp_path):
    from mmcam.cli.bench import folder_cases, scene_folder

    cases = folder_cases(CPU, scene_folder(3, parent=tmp_path), batch=2, workers=0)
    assert [(case, tool) for case, tool, _ in cases] == [
        ("folder", "torch"),
        ("folder, no figures", "mmcam"),
        ("folder, figures", "mmcam"),
        ("folder, no figures", "pytorch-grad-cam"),
    ]
    rows = bench.ratio_table(bench.measure("folder", cases, 3, CPU, repeats=1, progress=False))
    assert all(row["images_per_second"] > 0 for row in rows)
    assert next(r for r in rows if r["tool"] == "torch")["share_of_forward_throughput"] == 1.0


def test_the_folder_breakdown_times_every_stage_of_the_command(tmp_path):
    from mmcam.cli.bench import OUTSIDE, folder_stages, scene_folder
    from mmcam.cli.stages import STAGES

    stages = folder_stages(CPU, scene_folder(3, parent=tmp_path), batch=2)
    assert list(stages) == [*STAGES, OUTSIDE]
    assert all(seconds > 0 and cpu > 0 for seconds, cpu in stages.values())


def test_measure_counts_the_cpu_seconds_of_the_worker_processes_a_case_ends():
    import subprocess
    import sys
    import time

    child = [sys.executable, "-c", "sum(range(3 * 10**7))"]  # about 0.45 CPU seconds
    cases = [
        ("waits", "torch", lambda: time.sleep(0.2)),
        ("works in a child", "mmcam", lambda: subprocess.run(child, check=True)),
    ]
    waits, works = bench.measure("cpu", cases, 1, CPU, repeats=1, progress=False)
    assert waits.seconds >= 0.2 and waits.cpu_seconds < 0.1
    assert works.cpu_seconds > 0.25


def test_the_methods_suite_times_the_same_maps_as_the_peers():
    """Each method taken from pytorch-grad-cam: mmcam's K targets in one call equal one call per target,
    and its first target's map equals pytorch-grad-cam's (min-max scaled, at the layer's 2x2 grid). The
    smoothing options are compared with pytorch-grad-cam at the layer's grid, and the Score-CAM variants
    with torch-cam on a layer at the input's resolution (tests/test_reference.py): here, at resnet18's
    layer4, they would take minutes (512 channels, 10 and 35 masked forwards each)."""
    from mmcam.bench import PEER_METHODS, methods_cases

    labels = [label for label, peer in PEER_METHODS.items() if peer.peer == "pytorch-grad-cam"]
    outputs = _outputs(methods_cases(CPU, batch=1, targets=2, size=64, labels=labels))
    for label in labels:
        peer = PEER_METHODS[label]
        one, every = outputs[(f"{label}, 1 target", "mmcam")], outputs[(f"{label}, 2 targets", "mmcam")]
        torch.testing.assert_close(every.raw[:, :1], one.raw, rtol=1e-4, atol=1e-6)
        theirs = torch.as_tensor(outputs[(f"{label}, 1 target", peer.peer)])
        ours = torch.nn.functional.interpolate(one.raw[:, :1], size=theirs.shape[-2:], mode="bilinear")[:, 0]
        assert theirs.shape == ours.shape
        if peer.method != "eigengradcam" and not peer.options:  # a component's sign; smoothing: see above
            low, high = ours.amin(), ours.amax()
            torch.testing.assert_close((ours - low) / (1e-7 + high - low), theirs, atol=5e-2, rtol=0)


def test_chat_cases_time_the_same_maps_for_every_tool(tmp_path):
    """A tiny LLaVA explaining a 30-word reply: all words in one call give the maps of a call per word and
    of pytorch-grad-cam driven through the wrapper (its reshape of the tower's tokens to their grid)."""
    import numpy as np

    from tests.hf_tiny import save_llava

    outputs = _outputs(chat_cases(CPU, str(save_llava(tmp_path / "llava"))))
    every = outputs[("all 30 words", "mmcam")]
    calls = outputs[("all 30 words", "mmcam, a call per word")]
    torch.testing.assert_close(every.raw, torch.cat([c.raw for c in calls], dim=1), atol=1e-5, rtol=1e-4)
    theirs = torch.as_tensor(
        np.stack([maps[0] for maps in outputs[("all 30 words", "pytorch-grad-cam, a call per word")]])
    )
    torch.testing.assert_close(every.maps[0], theirs, atol=1e-3, rtol=1e-3)


def test_the_chat_suite_asks_for_its_model(capsys):
    from mmcam.cli import main

    assert main(["bench", "--task", "chat"]) == 2
    assert capsys.readouterr().err == "mmcam: error: the chat suite needs a chat model: --model DIR\n"


def test_bench_errors_read_as_every_other_command_s(capsys):
    from mmcam.cli import main

    assert main(["bench", "--config", "llava", "--depth", "0"]) == 2
    assert capsys.readouterr().err.startswith("mmcam: error: --depth takes layer counts")


def test_the_methods_suite_times_occlusion_on_the_same_maps_as_captum():
    """mmcam's occlusion of all targets in one call and captum's Occlusion, a call per target, on the same
    8 px windows and zero baseline: the same maps (captum's per pixel, mmcam's per 8 px cell)."""
    pytest.importorskip("captum.attr", reason="the comparison needs the dev extra (captum)")
    from mmcam.bench import methods_cases

    label = "occlusion, 8 px windows"
    outputs = _outputs(methods_cases(CPU, batch=1, targets=2, size=64, labels=[label]))
    every = outputs[(f"{label}, 2 targets", "mmcam")]
    theirs = outputs[(f"{label}, 2 targets", "captum, a call per target")]
    for k, attribution in enumerate(theirs):
        ours = every.raw[:, k].repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
        torch.testing.assert_close(ours, torch.relu(attribution[:, 0]), rtol=0, atol=1e-5)
