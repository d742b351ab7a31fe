"""ShapesReach: a pixel gridworld from the shapes world, with the exact mask of every object in ``info``.

A 64x64 RGB view of an 8x8 grid of 8-pixel cells on a flat light-gray background: a black plus sign
(the agent), one red circle (the goal) and 1-3 distractors, each a different (color, shape) of the
shapes world other than the red circle. Objects fill the middle 6x6 pixels of their cell and sit on
distinct cells. Actions move the agent one cell up, down, left or right (into a wall: it stays). A step
onto the goal ends the episode (terminated) with reward +1; every other step costs 0.01; an episode is
truncated after 40 steps. Distractors do nothing: the agent walks over them and is drawn on top.

``info["masks"]`` holds the exact pixels of the agent, the goal and the distractors (together) as
drawn in the observation: occluded pixels belong to the object on top. Importing this module
registers the environment as ``mmcam/ShapesReach-v0``; everything is deterministic given the seed
passed to ``reset``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mmcam.zoo.world import CLASS_NAMES, COLORS, shape_mask

ENV_ID = "mmcam/ShapesReach-v0"
GRID = 8
CELL = 8
VIEW = GRID * CELL
SIDE = 6  # an object's box side in px, centred in its cell
MAX_STEPS = 40
GOAL_REWARD = 1.0
STEP_COST = 0.01
BACKGROUND = 200  # gray level
AGENT_COLOR = (20, 20, 20)
GOAL = "red circle"
DISTRACTORS = tuple(name for name in CLASS_NAMES if name != GOAL)
DISTRACTOR_COUNTS = (1, 2, 3)
ACTIONS = ("up", "down", "left", "right")
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (row, column) steps

# Values of the label image: which object a pixel shows.
_EMPTY, _AGENT, _GOAL, _DISTRACTOR = 0, 1, 2, 3
MASK_NAMES = ("agent", "goal", "distractors")


def plus_mask(side: int) -> np.ndarray:
    """Boolean ``side x side`` plus sign with arms a third of the side wide, tested at pixel centers."""
    coords = np.arange(side) + 0.5
    x, y = coords[None, :], coords[:, None]
    arm = side / 6
    return (np.abs(x - side / 2) <= arm) | (np.abs(y - side / 2) <= arm)


_AGENT_MASK = plus_mask(SIDE)


def cell_slices(cell: tuple[int, int]) -> tuple[slice, slice]:
    """The pixel rows and columns of an object's box in grid cell (row, column)."""
    margin = (CELL - SIDE) // 2
    top, left = cell[0] * CELL + margin, cell[1] * CELL + margin
    return slice(top, top + SIDE), slice(left, left + SIDE)


class ShapesReach(gym.Env):
    """Reach the red circle; see the module docstring for the rules and ``info`` for the object masks.

    ``info``: ``masks`` (name -> bool (64, 64) for ``MASK_NAMES``), ``agent`` and ``goal`` cells
    (row, column), ``distractors`` (their names), ``is_success`` (the agent is on the goal).
    """

    metadata: ClassVar[dict] = {
        "render_modes": ["rgb_array"],
        "render_fps": 4,
        "legend": "the black plus sign is the agent, the red circle its goal; other shapes are distractors",
    }

    def __init__(self, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (VIEW, VIEW, 3), np.uint8)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self._scene = np.zeros((VIEW, VIEW, 3), np.uint8)  # everything but the agent
        self._scene_labels = np.zeros((VIEW, VIEW), np.uint8)
        self._agent = (0, 0)
        self._goal = (0, 0)
        self._distractors: list[str] = []
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        count = int(rng.choice(DISTRACTOR_COUNTS))
        cells = rng.choice(GRID * GRID, size=count + 2, replace=False)
        agent, goal, *others = [divmod(int(c), GRID) for c in cells]
        self._distractors = [DISTRACTORS[int(i)] for i in rng.choice(len(DISTRACTORS), count, replace=False)]
        self._scene[:] = BACKGROUND
        self._scene_labels[:] = _EMPTY
        for name, cell, label in [
            (GOAL, goal, _GOAL),
            *((n, c, _DISTRACTOR) for n, c in zip(self._distractors, others)),
        ]:
            color, shape = name.split()
            self._paint(self._scene, self._scene_labels, cell, shape_mask(shape, SIDE), COLORS[color], label)
        self._agent, self._goal, self._steps = agent, goal, 0
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"action must be one of 0..{len(ACTIONS) - 1} ({', '.join(ACTIONS)}), got {action!r}"
            )
        d_row, d_column = MOVES[int(action)]
        row, column = self._agent
        self._agent = (min(max(row + d_row, 0), GRID - 1), min(max(column + d_column, 0), GRID - 1))
        self._steps += 1
        terminated = self._agent == self._goal
        truncated = not terminated and self._steps >= MAX_STEPS
        reward = GOAL_REWARD if terminated else -STEP_COST
        observation, info = self._observe()
        return observation, reward, terminated, truncated, info

    def get_action_meanings(self) -> list[str]:
        return list(ACTIONS)

    def render(self) -> np.ndarray | None:
        return self._observe()[0] if self.render_mode == "rgb_array" else None

    def _paint(self, image, labels, cell, mask, color, label) -> None:
        rows, columns = cell_slices(cell)
        image[rows, columns][mask] = color
        labels[rows, columns][mask] = label

    def _observe(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The observation (the scene with the agent drawn on top) and its info."""
        image, labels = self._scene.copy(), self._scene_labels.copy()
        self._paint(image, labels, self._agent, _AGENT_MASK, AGENT_COLOR, _AGENT)
        masks = {name: labels == label for name, label in zip(MASK_NAMES, (_AGENT, _GOAL, _DISTRACTOR))}
        return image, {
            "masks": masks,
            "agent": self._agent,
            "goal": self._goal,
            "distractors": list(self._distractors),
            "is_success": self._agent == self._goal,
        }


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="mmcam.zoo.reach:ShapesReach")
