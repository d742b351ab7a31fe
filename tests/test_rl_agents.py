"""The bundled ShapesReach agents: loaded without pickle, explained over 50 episodes, and the issues' acceptance.

Acceptance: over 50 episodes, the strong agent's map mass on the goal and the agent is at least twice
their share of the image area, and higher than the weak agent's. Over 100 other episodes, with the
default method and action target, the strong agent's map is empty on at most 5% of steps and its mass on
goal + agent over non-empty steps is ahead of the weak agent's with 95% bootstrap intervals apart.
Run with -s to see the figures.
"""

import pickle
import re

import pytest
import torch

from mmcam.adapters.rl import explain_episodes, make_env
from mmcam.cli.records import rollout_records, rollout_table
from mmcam.evaluation.rollouts import rollout_rows
from mmcam.loading import load_policy
from mmcam.zoo.agents import WEIGHTS_DIR, load_agent, load_spec

EPISODES = 50
SEED = 10_000  # reset seeds 10_000 ... 10_049: not used in training or in its evaluations


@pytest.fixture(scope="module")
def rollouts():
    venv = make_env("mmcam/ShapesReach-v0")
    return {
        name: explain_episodes(load_policy(name), venv, episodes=EPISODES, seed=SEED)
        for name in ("strong", "weak")
    }


def goal_and_agent(rollout):
    """(share of map mass, share of image area) on the goal and the agent, averaged over all steps."""
    attention, areas = rollout.attention(), rollout.areas()
    return attention["goal"] + attention["agent"], areas["goal"] + areas["agent"]


def test_weights_are_small_and_load_without_pickle(monkeypatch):
    for name in ("shapes-reach-strong", "shapes-reach-weak"):
        assert (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 2 * 2**20
    assert sum(path.stat().st_size for path in WEIGHTS_DIR.iterdir()) < 20 * 2**20

    def refuse(*args, **kwargs):
        raise AssertionError("the bundled agents must load without unpickling")

    for module, function in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, function, refuse)
    policy = load_agent("strong")
    assert not policy.training
    assert load_spec("strong")["eval"]["success_rate"] >= 0.95
    assert load_spec("weak")["eval"]["success_rate"] <= 0.6


def test_success_rates(rollouts):
    strong, weak = rollouts["strong"].success_rate(), rollouts["weak"].success_rate()
    print(f"\nsuccess over {EPISODES} episodes: strong {strong:.0%}, weak {weak:.0%}")
    assert strong >= 0.95 and weak <= 0.6


def test_one_record_per_step_with_shares_of_the_map(rollouts):
    rollout = rollouts["weak"]
    records = list(rollout_records(rollout))
    assert len(records) == sum(episode.steps for episode in rollout.episodes)
    for episode in rollout.episodes:
        assert episode.explanation.maps.shape == (episode.steps, 1, 64, 64)
        shares = torch.stack(list(episode.attention.values()))
        assert shares.min() >= 0 and shares.sum(dim=0).max() <= 1 + 1e-6
        assert [labels[0] for labels in episode.explanation.labels] == [
            rollout.action_names[a] for a in episode.trajectory.actions
        ]
    assert all(record["layer"] == "features_extractor.cnn.relu3" for record in records)


def test_summary_table_has_a_row_per_episode_and_one_for_all(rollouts):
    rollout = rollouts["strong"]
    lines = rollout_table(rollout).splitlines()
    assert len(lines) == 1 + EPISODES + 1
    assert lines[0].split() == [
        "episode",
        "seed",
        "steps",
        "return",
        "success",
        "empty",
        "agent",
        "goal",
        "distractors",
    ]
    assert lines[1].split()[:3] == ["0", str(SEED), str(rollout.episodes[0].steps)]
    total = lines[-1]
    assert total.split()[:2] == ["all", str(sum(e.steps for e in rollout.episodes))]
    assert total.split()[3:5] == [f"{rollout.success_rate():.0%}", f"{rollout.empty_share():.0%}"]
    cells = re.findall(r"(\d\.\d{3}) \(\s*(\d+\.\d)x\)", total)  # share (ratio to area) per mask
    attention, areas = rollout.attention(), rollout.areas()
    assert cells == [(f"{attention[n]:.3f}", f"{attention[n] / areas[n]:.1f}") for n in attention]


def test_acceptance_strong_agent_looks_at_goal_and_agent(rollouts):
    strong_mass, strong_area = goal_and_agent(rollouts["strong"])
    weak_mass, weak_area = goal_and_agent(rollouts["weak"])
    print(
        f"\nmap mass on goal + agent over {EPISODES} episodes (their share of the image in brackets):\n"
        f"  strong {strong_mass:.3f} ({strong_area:.4f}, {strong_mass / strong_area:.1f}x)\n"
        f"  weak   {weak_mass:.3f} ({weak_area:.4f}, {weak_mass / weak_area:.1f}x)"
    )
    assert strong_mass >= 2 * strong_area
    assert strong_mass > weak_mass


@pytest.fixture(scope="module")
def hundred_episodes():
    """100 episodes of each agent from seed 77_000 (not used in training), the defaults' rollout rows."""
    venv = make_env("mmcam/ShapesReach-v0")
    return {
        name: {
            row["quantity"]: row
            for row in rollout_rows(explain_episodes(load_policy(name), venv, 100, 77_000))
        }
        for name in ("strong", "weak")
    }


def test_acceptance_default_maps_are_rarely_empty_and_tell_the_agents_apart(hundred_episodes):
    strong, weak = hundred_episodes["strong"], hundred_episodes["weak"]
    shown = "goal+agent, non-empty"
    print(
        f"\nempty maps: strong {strong['empty']['mean']:.3f}, weak {weak['empty']['mean']:.3f}; "
        f"{shown}: strong {strong[shown]['mean']:.3f} [{strong[shown]['low']:.3f}, {strong[shown]['high']:.3f}], "
        f"weak {weak[shown]['mean']:.3f} [{weak[shown]['low']:.3f}, {weak[shown]['high']:.3f}]"
    )
    assert strong["empty"]["mean"] <= 0.05 and strong["empty"]["samples"] == 100
    assert strong[shown]["low"] > weak[shown]["high"]
    assert strong["distractors, non-empty"]["high"] < weak["distractors, non-empty"]["low"]


def test_empty_steps_are_counted_and_shown_with_the_evidence_against(rollouts):
    """Grad-CAM of the raw logit leaves some of the strong agent's maps empty: those steps, and only
    those, get the map of the negated target, which is not empty."""
    venv = make_env("mmcam/ShapesReach-v0")
    rollout = explain_episodes(load_policy("strong"), venv, 10, 77_000, method="gradcam", target="logit")
    empty = torch.cat([episode.empty for episode in rollout.episodes])
    assert 0 < int(empty.sum()) < len(empty)
    assert rollout.empty_share() == pytest.approx(float(empty.float().mean()))
    for episode in rollout.episodes:
        assert sorted(episode.against) == episode.empty.nonzero()[:, 0].tolist()
        assert all(episode.explanation.maps[t, 0].max() == 0 for t in episode.against)
        assert all(against.max() > 0 for against in episode.against.values())
    assert rollout.episodes[0].explanation.kinds == ["logit"]
