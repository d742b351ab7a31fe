"""The package's layout: folders import downward only (no cycle, not even through a function-level
import) and each folder says its one job in its opening docstring."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmcam"


def _unit(module: str) -> str:
    """The folder (``mmcam.engine``) or top-level module (``mmcam.targets``) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every mmcam module ``path`` imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} if node.module.startswith("mmcam") else set()
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mmcam")}
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(_module_name(path))
        targets = {_unit(m) for m in _imports(path)} - {unit, "mmcam"}
        graph.setdefault(unit, set()).update(targets)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return path[path.index(successor) :] + [successor] if successor in path else [node, successor]
            if successor not in state and (found := visit(successor, path + [successor])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_folder_imports_a_folder_that_imports_it_back():
    assert _cycle(_graph()) is None


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in PACKAGE.rglob("__init__.py")))
def test_every_folder_states_its_job(folder):
    init = next(p for p in PACKAGE.rglob("__init__.py") if p.parent.name == folder)
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 5, f"{init} needs an opening docstring that says its job"


def test_adapters_and_the_zoo_do_not_import_each_other():
    graph = _graph()
    assert "mmcam.zoo" not in graph["mmcam.adapters"]
    assert "mmcam.adapters" not in graph["mmcam.zoo"]
    assert "mmcam.concepts" not in graph["mmcam.adapters"]


def test_the_package_exports_its_names_lazily_and_all_of_them():
    """``import mmcam`` does not import torch (the command line starts before it); every exported name
    loads on first use."""
    import subprocess
    import sys

    code = (
        "import sys, mmcam; assert 'torch' not in sys.modules; mmcam.explain; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import mmcam

    assert sorted(mmcam.__all__) == sorted(mmcam._HOMES)
    assert all(getattr(mmcam, name) is not None for name in mmcam.__all__)


def _layout_lines() -> set[str]:
    """The packages (``engine/``) and top-level modules (``bench.py``) the README's Layout section names."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^mmcam/(\w+/|\w+\.py)\s", section, flags=re.MULTILINE))


def _top_level() -> set[str]:
    packages = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    return packages | modules


def test_the_readme_layout_names_every_package_and_top_level_module_and_no_other():
    named, present = _layout_lines(), _top_level()
    assert named, "the README has no Layout section with mmcam/ lines"
    assert not present - named, f"add a line to the README's Layout for: {sorted(present - named)}"
    assert not named - present, f"the README's Layout names what mmcam/ lacks: {sorted(named - present)}"
