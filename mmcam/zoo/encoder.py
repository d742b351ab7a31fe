"""The convolutional image encoder shared by the bundled captioner and VQA model.

It maps a 128x128 image to a grid of feature vectors, one per 8x8-pixel cell, which the language side reads
cell by cell (cross-attention, question-guided attention). Nothing pools the grid before that, so each
object's attributes stay in the cells that cover it, which is what Grad-CAM on the last block explains.

Downsampling blocks use 4x4 kernels with stride 2 and padding 1: the receptive field of grid cell ``i`` is
then centered on pixel ``8 i + 3.5``, the same point where bilinear upsampling of a Grad-CAM map puts that
cell, so maps are not shifted by half a cell.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

DEFAULT_BLOCKS = [[24, 2], [32, 2], [64, 2], [64, 1], [96, 1]]  # (out_channels, stride) per block


class ConvBlock(nn.Sequential):
    """Convolution (4x4 stride 2, or 3x3 stride 1), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        kernel = 4 if stride == 2 else 3
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(),
            )
        )


class ConvEncoder(nn.Sequential):
    """Conv-BN-ReLU blocks named ``block1`` ... ``blockN``; output (B, C, H / 8, W / 8) for three stride-2 blocks."""

    def __init__(self, blocks: list[list[int]]):
        layers = OrderedDict()
        in_channels = 3
        for i, (out_channels, stride) in enumerate(blocks, start=1):
            layers[f"block{i}"] = ConvBlock(in_channels, out_channels, stride)
            in_channels = out_channels
        super().__init__(layers)
        self.out_channels = in_channels
        self.stride = 2 ** sum(stride == 2 for _, stride in blocks)
        self.last_block = f"block{len(blocks)}"
