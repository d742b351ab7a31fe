"""The bundled models' explanations point at the right object, on fresh scenes where it is known."""

import json
from pathlib import Path

from mmcam.adapters.classification import load_classifier
from mmcam.cli import main
from mmcam.zoo import make_scenes
from mmcam.zoo.evaluate import classifier_pointing, rate


def test_class_maps_peak_inside_the_named_object():
    hits, totals = classifier_pointing(
        load_classifier("shapes"), make_scenes(200, seed=30_000, n_objects=(2, 3))
    )
    assert totals["class"] >= 400
    assert rate(hits, totals)["class"] >= 0.90, (hits, totals)


def test_demo_writes_figures_and_a_summary(tmp_path, capsys):
    assert main(["demo", "--scenes", "2", "-o", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["scenes"]) == 2
    for scene in summary["scenes"]:
        assert [Path(f).name for f in scene["figures"]] == [f"scene-{scene['scene']}-classify.png"]
        assert all(Path(f).is_file() for f in scene["figures"]) and scene["caption"]
    printed = capsys.readouterr().out
    for kind, fraction in summary["pointing"].items():
        assert f"{kind}: the map's peak fell inside the named object for {fraction}" in printed
    assert str(tmp_path) in printed
