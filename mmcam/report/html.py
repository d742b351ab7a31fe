"""One self-contained HTML file from the report's views: styles, script and pictures inline, no requests."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from importlib.resources import files
from pathlib import Path
from string import Template

from mmcam.report.views import View

TASK_NAMES = {"classify": "classes", "caption": "caption words", "vqa": "VQA answers", "rl": "RL episode"}


def render(views: Sequence[View], title: str) -> str:
    """The report page: a list of contents (for more than one view), then one section per view."""
    package = files("mmcam.report")
    sections, contents = [], []
    for number, view in enumerate(views, 1):
        task = TASK_NAMES.get(view.task, view.task)
        sections.append(
            f'<section class="view" id="view-{number}" data-task="{escape(view.task)}" '
            f'aria-labelledby="view-{number}-title"><h2 id="view-{number}-title">{escape(view.title)} '
            f'<span class="task">{escape(task)}</span></h2><p class="meta">{escape(view.meta)}</p>'
            f"{view.body}</section>"
        )
        contents.append(f'<li><a href="#view-{number}">{escape(view.title)}</a> ({escape(task)})</li>')
    nav = f'<nav aria-label="Contents"><ol>{"".join(contents)}</ol></nav>' if len(views) > 1 else ""
    return Template(package.joinpath("report.html").read_text("utf-8")).substitute(
        title=escape(title),
        css=package.joinpath("report.css").read_text("utf-8"),
        js=package.joinpath("report.js").read_text("utf-8"),
        contents=nav,
        views="\n".join(sections),
    )


def write_report(path: str | Path, views: Sequence[View], title: str = "mmcam report") -> Path:
    """Write the report of ``views`` to ``path`` (one file that works offline) and return the path."""
    path = Path(path)
    path.write_text(render(views, title), encoding="utf-8")
    return path
