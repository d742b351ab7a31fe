"""Layers that pack a batch's tokens into one sequence without a batch axis, in an order of their own
(``Layout(packed=...)``), read as the same tokens batched."""

import pytest
import torch
from torch import nn

from mmcam.engine import Explainer, Layout
from tests.model_state import assert_unchanged, snapshot

BATCH, GRID, CHANNELS = 2, (3, 4), 8
TWO_CLASSES = [[0, 2]] * BATCH  # classes 0 and 2 of every sample


class Tokens(nn.Module):
    """4 px patches -> tokens -> ``block`` (per token) -> a position-weighted score per class. With
    ``order`` (B, L), ``block`` runs on the tokens packed into one sequence (B L, C), token l of sample b
    at row ``order[b, l]``; without, on (B, L, C). Both compute the same scores."""

    def __init__(self, order=None):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, CHANNELS, 4, stride=4)
        self.block = nn.Sequential(nn.LayerNorm(CHANNELS), nn.Linear(CHANNELS, CHANNELS))
        self.positions = nn.Parameter(torch.randn(GRID[0] * GRID[1], CHANNELS, 3))
        self.order = order

    def forward(self, image):
        tokens = self.embed(image).flatten(2).transpose(1, 2)
        if self.order is None:
            out = self.block(tokens)
        else:
            packed = tokens.flatten(0, 1)[self.order.flatten().argsort()]
            out = self.block(packed)[self.order]
        return torch.einsum("blc,lck->bk", torch.tanh(out), self.positions)


@pytest.fixture
def order():
    return torch.randperm(BATCH * GRID[0] * GRID[1], generator=torch.Generator().manual_seed(1)).view(
        BATCH, -1
    )


@pytest.mark.parametrize("method", ["gradcam", "normgrad"])
def test_a_packed_layer_gives_the_maps_of_its_tokens_batched(order, method):
    image = torch.randn(BATCH, 3, 4 * GRID[0], 4 * GRID[1], generator=torch.Generator().manual_seed(2))
    packed_model = Tokens(order)
    before = snapshot(packed_model)
    layout = Layout("tokens", grid=GRID, packed=order)
    packed = Explainer(packed_model, "block.0", method, layout)(image, TWO_CLASSES)
    assert_unchanged(packed_model, before)
    batched = Explainer(Tokens(), "block.0", method, Layout("tokens", grid=GRID))(image, TWO_CLASSES)
    torch.testing.assert_close(packed.scores, batched.scores)
    torch.testing.assert_close(packed.raw, batched.raw)
    assert packed.raw.shape == (BATCH, 2, *GRID) and packed.raw.abs().sum() > 0


def test_a_layer_that_is_not_the_packed_tokens_is_refused(order):
    image = torch.randn(BATCH, 3, 4 * GRID[0], 4 * GRID[1])
    explainer = Explainer(Tokens(order), "embed", "normgrad", Layout("tokens", grid=GRID, packed=order))
    with pytest.raises(ValueError, match="not the 24 packed tokens"):
        explainer(image, 0)
    with pytest.raises(ValueError, match=r"packed \(B, h\*w\)"):
        Layout("tokens", prefix=1, grid=GRID, packed=order)
