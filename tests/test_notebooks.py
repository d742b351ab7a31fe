"""The notebooks are committed executed, with small figures, so a reader browsing the repository sees what
they show (``tasks/execute_notebooks.py`` re-runs them; nbmake runs them again on every test run)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_a_notebook_is_committed_with_its_figures_and_stays_small(path):
    cells = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    assert cells[-1]["outputs"], "committed without its outputs: run tasks/execute_notebooks.py"
    figures = [o for cell in cells for o in cell["outputs"] if "image/jpeg" in o.get("data", {})]
    assert figures, "no figure in the notebook"
    assert path.stat().st_size < 200 * 1024
