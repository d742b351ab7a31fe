"""A small CAM-friendly CNN that tags which (color, shape) classes appear in a shapes-world scene."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mmcam.zoo.processing import ShapesProcessor
from mmcam.zoo.world import CLASS_NAMES

DEFAULT_CONFIG = {
    # (out_channels, stride) per Conv-BN-ReLU block: 128 px in, a 16x16 grid after three stride-2 blocks,
    # then two blocks at 16x16 (receptive field 54 px: a large object and its surround).
    "blocks": [[24, 2], [48, 2], [64, 2], [96, 1], [128, 1]],
}


class ConvBlock(nn.Sequential):
    """Convolution, batch norm, ReLU; 3x3 at stride 1, 4x4 at stride 2.

    The even kernel at stride 2 centers output cell ``j`` on input pixels ``2j`` and ``2j + 1``, where
    resizing a map back up (bilinear, half-pixel centers) puts it. A 3x3 kernel would center it on
    pixel ``2j``, and three such layers shift the final grid 3.5 px up-left of where maps are drawn.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, stride + 2, stride=stride, padding=1, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(inplace=True),
            )
        )


class ShapesClassifier(nn.Module):
    """Conv blocks, global average pooling, one linear layer: multi-label logits over ``CLASS_NAMES``.

    Nothing mixes positions after the last block but the average pool, so Grad-CAM on
    ``default_layer`` is the class activation map (up to a constant factor) on a 16x16 grid.
    """

    def __init__(self, blocks: list[list[int]], labels: list[str] = CLASS_NAMES):
        super().__init__()
        layers = OrderedDict()
        in_channels = 3
        for i, (out_channels, stride) in enumerate(blocks, start=1):
            layers[f"block{i}"] = ConvBlock(in_channels, out_channels, stride)
            in_channels = out_channels
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_channels, len(labels))
        self.labels = list(labels)
        self.default_layer = f"features.block{len(blocks)}"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(pixel_values)).flatten(1))


def build_classifier(spec: dict) -> tuple[ShapesClassifier, ShapesProcessor]:
    """An untrained classifier and its processor from a weights json (``config``, ``labels``)."""
    return ShapesClassifier(spec["config"]["blocks"], spec["labels"]), ShapesProcessor()
