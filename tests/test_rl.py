"""Explaining RL policies: SB3 PPO/A2C/DQN and plain torch policies, channel orders, frame stacks, Atari, the CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage
from torch import nn

import mmcam.zoo.reach  # noqa: F401  (registers the environment)
from mmcam.adapters.rl import explain_episodes, make_env, sb3_policy, torch_policy
from mmcam.cli import main
from mmcam.loading import load_policy
from mmcam.metrics.attention import area_shares, mass_shares
from mmcam.targets import StateValue
from tests.model_state import assert_unchanged, snapshot

ALGORITHMS = {
    "ppo": (PPO, {"n_steps": 8, "batch_size": 8}),
    "a2c": (A2C, {}),
    "dqn": (DQN, {"buffer_size": 1}),
}


def reach_venv(channels_first: bool, stack: int):
    venv = DummyVecEnv([lambda: gym.make("mmcam/ShapesReach-v0")])
    if channels_first:
        venv = VecTransposeImage(venv)
    return VecFrameStack(venv, stack) if stack > 1 else venv


def sb3_scores(agent, observation):
    """SB3's own action log-probabilities (or Q-values) for an observation, through its own preprocessing."""
    obs, _ = agent.policy.obs_to_tensor(observation)
    with torch.no_grad():
        if isinstance(agent, DQN):
            return agent.policy.q_net(obs)
        return agent.policy.get_distribution(obs).distribution.logits


def test_mass_shares_are_exact_on_known_maps():
    masks = {"left": torch.zeros(3, 4, 4, dtype=torch.bool), "corner": torch.zeros(3, 4, 4, dtype=torch.bool)}
    masks["left"][:, :, :2] = True
    masks["corner"][:, 0, 3] = True
    maps = torch.stack([masks["left"].float()[0], torch.ones(4, 4), torch.zeros(4, 4)])
    shares = mass_shares(maps, masks)
    assert shares["left"].tolist() == [1.0, 0.5, 0.0]  # all on it, uniform, no mass at all
    assert shares["corner"].tolist() == [0.0, 1 / 16, 0.0]
    assert area_shares(masks)["left"].tolist() == [0.5] * 3


def test_state_value_target_reads_value_columns():
    class Output:
        value = torch.tensor([[1.5], [-2.0]])

    assert StateValue()(Output()).tolist() == [1.5, -2.0]
    with pytest.raises(TypeError, match="value"):
        StateValue()(torch.zeros(2, 4))


@pytest.mark.parametrize(
    "algorithm, channels_first, stack",
    [("ppo", False, 1), ("a2c", True, 1), ("dqn", False, 2), ("ppo", True, 3)],
)
def test_sb3_cnn_policies_explain_what_they_act_on(algorithm, channels_first, stack):
    venv = reach_venv(channels_first, stack)
    cls, options = ALGORITHMS[algorithm]
    agent = cls("CnnPolicy", venv, seed=0, device="cpu", **options)
    agent.policy.set_training_mode(True)
    before = snapshot(agent.policy)
    policy = sb3_policy(agent, name=algorithm)
    rollout = explain_episodes(policy, venv, seed=5, all_actions=True, value=True, max_steps=6)
    assert_unchanged(agent.policy, before)
    assert agent.policy.training

    episode = rollout.episodes[0]
    steps = episode.steps
    assert 1 <= steps <= 6
    assert episode.explanation.maps.shape == (steps, 1 + 4 + 1, 64, 64)  # chosen, every action, value
    assert [labels[1:] for labels in episode.explanation.labels] == [
        ["up", "down", "left", "right", "value"]
    ] * steps
    # the chosen action is SB3's own greedy action, scored as SB3 scores it
    venv.seed(5)
    observation = venv.reset()
    for t, action in enumerate(episode.trajectory.actions):
        scores = sb3_scores(agent, observation)
        assert action == int(agent.predict(observation, deterministic=True)[0][0])
        explained = episode.explanation.scores[t, 1:5]
        expected = scores[0] if algorithm == "dqn" else scores[0] - scores[0].logsumexp(0)
        if algorithm != "dqn":
            explained = explained - explained.logsumexp(0)
        torch.testing.assert_close(explained, expected, atol=1e-4, rtol=1e-4)
        # the frame shown is the newest frame of the stack, as the environment drew it
        newest = observation[0, -3:].transpose(1, 2, 0) if channels_first else observation[0, ..., -3:]
        assert np.array_equal(episode.frames[t], newest)
        observation = venv.step(np.array([action]))[0]
    assert set(episode.attention) == {"agent", "goal", "distractors"}


def test_torch_policy_channels_last():
    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 8, stride=8)
            self.logits = nn.Linear(8 * 64, 4)
            self.value = nn.Linear(8 * 64, 1)

        def forward(self, observations):  # (B, H, W, C) in 0..255
            features = torch.relu(self.conv(observations.permute(0, 3, 1, 2) / 255)).flatten(1)
            return self.logits(features), self.value(features)

    torch.manual_seed(0)
    module = Policy().eval()
    policy = torch_policy(module, layer="conv", channels_last=True)
    env = gym.make("mmcam/ShapesReach-v0")
    rollout = explain_episodes(policy, env, episodes=2, seed=3, value=True, max_steps=5)
    for episode in rollout.episodes:
        observations = torch.as_tensor(episode.trajectory.observations, dtype=torch.float32)
        with torch.no_grad():
            logits, values = module(observations)
        assert episode.trajectory.actions == logits.argmax(1).tolist()
        torch.testing.assert_close(torch.tensor(episode.trajectory.values), values[:, 0])
        assert episode.explanation.maps.shape == (episode.steps, 2, 64, 64)
        assert np.array_equal(episode.frames, episode.trajectory.observations)


def test_stochastic_actions_are_reproducible():
    policy = load_policy("random:ppo", make_env("mmcam/ShapesReach-v0"))
    runs = [
        explain_episodes(policy, make_env("mmcam/ShapesReach-v0"), seed=4, deterministic=False, max_steps=8)
        for _ in range(2)
    ]
    assert runs[0].episodes[0].trajectory.actions == runs[1].episodes[0].trajectory.actions


def test_atari_with_the_usual_preprocessing():
    venv = make_env("ALE/Pong-v5")
    assert venv.observation_space.shape == (84, 84, 4)  # 84x84 gray, 4 frames stacked
    policy = load_policy("random:ppo", venv)
    rollout = explain_episodes(policy, venv, seed=0, value=True, max_steps=4)
    episode = rollout.episodes[0]
    assert episode.steps == 4 and not episode.trajectory.terminated
    assert episode.explanation.maps.shape == (4, 2, 84, 84)
    assert rollout.action_names[:2] == ["noop", "fire"]
    assert rollout.episodes[0].attention == {}
    assert episode.frames.shape == (4, 84, 84, 3)
    assert np.array_equal(episode.frames[..., 0], episode.trajectory.observations[..., -1])


def test_cli_json_one_record_per_step(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["rl", "--episodes", "2", "--seed", "7", "-o", str(out), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["episode"] for r in records} == {0, 1}
    for episode in (0, 1):
        steps = [r for r in records if r["episode"] == episode]
        assert [r["step"] for r in steps] == list(range(len(steps)))
        with Image.open(steps[0]["animation"]) as animation:
            assert animation.n_frames == len(steps) and animation.size == (512, 270)
    for record in records:
        assert record["task"] == "rl" and record["model"] == "shapes-reach-strong"
        assert record["env"] == "mmcam/ShapesReach-v0" and record["size"] == [64, 64]
        assert record["action"] in ("up", "down", "left", "right") and isinstance(record["value"], float)
        (target,) = record["targets"]
        assert set(target) == {"label", "index", "score", "score_kind", "peak"}
        assert target["label"] == record["action"] and target["score_kind"] == "log-probability"
        assert record["empty"] is False  # HiResCAM's maps of this agent are never empty on these steps
        assert set(record["attention"]) == {"agent", "goal", "distractors"}
        assert 0 <= sum(record["attention"].values()) <= 1 + 1e-6
    assert (out / "attention.png").is_file()


def test_cli_mp4_and_bad_policy(tmp_path, capsys):
    code = main(
        [
            "rl",
            "--policy",
            "weak",
            "--episodes",
            "1",
            "--max-steps",
            "3",
            "--video",
            "mp4",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0 and (tmp_path / "episode-0.mp4").stat().st_size > 0
    assert "shapes-reach-weak" in capsys.readouterr().out
    assert main(["rl", "--policy", "nope", "-o", str(tmp_path)]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


def test_episodes_of_no_step_are_refused_in_a_sentence():
    env = make_env("mmcam/ShapesReach-v0")
    with pytest.raises(ValueError, match="at least one step"):
        explain_episodes(load_policy("random:ppo", env), env, max_steps=0)


def test_missing_checkpoints_and_non_image_environments_get_one_sentence(tmp_path):
    with pytest.raises(ValueError, match=r"no saved stable-baselines3 model at .*agent \(nor .*agent.zip\)"):
        load_policy(f"sb3:ppo:{tmp_path / 'agent'}")
    with pytest.raises(ValueError, match="observations are not images"):
        load_policy("random:ppo", make_env("CartPole-v1"))


def test_sb3_checkpoints_are_unpickled_only_when_trusted(tmp_path):
    (tmp_path / "agent.zip").write_bytes(b"not opened")
    with pytest.raises(ValueError, match="unpickles .* --trust-pickle"):
        load_policy(f"sb3:ppo:{tmp_path / 'agent'}")


def test_eval_episodes_reports_every_agent_method_and_target_with_intervals(tmp_path, capsys):
    command = ["eval", "--task", "rl", "--episodes", "3", "--methods", "hirescam,perturbation"]
    command += ["--action-targets", "log-prob,margin", "--seed", "5", "-o", str(tmp_path), "--json"]
    assert main(command) == 0
    rows = json.loads(capsys.readouterr().out)
    runs = {(row["agent"], row["method"], row["target"]) for row in rows}
    assert len(runs) == 2 * 2 * 2
    assert {row["quantity"] for row in rows} == {
        "empty",
        "goal+agent",
        "goal+agent, non-empty",
        "distractors",
        "distractors, non-empty",
        "goal+agent area",
    }
    for row in rows:
        assert row["samples"] == 3 and row["low"] <= row["mean"] <= row["high"]
    assert json.loads((tmp_path / "rollouts.json").read_text())["rows"] == rows
    assert main(["eval", "--task", "classify", "--episodes", "3"]) != 0
    assert "use it with --task rl" in capsys.readouterr().err
    assert main(["eval", "--task", "rl", "--episodes", "3", "--action-targets", "q"]) != 0
    assert "unknown action target 'q'; use one of logit, log-prob" in capsys.readouterr().err


def test_rl_command_takes_a_target_and_compares_methods_on_the_same_episodes(tmp_path, capsys):
    command = ["rl", "--episodes", "1", "--method", "perturbation", "--target", "margin", "--json"]
    assert main([*command, "--compare", "gradcam,hirescam", "-o", str(tmp_path)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for record in records:
        assert record["method"] == "perturbation" and record["targets"][0]["score_kind"] == "logit difference"
        assert record["attention"]["goal"] + record["attention"]["agent"] > 0.05
        assert set(record["compared"]) == {"gradcam", "hirescam"}
        assert set(record["compared"]["hirescam"]) == {"peak", "empty", "attention"}
    report = (tmp_path / "report.html").read_text()
    assert "gradcam: chosen action" in report and "hirescam: chosen action" in report
