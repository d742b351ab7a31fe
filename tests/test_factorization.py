"""Deep Feature Factorization: its NMF against scikit-learn's, and concepts planted in known regions."""

import numpy as np
import pytest
import torch
from torch import nn

import mmcam
from mmcam.concepts.factorization import nmf


def test_nmf_equals_scikit_learn_multiplicative_updates_from_the_same_start():
    from sklearn.decomposition import NMF

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(120, 30, generator=generator) ** 2
    x[:, 5] = 0  # a dead channel: its H column's updates divide 0 by 0
    start = (torch.rand(120, 4, generator=generator), torch.rand(4, 30, generator=generator))
    w, h = nmf(x, 4, iterations=150, start=start)
    reference = NMF(4, solver="mu", init="custom", max_iter=150, tol=0)
    expected_w = reference.fit_transform(x.numpy(), W=start[0].numpy().copy(), H=start[1].numpy().copy())
    assert reference.n_iter_ == 150
    np.testing.assert_allclose(w.numpy(), expected_w, rtol=0, atol=1e-4)
    np.testing.assert_allclose(h.numpy(), reference.components_, rtol=0, atol=1e-4)


def test_nmf_is_seeded_and_rejects_negative_input():
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(nmf(x, 2, seed=3), nmf(x, 2, seed=3))
    with pytest.raises(ValueError, match="non-negative"):
        nmf(x - 0.5, 2)


class Planted(nn.Module):
    """The image itself is the layer's activation; a linear head reads its channel means."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.features = nn.Identity()
        self.head = head

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


RED, BLUE = torch.tensor([1.0, 0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 2.0])


def planted_images():
    """Two 8x8 images of 4 channels: pattern RED in one quadrant and BLUE in another, swapped between the
    images, a little noise elsewhere; returns the images and each pattern's region per image."""
    images = 0.01 * torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    red, blue = torch.zeros(2, 8, 8, dtype=torch.bool), torch.zeros(2, 8, 8, dtype=torch.bool)
    red[0, :4, :4] = blue[0, 4:, 4:] = red[1, 4:, :4] = blue[1, :4, 4:] = True
    images += RED[None, :, None, None] * red[:, None] + BLUE[None, :, None, None] * blue[:, None]
    return images, red, blue


def test_planted_patterns_become_two_concepts_covering_their_regions_and_named_by_the_head():
    images, red, blue = planted_images()
    head = nn.Linear(4, 3, bias=False)
    with torch.no_grad():  # class 0 reads the RED pattern, class 2 the BLUE one, class 1 neither
        head.weight.copy_(torch.stack([RED, torch.full((4,), -1.0), BLUE]) * 5)
    model = Planted(head).train()
    result = mmcam.factorize(
        model, images, layer="features", concepts=2, classifier=head, class_names=["red", "none", "blue"]
    )
    assert result.maps.shape == (2, 2, 8, 8) and result.raw.shape == (2, 2, 8, 8)
    assert result.concepts.shape == (2, 4) and result.error < 0.05
    red_concept = int(result.raw[red[:, None].expand_as(result.raw)].reshape(-1, 2).mean(0).argmax())
    for concept, region, name in ((red_concept, red, "red"), (1 - red_concept, blue, "blue")):
        covered = result.maps[:, concept] > 0.5
        assert torch.equal(covered, region), name
        assert result.labels[concept][0] == name
    assert result.probabilities.shape == (2, 2)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_factorize_says_what_to_do_and_leaves_the_model_as_it_was():
    images, _, _ = planted_images()
    model = Planted(nn.Linear(4, 3)).train()
    model.unused = nn.Identity()
    with pytest.raises(ValueError, match="did not run"):
        mmcam.factorize(model, images, layer="unused")
    with pytest.raises(ValueError, match="pass layout="):
        mmcam.factorize(model, images, layer="head")
    with pytest.raises(ValueError, match="float image batch"):
        mmcam.factorize(model, images[0], layer="features")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())
