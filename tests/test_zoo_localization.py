"""The bundled models' explanations point at the right object, on fresh scenes where it is known.

Acceptance figures of the shapes world: the classifier's class maps, each caption word's map, and
each VQA answer's map (including a wrong color's map landing on the object that has that color)."""

import json
import re
from pathlib import Path

from mmcam.cli import main
from mmcam.evaluation.pointing import caption_pointing, classifier_pointing, grid_ceiling, rate, vqa_pointing
from mmcam.loading import load_captioner, load_classifier, load_vqa
from mmcam.zoo import make_scenes


def test_a_perfect_map_points_only_as_well_as_its_grid_allows():
    scenes = make_scenes(40, seed=30_500, n_objects=(2, 3))
    ceilings = [grid_ceiling(scenes, side) for side in (1, 4, 8, 16, 128)]
    assert ceilings[-1] == 1.0  # at the image's own resolution the map is the mask
    assert ceilings[0] < 0.1  # one cell: a constant map, hit by the object's share of the image
    assert ceilings == sorted(ceilings) and ceilings[1] < 0.6 < ceilings[2], ceilings


def test_class_maps_peak_inside_the_named_object():
    hits, totals = classifier_pointing(
        load_classifier("shapes"), make_scenes(200, seed=30_000, n_objects=(2, 3))
    )
    assert totals["class"] >= 400
    assert rate(hits, totals)["class"] >= 0.90, (hits, totals)


def test_caption_word_maps_peak_inside_the_object_the_word_names():
    hits, totals = caption_pointing(load_captioner("shapes"), make_scenes(200, seed=31_000, n_objects=(2, 3)))
    rates = rate(hits, totals)
    assert totals["color"] >= 400 and totals["shape"] >= 400
    assert rates["color"] >= 0.90 and rates["shape"] >= 0.90, rates
    assert rates["color"] > rates["color (whole-caption map)"] + 0.2, rates  # word maps are word-specific


def test_vqa_answer_maps_peak_inside_the_object_asked_about():
    hits, totals = vqa_pointing(load_vqa("shapes"), make_scenes(300, seed=32_000))
    rates = rate(hits, totals)
    for kind in ("color", "shape", "size", "exists"):
        assert totals[kind] >= 50 and rates[kind] >= 0.90, rates
    assert totals["wrong color, on its object"] >= 50
    assert rates["wrong color, on its object"] >= 0.80, rates


def test_demo_writes_figures_and_a_summary(tmp_path, capsys):
    assert main(["demo", "--scenes", "2", "-o", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["scenes"]) == 2
    for scene in summary["scenes"]:
        assert [Path(f).name for f in scene["figures"]] == [
            f"scene-{scene['scene']}-{task}.png" for task in ("classify", "caption", "vqa")
        ]
        assert all(Path(f).is_file() for f in scene["figures"])
        assert scene["caption"] and scene["answer"] and scene["question word weights"]
    printed = capsys.readouterr().out
    assert set(summary["pointing"]) == {"classes", "caption words", "vqa answers"}
    for kind, said in summary["pointing"].items():
        hits, maps = re.fullmatch(r"([0-9.]+) hits of ([0-9]+) maps", said).groups()
        assert 0 <= float(hits) <= int(maps)
        assert f"{kind}: {said} (a hit: the map's peak fell inside the named object)" in printed
    assert str(tmp_path) in printed


def test_a_demo_rerun_keeps_the_earlier_run_unless_overwrite(tmp_path, capsys):
    """The demo's folder follows the rule of every command's -o DIR: an earlier run's files are kept
    unless --overwrite, which removes them all (a smaller rerun leaves no stale figures)."""
    assert main(["demo", "--scenes", "2", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "scene-1-vqa.png").is_file()
    assert main(["demo", "--scenes", "1", "-o", str(tmp_path)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "scene-1-vqa.png").is_file()
    assert main(["demo", "--scenes", "1", "-o", str(tmp_path), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.glob("scene-*.png")) == [
        f"scene-0-{task}.png" for task in ("caption", "classify", "vqa")
    ]
