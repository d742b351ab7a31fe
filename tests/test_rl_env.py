"""ShapesReach's contract: spaces, rules, rewards, masks that match the pixels, determinism.

The numbers of the issue are written out here rather than imported, so a changed constant fails.
"""

import gymnasium as gym
import numpy as np
import pytest

from mmcam.zoo import reach
from mmcam.zoo.world import COLORS

UP, DOWN, LEFT, RIGHT = range(4)


@pytest.fixture
def env():
    return gym.make("mmcam/ShapesReach-v0")


def cell_of(mask):
    rows, columns = np.nonzero(mask)
    return rows.min() // 8, columns.min() // 8


def path_to_goal(info):
    (row, column), (goal_row, goal_column) = info["agent"], info["goal"]
    vertical = [DOWN if goal_row > row else UP] * abs(goal_row - row)
    return vertical + [RIGHT if goal_column > column else LEFT] * abs(goal_column - column)


def test_spaces_and_registration(env):
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.unwrapped.get_action_meanings() == ["up", "down", "left", "right"]
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert set(info["masks"]) == {"agent", "goal", "distractors"}
    assert 1 <= len(info["distractors"]) <= 3 and "red circle" not in info["distractors"]
    assert len(set(info["distractors"])) == len(info["distractors"])


@pytest.mark.parametrize("seed", range(30))
def test_masks_match_the_pixels(env, seed):
    observation, info = env.reset(seed=seed)
    masks = info["masks"]
    background = np.all(observation == 200, axis=-1)
    assert np.array_equal(background, ~(masks["agent"] | masks["goal"] | masks["distractors"]))
    assert not (masks["agent"] & masks["goal"]).any() and not (masks["goal"] & masks["distractors"]).any()
    assert np.all(observation[masks["agent"]] == (20, 20, 20))
    assert np.all(observation[masks["goal"]] == COLORS["red"])
    assert masks["agent"].sum() == 20 and masks["goal"].sum() == 32  # a 6x6 plus and a 6x6 circle
    assert cell_of(masks["agent"]) == info["agent"] and cell_of(masks["goal"]) == info["goal"]
    # every distractor is one full 6x6 shape in a cell of its own
    assert masks["distractors"].sum() == sum(
        reach.shape_mask(n.split()[1], 6).sum() for n in info["distractors"]
    )


def first_seed(env, condition):
    """The first reset seed whose info satisfies ``condition``."""
    return next(seed for seed in range(1000) if condition(env.reset(seed=seed)[1]))


def test_moves_walls_and_step_cost(env):
    # the agent in the top-left corner, the goal off the path taken below
    seed = first_seed(env, lambda info: info["agent"] == (0, 0) and info["goal"] not in {(1, 0), (1, 1)})
    env.reset(seed=seed)
    for action, expected in [(UP, (0, 0)), (LEFT, (0, 0)), (DOWN, (1, 0)), (RIGHT, (1, 1))]:
        _, reward, terminated, truncated, info = env.step(action)
        assert info["agent"] == expected and cell_of(info["masks"]["agent"]) == expected
        assert reward == pytest.approx(-0.01) and not terminated and not truncated


def test_reaching_the_goal_pays_one_and_ends(env):
    _, info = env.reset(seed=7)
    actions = path_to_goal(info)
    for action in actions[:-1]:
        _, reward, terminated, _, info = env.step(action)
        assert reward == pytest.approx(-0.01) and not terminated and not info["is_success"]
    _, reward, terminated, truncated, info = env.step(actions[-1])
    assert reward == 1.0 and terminated and not truncated and info["is_success"]
    assert info["agent"] == info["goal"]
    # the agent is drawn over the goal: the goal keeps only the pixels the plus does not cover
    assert info["masks"]["goal"].sum() == 32 - np.sum(reach.plus_mask(6) & reach.shape_mask("circle", 6))


def test_truncated_after_40_steps(env):
    # pushing up against the wall never reaches a goal that is not above the agent
    seed = first_seed(env, lambda info: info["goal"][1] != info["agent"][1])
    env.reset(seed=seed)
    for step in range(1, 41):
        _, reward, terminated, truncated, _ = env.step(UP)
        assert reward == pytest.approx(-0.01) and not terminated
        assert truncated == (step == 40)


def test_the_agent_is_drawn_over_a_distractor(env):
    # one distractor, reached by going along the row first, then the column, without passing the goal
    def reachable(info):
        if len(info["distractors"]) != 1:
            return False
        target = cell_of(info["masks"]["distractors"])
        (row, column), goal = info["agent"], info["goal"]
        passed = {(row, c) for c in range(min(column, target[1]), max(column, target[1]) + 1)}
        passed |= {(r, target[1]) for r in range(min(row, target[0]), max(row, target[0]) + 1)}
        return goal not in passed

    _, info = env.reset(seed=first_seed(env, reachable))
    target, before = cell_of(info["masks"]["distractors"]), info["masks"]["distractors"]
    (row, column) = info["agent"]
    actions = [RIGHT if target[1] > column else LEFT] * abs(target[1] - column)
    actions += [DOWN if target[0] > row else UP] * abs(target[0] - row)
    observation, reward, terminated, _, info = env.step(actions[0])
    for action in actions[1:]:
        observation, reward, terminated, _, info = env.step(action)
    assert info["agent"] == target and not terminated and reward == pytest.approx(-0.01)
    assert np.array_equal(info["masks"]["distractors"], before & ~info["masks"]["agent"])
    assert np.all(observation[info["masks"]["agent"]] == (20, 20, 20))


def test_deterministic_in_the_seed(env):
    def episode(seed):
        observation, _ = env.reset(seed=seed)
        frames = [observation]
        for action in [0, 3, 3, 1, 2, 1]:
            frames.append(env.step(action)[0])
        return np.stack(frames)

    assert np.array_equal(episode(11), episode(11))
    assert not np.array_equal(episode(11), episode(12))


def test_layouts_vary(env):
    layouts = set()
    for seed in range(50):
        _, info = env.reset(seed=seed)
        layouts.add((info["agent"], info["goal"], len(info["distractors"])))
        assert info["agent"] != info["goal"]
    assert len(layouts) == 50
    counts = {len(env.reset(seed=s)[1]["distractors"]) for s in range(50)}
    assert counts == {1, 2, 3}
