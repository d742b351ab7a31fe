"""Run every notebook in ``notebooks/`` and save it with its outputs, so a reader browsing the repository
sees the figures; the tests (nbmake) run them again on every test run.

    python tasks/execute_notebooks.py [notebooks/NAME.ipynb ...]

Figures are shown as small JPEGs (``mmcam.viz.figures.notebook_figure``); execution counts, timings and
what went to stderr (progress bars, warnings naming this machine's paths) are dropped, so that a re-run
changes only what the notebook shows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = [output for output in cell.outputs if output.get("name") != "stderr"]
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = None
    nbformat.write(notebook, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted(NOTEBOOKS.glob("*.ipynb")))
    for path in parser.parse_args().notebooks:
        start = time.perf_counter()
        execute(path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
