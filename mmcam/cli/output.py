"""What a task command writes: its output folder (checked before any work), the call that writes one
input's figures and record, the report of the records, and the words the model does not know."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the records module imports the figures' libraries
    from mmcam.cli.records import Made
    from mmcam.report import RecordPictures


def output_folder(output: str | Path, overwrite: bool) -> Path:
    """The command's ``-o DIR``, created if missing and checked before any work: it must be writable, and
    an earlier run's outputs in it (its report, and every file its manifest lists: figures, maps) are kept
    unless ``overwrite`` (``--overwrite``), which removes them all first."""
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ValueError(
            f"cannot write to the output folder {output}: {reason}; pass another -o DIR"
        ) from None
    earlier = written_here(output)
    if ((output / "report.html").exists() or earlier) and not overwrite:
        raise ValueError(
            f"{output} holds the outputs of an earlier run (its report, figures or maps); pass --overwrite to "
            "replace them, or another -o DIR"
        )
    for path in earlier:
        path.unlink(missing_ok=True)
    (output / MANIFEST).unlink(missing_ok=True)
    return output


def unknown_words_said(unknown_words: Callable[[str], list[str]], texts: dict[str, str | None]) -> list[str]:
    """The words of ``texts`` (the question, a given caption or answer, by what they are) that the model's
    tokenizer reads as its unknown token, each said once on stderr in a sentence."""
    found = []
    for what, text in texts.items():
        unknown = unknown_words(text or "")
        if unknown:
            found.extend(unknown)
            print(
                f"mmcam: the model does not know {', '.join(map(repr, unknown))} in the {what}: it reads "
                "them as its unknown token, like any other unknown word; rephrase with words it knows",
                file=sys.stderr,
            )
    return found


def record_job(
    output: Path,
    task: str,
    model: str,
    item,
    explanation,
    save_maps: bool,
    figures: bool,
    clip: bool = False,
) -> Callable[[], Made]:
    """The picklable call that writes the figures of one loaded input's explanation (unless not
    ``figures``) and its maps (``save_maps``) and makes its record and the report's pictures
    (``explanation_record``, ``clip_record`` for a clip)."""
    from mmcam.cli.records import clip_record, explanation_record

    return partial(
        clip_record if clip else explanation_record,
        task,
        model,
        item.path,
        item.image,
        explanation,
        output,
        stem=item.stem,
        save_maps=save_maps,
        figures=figures,
    )


MANIFEST = ".mmcam-files"  # in -o DIR: the names of the files mmcam wrote there, one a line


def written_here(output: Path) -> set[Path]:
    """The files an earlier run of mmcam wrote in ``output`` (its manifest), resolved."""
    manifest = output / MANIFEST
    if not manifest.is_file():
        return set()
    return {(output / name).resolve() for name in manifest.read_text().splitlines() if name}


def note_written(output: Path, files: list[str | Path]) -> None:
    """Add ``files`` (written in ``output``) to the folder's manifest, so no later run reads them as inputs."""
    with open(output / MANIFEST, "a") as manifest:
        manifest.writelines(f"{Path(name).name}\n" for name in files)


def write_records_report(records: list[dict], pictures: list[RecordPictures], path: Path) -> Path:
    """The interactive HTML report of classify, caption or vqa records, with their ``pictures``, at ``path``."""
    from mmcam.report import target_view, write_report

    views = [target_view(record, shown) for record, shown in zip(records, pictures)]
    return write_report(path, views, f"mmcam {records[0]['task']}")
