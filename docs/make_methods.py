"""Write the method table of docs/methods.md from the method classes (``mmcam.engine.methods.METHODS``):
one row per class, its summary, capabilities, paper and peers as the class declares them.

    python docs/make_methods.py          # rewrites the table between its markers in docs/methods.md

``tests/test_methods.py`` fails when the page's table is not what this script writes (a method added
without its row, a capability changed without the page).
"""

from __future__ import annotations

from pathlib import Path

from mmcam.engine.methods import METHODS

PAGE = Path(__file__).resolve().parent / "methods.md"
BEGIN = "<!-- the method table: written by docs/make_methods.py from the classes; do not edit by hand -->"
END = "<!-- end of the method table -->"
TAGS = {  # capability -> its word in the table
    "channel_weights": "channel weights",
    "needs_gradients": "gradients",
    "second_order": "second order",
    "reads_attention": "attention",
    "perturbation": "perturbation",
}


def table() -> str:
    """The markdown table, one row per registered method, in the registry's order."""
    lines = [
        "| name | family | weights / map | capabilities | reference | also in (agreement, `tests/test_reference.py`) |",
        "|---|---|---|---|---|---|",
    ]
    for name, method in METHODS.items():
        family = method.__module__.rsplit(".", 1)[-1]
        tags = ", ".join(word for capability, word in TAGS.items() if getattr(method, capability)) or "none"
        lines.append(f"| `{name}` | {family} | {method.summary} | {tags} | {method.paper} | {method.peers} |")
    return "\n".join(lines)


def written(page: str) -> str:
    """``page`` with the text between the markers replaced by the table."""
    head, rest = page.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    PAGE.write_text(written(PAGE.read_text()))
