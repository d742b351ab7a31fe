"""The shapes world and the bundled models trained on it."""

from mmcam.zoo.dataset import shapes_dataset
from mmcam.zoo.models import load
from mmcam.zoo.world import ANSWERS, CLASS_NAMES, make_scenes, render_scene

__all__ = ["ANSWERS", "CLASS_NAMES", "load", "make_scenes", "render_scene", "shapes_dataset"]
