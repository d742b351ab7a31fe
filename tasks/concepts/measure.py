"""Measure the textual explanations (issue 33) on held-out shapes scenes, per classifier.

For every class present in a scene and predicted (logit > 0): its sentence from Grad-CAM's unit contributions
at the layer, once with single-attribute labels (Network Dissection, 11 concepts: what mmcam did before) and
once with compositional labels (formulas up to 3 atoms over colors, shapes, sizes and positions). Reported:

* first: the share whose first supporting concept asserts the class's color or shape;
* both: the share whose supporting concepts assert both the color and the shape;
* conflicts: concepts listed both for and against without a qualifier; repeats: concepts listed twice;
* ablation: the mean score drop when the sentence's units are zeroed, as many random units, as many units of
  the next concepts; ratio = named / random;
* iou: the mean IoU of the labels of the sentences' supporting units.

Run: ``PYTHONPATH=$PWD .venv/bin/python tasks/concepts/measure.py [--scenes 100] [--models shapes,resnet18,vit]``
(probe: 200 scenes of seed 60000; held-out scenes from seed 70000; tables cached under $MMCAM_CACHE).

``--rl-targets log-prob,logit,advantage,margin [--episodes 10]`` measures the RL sentences instead: the strong
ShapesReach agent's units named on 20 episodes of its play (seeds 50000+), its chosen action explained at every
step of held-out episodes (seeds 80000+) by each action target; per target: the share of steps whose sentence
names a supporting unit, the share whose first supporting concept is the goal, and the ablation drops (in the
target's own units, so compare the ratios across targets).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from PIL import Image

from mmcam.concepts.ablation import sentence_drops
from mmcam.concepts.compose import positive_atoms
from mmcam.concepts.probes import shapes_probe
from mmcam.concepts.sentences import describe
from mmcam.concepts.tables import concept_table
from mmcam.loading import load_classifier
from mmcam.zoo import make_scenes

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "models"
MODELS = {  # name -> (model spec, layer whose units are named)
    "shapes": ("shapes", "features.block5"),
    "resnet18": (f"torchvision:resnet18:{FIXTURES / 'resnet18-shapes'}", "layer4"),
    "vit": (str(FIXTURES / "vit-shapes"), "vit.layers.2"),  # the token layer's channels (residual stream)
    "vit-mlp": (str(FIXTURES / "vit-shapes"), "vit.layers.2.mlp.activation_fn"),  # its MLP's hidden units
}


def measure(name: str, scenes: int, seed: int) -> dict:
    spec, layer = MODELS[name]
    classifier = load_classifier(spec)
    subject = classifier.subject(layer)
    tables = {
        "single": concept_table(subject, shapes_probe(positions=False), progress=False, max_length=1),
        "compositional": concept_table(subject, shapes_probe(), progress=False),
    }
    explainer = classifier.explainer(layer, "gradcam")
    counts = {kind: {"n": 0, "first": 0, "both": 0, "conflicts": 0, "repeats": 0} for kind in tables}
    drops = {kind: {"named": [], "random": [], "next": []} for kind in tables}
    ious = {kind: [] for kind in tables}
    examples = {}
    start = time.time()
    for scene in make_scenes(scenes, seed=seed):
        inputs = classifier.preprocess([Image.fromarray(scene.image)])
        present = sorted({obj.class_index for obj in scene.objects})
        explanation = explainer(inputs, [present])
        for kind, table in tables.items():
            contributions = explanation.contributions[0]
            scores = explanation.scores[0].tolist()
            kept = [k for k, s in enumerate(scores) if s > 0]
            if not kept:
                continue
            label_score = {u.unit: u.score for u in table.units}
            ablated = sentence_drops(
                explainer, inputs, [[present[k] for k in kept]], contributions[kept], table
            )
            for k, ablation in zip(kept, ablated):
                label = classifier.class_names[present[k]]
                color, shape = label.split()
                described = describe(label, contributions[k], table, score=f"logit {scores[k]:.2f}")
                count_sentence(counts[kind], described, color, shape)
                for key in drops[kind]:
                    if not math.isnan(ablation[key]):
                        drops[kind][key].append(ablation[key])
                ious[kind] += [label_score[u] for e in described.supporting for u in e.units]
                examples.setdefault(kind, described.text)
    result = {"model": name, "layer": subject.layer, "seconds": round(time.time() - start)}
    for kind, table in tables.items():
        result[kind] = {
            **sentence_figures(counts[kind], drops[kind], ious[kind]),
            "ratio_next": ratio(drops[kind], "next"),
            "table_iou": round(
                sum(u.score for u in table.units if u.concept)
                / max(1, sum(1 for u in table.units if u.concept)),
                3,
            ),
            "example": examples.get(kind, ""),
        }
    return result


def count_sentence(tally: dict, described, color: str, shape: str) -> None:
    """Add one sentence of a class ``color shape`` to ``tally``: n, first, both, conflicts, repeats (docstring)."""
    supporting = [e.concept for e in described.supporting]
    asserted = [positive_atoms(c) for c in supporting]
    tally["n"] += 1
    tally["first"] += bool(asserted) and bool({color, shape} & asserted[0])
    tally["both"] += any(color in a for a in asserted) and any(shape in a for a in asserted)
    tally["conflicts"] += len(set(supporting) & {e.concept for e in described.opposing})
    listed = supporting + [e.concept for e in described.opposing]
    tally["repeats"] += len(listed) - len(set(listed))


def ratio(drops: dict[str, list[float]], against: str) -> float | None:
    """Mean named drop over the mean ``against`` drop (None when that is not positive)."""
    mean = {key: sum(v) / max(len(v), 1) for key, v in drops.items()}
    return round(mean["named"] / mean[against], 1) if mean[against] > 0 else None


def sentence_figures(tally: dict, drops: dict[str, list[float]], ious: list[float]) -> dict:
    """The reported figures of a tally of sentences, their ablation drops and their units' label IoUs."""
    n = max(tally["n"], 1)
    mean = {key: sum(v) / max(len(v), 1) for key, v in drops.items()}
    return {
        "targets": tally["n"],
        "first": round(tally["first"] / n, 3),
        "both": round(tally["both"] / n, 3),
        "conflicts": tally["conflicts"],
        "repeats": tally["repeats"],
        "drop_named": round(mean["named"], 3),
        "drop_random": round(mean["random"], 3),
        "drop_next": round(mean["next"], 3),
        "ratio_random": ratio(drops, "random"),
        "iou": round(sum(ious) / max(len(ious), 1), 3),
    }


def measure_rl(target: str, episodes: int, seed: int = 80_000) -> dict:
    """The RL sentences of the strong agent's chosen actions, explained by ``target`` (see the docstring)."""
    from mmcam.adapters.rl import explain_episodes, make_env
    from mmcam.cli.rl import rollout_probe
    from mmcam.concepts.sentences import verb_of
    from mmcam.loading import load_policy

    venv = make_env("mmcam/ShapesReach-v0")
    policy = load_policy("strong", venv)
    table = concept_table(policy.subject(), rollout_probe(policy, venv), progress=False)
    rollout = explain_episodes(policy, venv, episodes=episodes, seed=seed, method="gradcam", target=target)
    counts = {"steps": 0, "named": 0, "goal_first": 0}
    drops = {"named": [], "random": [], "next": []}
    for e, episode in enumerate(rollout.episodes):
        for t in range(episode.steps):
            contributions = episode.explanation.contributions[t, :1]
            inputs, targets = rollout.replay(e, t)
            ablation = sentence_drops(rollout.explainer, inputs, targets[:1], contributions, table)[0]
            described = describe("action", contributions[0], table, verb_of("chose", True))
            counts["steps"] += 1
            counts["named"] += bool(described.supporting)
            counts["goal_first"] += bool(described.supporting) and "goal" in positive_atoms(
                described.supporting[0].concept
            )
            for key, values in drops.items():
                if not math.isnan(ablation[key]):
                    values.append(ablation[key])
    mean = {key: sum(v) / max(len(v), 1) for key, v in drops.items()}
    steps = max(counts["steps"], 1)
    return {
        "target": target,
        "steps": counts["steps"],
        "named_share": round(counts["named"] / steps, 3),
        "goal_first": round(counts["goal_first"] / steps, 3),
        **{f"drop_{key}": round(value, 4) for key, value in mean.items()},
        "ratio_random": round(mean["named"] / mean["random"], 1) if mean["random"] > 0 else None,
        "ratio_next": round(mean["named"] / mean["next"], 1) if mean["next"] > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=70_000)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rl-targets", default="", help="measure the RL sentences by these action targets")
    parser.add_argument("--episodes", type=int, default=10)
    arguments = parser.parse_args()
    for target in filter(None, arguments.rl_targets.split(",")):
        print(json.dumps(measure_rl(target, arguments.episodes)), flush=True)
    if arguments.rl_targets:
        return
    for name in arguments.models.split(","):
        print(json.dumps(measure(name, arguments.scenes, arguments.seed)), flush=True)


if __name__ == "__main__":
    main()
