"""The report's views: one HTML section body per explained image (classes, caption words, VQA answers)
or per RL episode, with every picture embedded. Controls are buttons and sliders; ``report.js`` makes
them switch the pictures, and each view is rendered showing its first target or step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from PIL import Image

from mmcam.explanation import Explanation
from mmcam.report.pictures import RecordPictures, data_uri, record_pictures, thumbnail
from mmcam.viz.overlay import overlay
from mmcam.words import analyze

RL_SIDE = 128  # RL frames are small pixel art: embedded at this size, two pictures per step
CHART_COLORS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e")


@dataclass
class View:
    """One section of the report: what it shows (``task``), a title, a line about the model, the body."""

    task: str
    title: str
    meta: str
    body: str


def explanation_view(
    task: str,
    name: str,
    image: Image.Image,
    explanation: Explanation,
    tokens: Sequence[str | None] = (),
    **fields,
) -> View:
    """The view of sample 0 of an explanation held in memory. ``task`` is classify, caption or vqa;
    ``tokens`` names the question tokens of ``explanation.token_weights`` (None for special tokens);
    ``fields`` are the record's extra keys (``caption``, ``words``, ``question``, ``answer``, ``model``)."""
    small = thumbnail(image)
    targets = []
    for k, (label, index) in enumerate(zip(explanation.labels[0], explanation.indices[0])):
        target = {"label": label, "index": index, "score": float(explanation.scores[0, k])}
        if explanation.kinds is not None:
            target["score_kind"] = explanation.kinds[k]
        if explanation.negligible is not None and bool(explanation.negligible[0, k]):
            target["negligible"] = True
        if tokens and explanation.token_weights is not None:
            weights = explanation.token_weights[0, k].tolist()
            target["question_weights"] = [[t, w] for t, w in zip(tokens, weights) if t is not None]
        targets.append(target)
    record = {
        "task": task,
        "image": name,
        "layer": explanation.layer,
        "method": explanation.method,
        "targets": targets,
        **fields,
    }
    shown = [
        heatmap * 0 if target.get("negligible") else heatmap
        for heatmap, target in zip(explanation.maps[0], targets)
    ]
    return target_view(record, record_pictures(small, [overlay(small, heatmap) for heatmap in shown]))


def caption_view(name: str, image: Image.Image, result) -> View:
    """The view of a caption explained in memory (a ``CaptionExplanation``)."""
    return explanation_view(
        "caption", name, image, result.explanation, caption=result.caption, words=result.words
    )


def vqa_view(name: str, image: Image.Image, result) -> View:
    """The view of a VQA answer explained in memory (a ``VQAExplanation``)."""
    return explanation_view(
        "vqa", name, image, result.explanation, result.tokens, question=result.question, answer=result.answer
    )


def target_view(record: dict, pictures: RecordPictures) -> View:
    """A view of an image with one overlay per target of ``record`` (a classify, caption or vqa record in
    the shared JSON schema), its ``pictures`` made where the overlays were drawn (``record_pictures``)."""
    name = Path(record["image"]).name
    maps = pictures.maps
    counterfactuals = _counterfactuals(record["targets"]) if record["task"] == "vqa" else {}
    choices = [k for k in range(len(maps)) if k not in counterfactuals.values()]
    if record["task"] == "classify":
        choices.sort(key=lambda k: -record["targets"][k]["score"])
    first = _first_content_word(record, choices) if record["task"] == "caption" else choices[0]
    body = _pictures(name, pictures.image, record["targets"][first]["label"], maps[first], counterfactuals)
    if record["task"] == "caption":
        body += _caption(record, maps, first)
    else:
        if record["task"] == "vqa":
            body += _question(record, first)
        heading = "Answers" if record["task"] == "vqa" else "Classes"
        buttons = "".join(
            f"<li>{_choice(record, k, maps, _label_and_score(record, k), k == first, counterfactuals)}</li>"
            for k in choices
        )
        kinds = sorted(
            {record["targets"][k]["score_kind"] for k in choices if "score_kind" in record["targets"][k]}
        )
        said = f'<p class="hint">Scores: {escape(", ".join(kinds))}.</p>' if kinds else ""
        body += f'<h3>{heading}</h3>{said}<ul class="choices">{buttons}</ul>'
    text = record["targets"][first].get("text", "")
    body += f'<p class="explanation" aria-live="polite">{escape(text)}</p>' + _negligible(record)
    model = f"{record['model']} · " if record.get("model") else ""
    return View(record["task"], name, f"{model}{record['method']} at {record['layer']}", body)


def _negligible(record: dict) -> str:
    """A warning naming the targets whose maps show negligible evidence and are drawn empty, if any."""
    labels = [target["label"] for target in record["targets"] if target.get("negligible")]
    if not labels:
        return ""
    named = ", ".join(repr(label) for label in labels)
    return (
        f'<p class="hint warning">Negligible evidence for {escape(named)}: the map accounts for almost none '
        "of the score (or is the same everywhere), so it is drawn empty.</p>"
    )


def _counterfactuals(targets: list[dict]) -> dict[int, int]:
    """Target k -> the target labelled 'not <label of k>', where both were explained."""
    position = {target["label"]: k for k, target in enumerate(targets)}
    return {
        k: position[f"not {target['label']}"]
        for k, target in enumerate(targets)
        if f"not {target['label']}" in position
    }


def _pictures(name: str, image: str, label: str, shown: str, counterfactuals: dict[int, int]) -> str:
    counter = (
        '<figure class="counter" hidden><img alt=""><figcaption></figcaption></figure>'
        if counterfactuals
        else ""
    )
    return (
        '<div class="pictures">'
        f'<figure><img src="{image}" alt="The input image {escape(name)}"><figcaption>input</figcaption></figure>'
        f'<figure><img class="shown" src="{shown}" alt="Map of {escape(repr(label))} over the image">'
        f'<figcaption class="shown-label">{escape(label)}</figcaption></figure>{counter}</div>'
    )


def _choice(
    record: dict,
    k: int,
    maps: list[str],
    content: str,
    selected: bool,
    counterfactuals: dict[int, int] | None = None,
    classes: str = "choice",
    extra: str = "",
) -> str:
    """A button that shows target k's map (and its counterfactual's), text and question-word weights."""
    target = record["targets"][k]
    attributes = {"data-map": maps[k], "data-label": target["label"], "data-text": target.get("text")}
    if counterfactuals and k in counterfactuals:
        attributes["data-counter"] = maps[counterfactuals[k]]
        attributes["data-counter-label"] = record["targets"][counterfactuals[k]]["label"]
    if "question_weights" in target:
        attributes["data-weights"] = json.dumps([round(w, 3) for w in _relative_weights(target)])
    rendered = "".join(f' {name}="{escape(value)}"' for name, value in attributes.items() if value)
    return (
        f'<button type="button" class="{classes}" aria-pressed="{str(selected).lower()}"{extra}{rendered}>'
        f"{content}</button>"
    )


def _label_and_score(record: dict, k: int) -> str:
    target = record["targets"][k]
    predicted = ' <span class="tag">predicted</span>' if target["label"] == record.get("answer") else ""
    kind = escape(target.get("score_kind", "score"))
    score = f'<span class="score" title="{kind}">{target["score"]:.3g}</span>'
    return f"{escape(target['label'])} {score}{predicted}"


def _kind(record: dict) -> str:
    """What the record's scores are, as its first target says ("score" when not known)."""
    return record["targets"][0].get("score_kind", "score") if record["targets"] else "score"


def _first_content_word(record: dict, choices: list[int]) -> int:
    """The target of the caption's first content word (noun or adjective), else the first target."""
    words = record.get("words") or record["caption"].split()
    content = [word.content for word in analyze(words)]
    for k in choices:
        index = record["targets"][k]["index"]
        if index is not None and index < len(content) and content[index]:
            return k
    return choices[0]


def _caption(record: dict, maps: list[str], first: int) -> str:
    """The caption word by word: explained words are buttons shaded by their score relative to the
    caption's other explained words; a whole-caption target gets a button of its own. The view opens on
    target ``first``."""
    words = record.get("words") or record["caption"].split()
    by_position = {t["index"]: k for k, t in enumerate(record["targets"]) if t["index"] is not None}
    scores = [record["targets"][k]["score"] for k in by_position.values()]
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    parts = []
    for position, word in enumerate(words):
        if position not in by_position:
            parts.append(f'<span class="word">{escape(word)}</span>')
            continue
        k = by_position[position]
        score = record["targets"][k]["score"]
        shade = (score - low) / (high - low) if high > low else 1.0
        kind = escape(record["targets"][k].get("score_kind", "score"))
        style = f' style="--weight:{shade:.2f}" title="{kind} {score:.3g}"'
        parts.append(_choice(record, k, maps, escape(word), k == first, classes="choice word", extra=style))
    whole = "".join(
        _choice(record, k, maps, "whole caption", k == first)
        for k, target in enumerate(record["targets"])
        if target["index"] is None
    )
    return (
        '<h3>Caption</h3><p class="hint">Point at, focus or click a word to see its map; shading: the '
        f"word's {escape(_kind(record))} relative to the other words.</p>"
        f'<p class="caption">{" ".join(parts)}</p>{whole}'
    )


def _relative_weights(target: dict) -> list[float]:
    weights = [w for _, w in target["question_weights"]]
    largest = max((abs(w) for w in weights), default=0.0) or 1.0
    return [w / largest for w in weights]


def _question(record: dict, first: int) -> str:
    """The question with each token shaded by its weight for the shown answer (orange: for, blue: against)."""
    target = record["targets"][first]
    if "question_weights" not in target:
        return f'<p class="question">Q: {escape(record["question"])}</p>'
    words = []
    for (token, _), weight in zip(target["question_weights"], _relative_weights(target)):
        glued = token.startswith("##")
        classes = "qword glued" if glued else "qword"
        if weight < 0:
            classes += " against"
        words.append(
            f'<span class="{classes}" style="--weight:{abs(weight):.3f}" title="weight {weight:.2f}">'
            f"{escape(token[2:] if glued else token)}</span>"
        )
    return (
        f'<p class="question">Q: {"".join(words)}</p>'
        f'<p class="answer">A: <strong>{escape(record.get("answer", ""))}</strong></p>'
        '<p class="hint">Question words shaded by their weight for the chosen answer (orange: for it, '
        "blue: against it). Choose an answer to see its map and, where explained, the evidence against it."
        "</p>"
    )


def rl_views(rollout, sentences: Sequence[str] = (), compared: dict | None = None) -> list[View]:
    """One view per episode of an explained RL rollout: a slider over its steps showing the frame, the
    chosen action's map (on a step whose map is empty, the evidence against the action beside it), the
    maps of every other explained target (``--all-actions``, ``--value``), the action, value, reward,
    and a chart of the map's share on each object with the empty steps marked. ``sentences`` (from
    ``--concepts``: why the agent took each action) are shown under every episode; ``compared`` (method ->
    the same episodes explained by it, ``--compare``) adds each method's chosen-action map beside."""
    compared = compared or {}
    views = []
    for number, episode in enumerate(rollout.episodes):
        trajectory, explanation = episode.trajectory, episode.explanation
        steps = []
        for t, action in enumerate(trajectory.actions):
            frame = thumbnail(Image.fromarray(episode.frames[t]), RL_SIDE, pixelated=True)
            against = episode.against.get(t)
            steps.append(
                {
                    "frame": data_uri(frame, "PNG"),
                    "map": data_uri(overlay(frame, explanation.maps[t, 0])),
                    "others": [data_uri(overlay(frame, m)) for m in explanation.maps[t, 1:]]
                    + [
                        data_uri(overlay(frame, other.episodes[number].explanation.maps[t, 0]))
                        for other in compared.values()
                    ],
                    "against": "" if against is None else data_uri(overlay(frame, against)),
                    "action": rollout.action_names[action],
                    "value": "" if trajectory.values is None else f"{trajectory.values[t]:+.3f}",
                    "reward": f"{trajectory.rewards[t]:+.3f}",
                    "attention": " · ".join(
                        f"{name} {float(share[t]):.2f}" for name, share in episode.attention.items()
                    ),
                    "map note": "" if against is None else EMPTY_NOTE,
                }
            )
        outcome = "success" if trajectory.success else "no success"
        count = f"{len(steps)} step{'s' if len(steps) > 1 else ''}"
        title = f"Episode {number} (seed {trajectory.seed}): {count}, return "
        title += f"{sum(trajectory.rewards):+.2f}, {outcome}"
        empty = int(episode.empty.sum())
        title += f", {empty} empty map{'s' if empty != 1 else ''}" if empty else ""
        others = [*explanation.labels[0][1:], *(f"{method}: chosen action" for method in compared)]
        legend = f'<p class="hint">In the frames, {escape(rollout.legend)}.</p>' if rollout.legend else ""
        body = legend + _episode(steps, others) + _attention_chart(episode) + _sentences(sentences)
        meta = f"{rollout.policy} on {rollout.env} · {rollout.method} at {rollout.layer}"
        meta += f" · chosen action: {explanation.kinds[0]}" if explanation.kinds else ""
        views.append(View("rl", title, meta, body))
    return views


EMPTY_NOTE = (
    "the chosen action's map is empty (no evidence for it at this layer): the evidence against it is shown"
)


def _episode(steps: list[dict], others: Sequence[str]) -> str:
    first = steps[0]
    facts = "".join(
        f'<dt>{name}</dt><dd data-fact="{name}">{escape(first[name]) or "–"}</dd>'
        for name in ("action", "value", "reward", "attention", "map note")
    )
    data = json.dumps(steps).replace("</", "<\\/")
    other_figures = "".join(
        f'<figure><img class="other" data-k="{k}" src="{first["others"][k]}" alt="Map of '
        f'{escape(repr(label))} at step 0 over the frame"><figcaption>{escape(label)}</figcaption></figure>'
        for k, label in enumerate(others)
    )
    return (
        '<div class="pictures">'
        f'<figure><img class="frame" src="{first["frame"]}" alt="Frame of step 0">'
        "<figcaption>frame</figcaption></figure>"
        f'<figure><img class="shown" src="{first["map"]}" alt="Map of the chosen action '
        f'{escape(repr(first["action"]))} at step 0 over the frame">'
        "<figcaption>map of the chosen action</figcaption></figure>"
        f'<figure class="step-against"{"" if first["against"] else " hidden"}><img src="{first["against"]}" '
        'alt="Map of the evidence against the chosen action over the frame">'
        "<figcaption>evidence against it (its map is empty)</figcaption></figure>"
        f"{other_figures}</div>"
        f'<label class="scrub">Step <input type="range" class="scrubber" min="0" max="{len(steps) - 1}" '
        f'value="0" step="1"> <output class="step-number">0 / {len(steps) - 1}</output></label>'
        f'<dl class="facts" aria-live="polite">{facts}</dl>'
        f'<script type="application/json" class="steps">{data}</script>'
    )


def _sentences(sentences: Sequence[str]) -> str:
    if not sentences:
        return ""
    items = "".join(f"<li>{escape(sentence)}</li>" for sentence in sentences)
    return f'<h3>Why each action, by the units it rests on</h3><ul class="sentences">{items}</ul>'


def _attention_chart(episode, width: int = 480, height: int = 140, pad: int = 24) -> str:
    """An SVG chart of the chosen action's map share on each object per step, each object's share of
    the image dashed (what a uniform map would score), and a cursor at the shown step."""
    if not episode.attention:
        return ""
    steps = len(episode.trajectory.actions)
    top = max(max(float(s.max()) for s in episode.attention.values()), 0.05)
    dx = (width - 2 * pad) / max(steps - 1, 1)

    def y(value: float) -> float:
        return height - pad - value / top * (height - 2 * pad)

    lines, legend = [], []
    for (name, shares), color in zip(episode.attention.items(), CHART_COLORS):
        points = " ".join(f"{pad + t * dx:.1f},{y(float(v)):.1f}" for t, v in enumerate(shares))
        points = points if steps > 1 else f"{points} {points}"  # one step: a dot, from the round cap
        area = y(float(episode.areas[name].mean()))
        lines.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2" '
            'stroke-linecap="round" stroke-linejoin="round"/>'
            f'<line x1="{pad}" x2="{width - pad}" y1="{area:.1f}" y2="{area:.1f}" stroke="{color}" '
            'stroke-dasharray="4 3" stroke-width="1"/>'
        )
        legend.append(f'<li><span class="swatch" style="background:{color}"></span>{escape(name)}</li>')
    axes = (
        f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="#555"/>'
        f'<text x="2" y="{pad + 4}">{top:.2f}</text><text x="2" y="{height - pad + 4}">0</text>'
        f'<text x="{pad}" y="{height - 6}">step 0</text>'
        f'<text x="{width - pad}" y="{height - 6}" text-anchor="end">step {steps - 1}</text>'
    )
    empty = [t for t, is_empty in enumerate(episode.empty.tolist()) if is_empty]
    marks = "".join(
        f'<rect class="empty-mark" x="{pad + t * dx - 2:.1f}" y="{height - pad + 2}" width="4" height="5" '
        'fill="#777"><title>empty map</title></rect>'
        for t in empty
    )
    if empty:
        legend.append('<li><span class="swatch" style="background:#777"></span>empty map (step marked)</li>')
    cursor = f'<line class="cursor" x1="{pad}" x2="{pad}" y1="{pad / 2}" y2="{height - pad}"/>'
    return (
        "<h3>Share of the map on each object</h3>"
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" data-left="{pad}" '
        f'data-step="{dx:.4f}" aria-label="Share of the chosen action\'s map on each object at every step; '
        f"dashed: the object's share of the image\">{axes}{''.join(lines)}{marks}{cursor}</svg>"
        f'<ul class="legend">{"".join(legend)}</ul>'
    )
