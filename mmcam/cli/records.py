"""What the task commands output: the shared JSON record of an explained image (and its figures), its
text summary, and the per-step records and table of an explained RL rollout."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mmcam.cli.stages import stage
from mmcam.explanation import Explanation
from mmcam.images import FRAMES, MAX_SIDE, ORIGINAL_SIZE, reduced
from mmcam.report.pictures import RecordPictures, record_pictures
from mmcam.viz.figures import frames_figure, save_figure
from mmcam.viz.overlay import image_tensor, overlays, peak_in_image

if TYPE_CHECKING:  # only for annotations: the RL extra stays optional for the image commands
    from torch import Tensor

    from mmcam.adapters.rl.rollouts import Rollout

OVERLAY_SIDE = 1024  # overlays of larger images are written at this size; peaks are in full-size pixels
PNG_LEVEL = 1  # zlib level of the overlays: the same pixels as the default 6 in a quarter of the time
# zlib strategy of the overlays: Huffman codes only (Z_HUFFMAN_ONLY), no string matching. On 40 overlays of
# resnet18 maps over shapes scenes (256 px): 3.7-3.9 ms and 63.0 kB each against 4.5-4.6 ms and 76.2 kB with
# the default strategy at the same level (run-length: 4.2-4.3 ms, 63.0 kB), the same pixels
PNG_STRATEGY = 2


@dataclass(frozen=True)
class Made:
    """What the job of one input hands back: its record and, when it drew figures, the report's pictures of
    them (made from the pictures in memory, so the report reads no file back)."""

    record: dict
    pictures: RecordPictures | None = None


def slug(text: str) -> str:
    """Letters and digits of any script, runs of anything else as one "-", lower case."""
    return re.sub(r"[\W_]+", "-", text).strip("-").lower() or "target"


def unique_stems(paths: list[str]) -> dict[str, str]:
    """A file-name stem per input path, unique in the run: the file's own name, and where two inputs
    share it (``a/scene.png``, ``b/scene.png``, ``scene.jpg``) a short hash of the whole path after it."""
    stems = {path: slug(Path(path).stem) for path in paths}
    counts = Counter(stems.values())
    return {
        path: stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
        for path, stem in stems.items()
    }


def saved_maps(explanation: Explanation, path: Path) -> dict:
    """Write the maps to ``path`` for scripts (safetensors, float32): ``raw`` (B, K, h, w), the method's
    maps at the layer's grid before normalization, and ``maps`` (B, K, H, W), normalized to [0, 1] at the
    size of the model's input (the image as preprocessed); B is 1 for an image, the steps for an RL
    episode; (B, K, T, ...) for clips. The metadata holds the targets' labels. Returns the record's
    ``{"maps_file": path}``."""
    from safetensors.torch import save_file

    tensors = {
        name: getattr(explanation, name).detach().float().cpu().contiguous() for name in ("raw", "maps")
    }
    save_file(tensors, str(path), metadata={"labels": json.dumps(explanation.labels)})
    return {"maps_file": str(path)}


def map_name(stem: str, task: str, k: int, count: int, label: str) -> str:
    """The file name of target ``k``'s figure (of ``count``): its number padded to ``count``'s digits, so
    the files sort in target order (-01, -02, ..., -10)."""
    return f"{stem}-{task}-{k + 1:0{len(str(count))}d}-{slug(label)[:40]}.png"


def write_png(picture, path: Path) -> None:
    """An (H, W, 3) uint8 tensor written as a PNG file at ``path``."""
    with stage("encoding"):
        buffer = io.BytesIO()
        Image.fromarray(picture.numpy()).save(
            buffer, "PNG", compress_level=PNG_LEVEL, compress_type=PNG_STRATEGY
        )
    with stage("file writes"):
        path.write_bytes(buffer.getbuffer())


def score_kind(explanation: Explanation, k: int) -> dict:
    """``{"score_kind": ...}`` for target k when the explanation knows what its scores are, else nothing."""
    return {} if explanation.kinds is None else {"score_kind": explanation.kinds[k]}


def shown_maps(explanation: Explanation) -> Tensor:
    """The maps as drawn: all zero where the evidence is negligible (``Explanation.negligible``), not scaled up."""
    if explanation.negligible is None:
        return explanation.maps
    empty = explanation.negligible.reshape(*explanation.negligible.shape, *[1] * (explanation.maps.ndim - 2))
    return explanation.maps * ~empty.to(explanation.maps.device)


def evidence_fields(explanation: Explanation, k: int) -> dict:
    """``{"evidence": E}`` for target k (how much of its score the map accounts for, in the score's units,
    where the method has a measure of it), with ``"negligible": true`` where the map shows nothing and is
    drawn empty (``engine.evidence``)."""
    fields = {} if explanation.evidence is None else {"evidence": round(float(explanation.evidence[0, k]), 6)}
    flagged = explanation.negligible is not None and bool(explanation.negligible[0, k])
    return {**fields, "negligible": True} if flagged else fields


def explanation_record(
    task: str,
    model: str,
    path: str,
    image: Image.Image,
    explanation: Explanation,
    output: Path,
    stem: str | None = None,
    save_maps: bool = False,
    figures: bool = True,
) -> Made:
    """Write one overlay per target (at most ``OVERLAY_SIDE`` pixels on its long side; unless not
    ``figures``: then the targets have no ``"map"``); return the shared JSON record, with the report's
    pictures of the image and its overlays when ``figures``.

    ``{"task", "model", "layer", "method", "image", "size": [H, W], "targets": [{"label", "index",
    "score", "peak": [x, y], "map"}]}``, ``size`` and ``peak`` in the image file's own pixels. An image
    reduced on loading adds ``"explained_size": [h, w]``; a map that is the same everywhere has
    ``"peak": null``. Both, and an animated file (its first frame is explained), come with a sentence in
    ``"notes"``, except a map with negligible evidence
    (``"negligible": true``, drawn empty), which the run reports once. ``save_maps`` also writes the maps for
    scripts (``saved_maps``) and adds ``"maps_file"``.
    """
    explained = (image.height, image.width)
    original = image.info.get(ORIGINAL_SIZE)
    size = (original[1], original[0]) if original else explained
    notes, extra = [], {}
    if original:
        extra["explained_size"] = list(explained)
        notes.append(
            f"the image is {size[1]}x{size[0]} pixels; it was explained at {explained[1]}x{explained[0]} "
            f"(at most {MAX_SIDE} on its long side), and peaks are given in the original's pixels"
        )
    if image.info.get(FRAMES):
        notes.append(
            f"the file is animated ({image.info[FRAMES]} frames); its first frame was explained (--video "
            "explains every frame, with a video model)"
        )
    stem = stem or slug(Path(path).stem)
    if figures:
        with stage("colouring"):
            pictures = overlays(image_tensor(reduced(image, OVERLAY_SIDE)), shown_maps(explanation)[0]).cpu()
    targets = []
    for k, (label, index) in enumerate(zip(explanation.labels[0], explanation.indices[0])):
        heatmap = shown_maps(explanation)[0, k]
        map_path = output / map_name(stem, task, k, len(explanation.labels[0]), label)
        if figures:
            write_png(pictures[k], map_path)
        with stage("map post-processing"):
            flat = bool(heatmap.amax() == heatmap.amin())
            peak = None if flat else list(peak_in_image(heatmap, size))
        fields = evidence_fields(explanation, k)
        if flat and "negligible" not in fields:  # a negligible map is said once per run (cli.batches)
            notes.append(
                f"the map of '{label}' is the same everywhere ({explanation.method} at {explanation.layer} "
                "finds no region that raises it), so it has no peak; try another --layer or --method"
            )
        targets.append(
            {
                "label": label,
                "index": index,
                "score": round(float(explanation.scores[0, k]), 6),
                **score_kind(explanation, k),
                **fields,
                "peak": peak,
                **({"map": str(map_path)} if figures else {}),
            }
        )
    if notes:
        extra["notes"] = notes
    if save_maps:
        extra.update(saved_maps(explanation, output / f"{stem}-{task}-maps.safetensors"))
    record = _record(task, model, path, size, explanation, targets, **extra)
    if not figures:
        return Made(record)
    with stage("report"):
        return Made(record, record_pictures(image, [Image.fromarray(p.numpy()) for p in pictures]))


def clip_record(
    task: str,
    model: str,
    path: str,
    frames: list[Image.Image],
    explanation: Explanation,
    output: Path,
    stem: str | None = None,
    save_maps: bool = False,
    figures: bool = True,
) -> Made:
    """The shared JSON record of a clip (``frames`` explained as one (1, K, T, H, W) explanation): per
    target a strip of its map over every frame (unless not ``figures``), ``peak`` as [t, x, y] in the frames' pixels, and
    ``frames`` the number of frames explained."""
    size = (frames[0].height, frames[0].width)
    stem = stem or slug(Path(path).stem)
    targets = []
    for k, (label, index) in enumerate(zip(explanation.labels[0], explanation.indices[0])):
        clip_map = explanation.maps[0, k]  # (T, h, w)
        t = int(clip_map.flatten(1).amax(dim=1).argmax())
        map_path = output / map_name(stem, task, k, len(explanation.labels[0]), label)
        if figures:
            title = f"{label} ({float(explanation.scores[0, k]):.2f})"
            save_figure(frames_figure(frames, clip_map, title), map_path)
        targets.append(
            {
                "label": label,
                "index": index,
                "score": round(float(explanation.scores[0, k]), 6),
                **score_kind(explanation, k),
                **evidence_fields(explanation, k),
                "peak": [t, *peak_in_image(clip_map[t], size)],
                **({"map": str(map_path)} if figures else {}),
            }
        )
    maps = saved_maps(explanation, output / f"{stem}-{task}-maps.safetensors") if save_maps else {}
    return Made(_record(task, model, path, size, explanation, targets, frames=len(frames), **maps))


def _record(
    task: str, model: str, path: str, size: tuple[int, int], explanation: Explanation, targets: list, **extra
) -> dict:
    """The shared JSON record around an input's ``targets`` entries (``extra`` keys before them)."""
    return {
        "task": task,
        "model": model,
        "layer": explanation.layer,
        "method": explanation.method,
        "image": str(path),
        "size": list(size),
        **extra,
        "targets": targets,
    }


def describe_record(record: dict) -> str:
    """A human-readable summary of a record, for when --json is not given."""
    lines = [f"{record['image']} ({record['method']} at {record['layer']}):"]
    if "caption" in record:
        lines.append(f"  caption: {record['caption']}")
    if "question" in record:
        lines.append(f"  Q: {record['question']}  A: {record['answer']}")
    for t in record["targets"]:
        peak = "no peak" if t["peak"] is None else f"peak at {tuple(t['peak'])}"
        peak = "negligible evidence, no map" if t.get("negligible") else peak
        kind = f" ({t['score_kind']})" if "score_kind" in t else ""
        shown = f"  -> {t['map']}" if "map" in t else ""  # no figures: no map file
        lines.append(f"  {t['label']:<20} score {t['score']:8.3f}{kind}  {peak}{shown}")
        if "text" in t:
            lines.append(f"    {t['text']}")
    return "\n".join(lines)


def rollout_records(rollout: Rollout, compared: dict[str, Rollout] | None = None) -> Iterator[dict]:
    """One JSON record per step, in the shared schema: the explained targets with their score and
    peak (x, y) in observation pixels, plus the action, value, reward and attention shares; per method of
    ``compared`` (the same episodes explained by other methods), its chosen-action map's peak, shares
    and whether it is empty."""
    compared = compared or {}
    for index, episode in enumerate(rollout.episodes):
        explanation, trajectory = episode.explanation, episode.trajectory
        peaks = explanation.peaks().tolist()
        size = list(explanation.maps.shape[-2:])
        for t in range(episode.steps):
            yield {
                "task": "rl",
                "model": rollout.policy,
                "env": rollout.env,
                "layer": explanation.layer,
                "method": explanation.method,
                "episode": index,
                "seed": trajectory.seed,
                "step": t,
                "size": size,
                "action": rollout.action_names[trajectory.actions[t]],
                "action_index": trajectory.actions[t],
                "value": None if trajectory.values is None else round(trajectory.values[t], 6),
                "reward": round(trajectory.rewards[t], 6),
                "empty": bool(episode.empty[t]),
                "targets": [
                    {
                        "label": label,
                        "index": target_index,
                        "score": round(float(explanation.scores[t, k]), 6),
                        **score_kind(explanation, k),
                        "peak": peaks[t][k],
                    }
                    for k, (label, target_index) in enumerate(
                        zip(explanation.labels[t], explanation.indices[t])
                    )
                ],
                "attention": {name: round(float(share[t]), 6) for name, share in episode.attention.items()},
                "area": {name: round(float(share[t]), 6) for name, share in episode.areas.items()},
                **({"compared": _compared_step(compared, index, t)} if compared else {}),
            }


def _compared_step(compared: dict[str, Rollout], episode: int, step: int) -> dict:
    """Step ``step`` of episode ``episode`` as each compared method explained it."""
    found = {}
    for method, rollout in compared.items():
        other = rollout.episodes[episode]
        found[method] = {
            "peak": other.explanation.peaks()[step, 0].tolist(),
            "empty": bool(other.empty[step]),
            "attention": {name: round(float(share[step]), 6) for name, share in other.attention.items()},
        }
    return found


def rollout_table(rollout: Rollout) -> str:
    """One row per episode and one for all of them: steps, return, success and, per mask, the share
    of map mass on it with its ratio to the mask's share of the image (1.0x: no more than uniform)."""
    names = rollout.mask_names()
    header = f"{'episode':>8} {'seed':>6} {'steps':>6} {'return':>7} {'success':>8} {'empty':>6}" + "".join(
        f" {name:>17}" for name in names
    )

    def row(label, seed, steps, total, success, empty, attention, areas) -> str:
        cells = "".join(
            f" {attention[n]:>9.3f} ({attention[n] / areas[n] if areas[n] else 0:4.1f}x)" for n in names
        )
        return f"{label:>8} {seed:>6} {steps:>6} {total:>7.2f} {success:>8} {empty:>6.0%}{cells}"

    lines = [header]
    for i, e in enumerate(rollout.episodes):
        attention = {n: float(e.attention[n].mean()) for n in names}
        areas = {n: float(e.areas[n].mean()) for n in names}
        lines.append(
            row(
                i,
                e.trajectory.seed,
                e.steps,
                e.episode_return,
                "yes" if e.trajectory.success else "no",
                float(e.empty.float().mean()),
                attention,
                areas,
            )
        )
    steps = sum(e.steps for e in rollout.episodes)
    mean_return = sum(e.episode_return for e in rollout.episodes) / len(rollout.episodes)
    lines.append(
        row(
            "all",
            "",
            steps,
            mean_return,
            f"{rollout.success_rate():.0%}",
            rollout.empty_share(),
            rollout.attention(),
            rollout.areas(),
        )
    )
    return "\n".join(lines)
