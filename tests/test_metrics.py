"""Each metric on hand-made maps, masks and toy models where the answer is known."""

import math

import pytest
import torch
from torch import nn

from mmcam.metrics.baselines import center_maps, uniform_maps
from mmcam.metrics.discrimination import peaks_on_others
from mmcam.metrics.faithfulness import (
    baseline_image,
    curve_area,
    importance_order,
    occlusion_correlation,
    occlusion_maps,
    perturbation_curves,
)
from mmcam.metrics.localization import box_iou, component_labels, largest_component_boxes, localization_errors
from mmcam.metrics.pointing import energy_inside, peak_hit_shares
from mmcam.metrics.ranks import average_ranks, spearman
from mmcam.metrics.sanity import cascading_randomization, parametrized_layers
from tests.model_state import assert_unchanged, snapshot


def box_map(size, box):
    x0, y0, x1, y1 = box
    canvas = torch.zeros(size, size)
    canvas[y0:y1, x0:x1] = 1
    return canvas


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([[0.0, 0.0, 1.0, 5.0]])).tolist() == [[0.5, 0.5, 2.0, 3.0]]


def test_spearman_known_values():
    x = torch.arange(10.0)[None]
    assert spearman(x, x**3).item() == pytest.approx(1.0)
    assert spearman(x, -x).item() == pytest.approx(-1.0)
    assert spearman(x, torch.ones_like(x)).item() == 0.0  # a constant row has no ranking
    with pytest.raises(ValueError, match="one shape"):
        spearman(x, x[:, :5])


def test_box_map_localizes_its_own_box():
    maps = torch.stack([box_map(32, (4, 6, 12, 20)), box_map(32, (20, 2, 30, 9))])
    boxes = torch.tensor([[[4, 6, 12, 20]], [[0, 0, 8, 8]]], dtype=torch.float32)
    assert largest_component_boxes(maps).tolist() == [[4, 6, 12, 20], [20, 2, 30, 9]]
    assert box_iou(largest_component_boxes(maps), boxes[:, 0]).tolist()[0] == pytest.approx(1.0)
    assert localization_errors(maps, boxes).tolist() == [False, True]


def test_largest_component_wins_and_threshold_is_relative():
    small, large = box_map(32, (1, 1, 4, 4)), box_map(32, (10, 10, 25, 25))
    assert largest_component_boxes((small + 0.2 * large)[None]).tolist() == [[10, 10, 25, 25]]
    assert largest_component_boxes((small + 0.1 * large)[None]).tolist() == [[1, 1, 4, 4]]  # 0.1 < 15% of max


def test_components_are_eight_connected():
    diagonal = torch.eye(6, dtype=torch.bool)[None]
    labels = component_labels(diagonal)
    assert labels[diagonal].unique().numel() == 1 and (labels[~diagonal] == -1).all()


def test_zero_boxes_pad_and_never_match():
    assert box_iou(torch.tensor([0.0, 0, 5, 5]), torch.zeros(4)).item() == 0.0
    boxes = torch.tensor([[[0, 0, 0, 0], [4, 6, 12, 20]]], dtype=torch.float32)
    assert not localization_errors(box_map(32, (4, 6, 12, 20))[None], boxes).item()


def test_pointing_with_ties_and_tolerance():
    mask = box_map(16, (4, 4, 8, 8)).bool()[None]
    peak = torch.zeros(1, 16, 16)
    peak[0, 10, 10] = 1
    assert peak_hit_shares(peak, mask).item() == 0
    assert peak_hit_shares(peak, mask, tolerance=3).item() == 1
    assert peak_hit_shares(uniform_maps(1, (16, 16)), mask).item() == pytest.approx(16 / 256)


def test_energy_inside():
    mask = box_map(16, (0, 0, 8, 16)).bool()[None]
    assert energy_inside(mask.float(), mask).item() == 1.0
    assert energy_inside(uniform_maps(1, (16, 16)), mask).item() == pytest.approx(0.5)
    assert energy_inside(torch.zeros(1, 16, 16), mask).item() == 0.0


def test_peaks_on_other_objects():
    own, other = box_map(16, (0, 0, 4, 4)).bool(), box_map(16, (8, 8, 12, 12)).bool()
    maps = torch.stack([own.float(), other.float()])
    assert peaks_on_others(maps, torch.stack([other, other])).tolist() == [0.0, 1.0]


def test_center_prior_peaks_at_the_center():
    prior = center_maps(2, (31, 31))
    assert prior.shape == (2, 31, 31) and prior[0, 15, 15] == prior.max() == 1
    assert prior[0, 0, 0] < 0.05 and torch.equal(prior[0], prior[1])


class RegionModel(nn.Module):
    """Score = sigmoid(mean of the image over a fixed square): only that square matters."""

    def __init__(self, box):
        super().__init__()
        self.register_buffer("region", box_map(32, box))

    def forward(self, images):
        inside = (images.mean(dim=1) * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.sigmoid(4 * inside)[:, None]


def test_deletion_and_insertion_prefer_the_true_region():
    model = RegionModel((8, 8, 16, 16))
    image = torch.ones(3, 32, 32)
    perfect = model.region
    maps = torch.stack([perfect, 1 - perfect])
    baseline = baseline_image(image, "zero")

    def scorer(copies):  # one column per map: both targets are the model's only output
        return model(copies).expand(-1, 2)

    deletion = perturbation_curves(scorer, image, maps, baseline, steps=8)
    insertion = perturbation_curves(scorer, image, maps, baseline, steps=8, insertion=True)
    assert deletion[:, 0].tolist() == pytest.approx([torch.sigmoid(torch.tensor(4.0)).item()] * 2)
    assert deletion[:, -1].tolist() == pytest.approx([0.5, 0.5])  # everything removed
    assert curve_area(deletion)[0] < curve_area(deletion)[1]
    assert curve_area(insertion)[0] > curve_area(insertion)[1]


def test_curve_area_is_the_trapezoid_mean():
    assert curve_area(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(0.25)


def test_ties_are_broken_at_random_not_in_raster_order():
    order = importance_order(torch.ones(1, 8, 8))[0]
    assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))


def test_occlusion_finds_the_region_and_correlates_with_the_right_map():
    model = RegionModel((8, 8, 16, 16))
    image = torch.ones(3, 32, 32)
    occlusion = occlusion_maps(model, image, torch.zeros_like(image), patch=8, stride=4)
    assert occlusion.shape == (1, 7, 7)
    assert occlusion[0, 2, 2] == occlusion.max() and occlusion[0, 6, 6] == 0
    correlations = occlusion_correlation(
        torch.stack([model.region, 1 - model.region]), occlusion.expand(2, 7, 7), 8, 4
    )
    assert correlations[0] > 0.9 and correlations[1] < -0.9
    with pytest.raises(ValueError, match="larger than the input"):
        occlusion_maps(model, image, image, patch=40)


def test_baseline_images():
    image = torch.rand(3, 32, 32)
    assert baseline_image(image, "blur").std() < image.std()
    with pytest.raises(ValueError, match="blur, zero"):
        baseline_image(image, "noise")


def test_randomization_decorrelates_and_leaves_the_model_unchanged(cam_net, images):
    before = snapshot(cam_net)

    def explain(model):
        return torch.relu(model.features(images)).sum(dim=1) * model.fc.weight[0].sum()

    steps = cascading_randomization(cam_net, explain)
    assert_unchanged(cam_net, before)
    assert [name for name, _ in steps] == parametrized_layers(cam_net) == ["fc", "features"]
    assert all(rho.shape == (2,) for _, rho in steps)
    assert (steps[-1][1] < 0.9).all()  # the features' map changed once the conv is random
    again = cascading_randomization(cam_net, explain)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(steps, again))  # seeded: same on every shard


def test_sparseness_and_complexity_by_their_formulas_and_against_quantus():
    import numpy as np

    from mmcam.metrics.complexity import complexity, sparseness

    n = 6 * 8
    one_hot, uniform = torch.zeros(6, 8), torch.full((6, 8), 0.3)
    one_hot[2, 5] = 1.0
    maps = torch.stack([one_hot, uniform, torch.rand(6, 8, generator=torch.Generator().manual_seed(0))])
    gini, entropy = sparseness(maps), complexity(maps)
    torch.testing.assert_close(gini[:2], torch.tensor([(n - 1) / n, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy[:2], torch.tensor([0.0, float(np.log(n))]), atol=1e-6, rtol=0)
    quantus = pytest.importorskip("quantus", reason="the comparison needs the dev extra (quantus)")
    x_batch = np.zeros((3, 1, 6, 8), dtype=np.float32)
    theirs_gini = quantus.Sparseness(disable_warnings=True).evaluate_batch(
        x_batch=x_batch, a_batch=maps.numpy()[:, None].copy()
    )
    theirs_entropy = quantus.Complexity(disable_warnings=True).evaluate_batch(
        x_batch=x_batch, a_batch=maps.numpy()[:, None].copy()
    )
    np.testing.assert_allclose(gini.numpy(), theirs_gini, atol=1e-5)
    np.testing.assert_allclose(entropy.numpy(), theirs_entropy, atol=1e-5)


@pytest.fixture(scope="module")
def five_classes():
    """A seeded resnet18 with 5 classes, a 48 px image, two maps of classes 1 and 3, and a scorer that
    gives their probabilities: what the peers' metrics are compared on."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    image = torch.randn(3, 48, 48, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 48, 48, generator=torch.Generator().manual_seed(2))
    classes = [1, 3]

    def scorer(images):
        with torch.no_grad():
            return model(images).softmax(dim=1)[:, classes]

    return model, image, maps, classes, scorer


def test_confidence_drop_and_increase_against_pytorch_grad_cam(five_classes):
    """Average drop is pytorch-grad-cam's DropInConfidence divided by the clean score (the paper's
    relative drop); increase is its IncreaseInConfidence."""
    import numpy as np

    from mmcam.metrics.faithfulness import confidence_changes

    metrics = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image", reason="needs the dev extra")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, image, maps, classes, scorer = five_classes
    drop, increase = confidence_changes(scorer, image, maps)
    clean = scorer(image[None])[0]
    images, targets = image[None].repeat(2, 1, 1, 1), [ClassifierOutputSoftmaxTarget(c) for c in classes]
    theirs_drop = metrics.DropInConfidence()(images, maps.numpy(), targets, model)
    theirs_increase = metrics.IncreaseInConfidence()(images, maps.numpy(), targets, model)
    np.testing.assert_allclose(drop.numpy(), theirs_drop / clean.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(increase.numpy(), theirs_increase)


def test_max_sensitivity_against_captum_with_the_same_perturbations(five_classes):
    """mmcam explains the n perturbed copies in one call; captum's sensitivity_max, handed the same
    perturbations, calls the explanation once per batch too: the same maximum ratio."""
    import mmcam
    from mmcam.metrics.faithfulness import max_sensitivity

    captum_metrics = pytest.importorskip("captum.metrics", reason="needs the dev extra (captum)")
    model, image, _, _, _ = five_classes
    explainer = mmcam.Explainer(model, layer="layer3")

    def explain(images):
        return explainer(images, 2).maps  # (n, 1, H, W)

    maps = explain(image[None])[0]
    ours = max_sensitivity(explain, image, maps, radius=0.05, samples=6, seed=3)
    generator = torch.Generator().manual_seed(3)
    noise = (torch.rand((6, *image.shape), generator=generator) * 2 - 1) * 0.05
    theirs = captum_metrics.sensitivity_max(
        lambda x: (explain(x[0] if isinstance(x, tuple) else x)[:, 0],),
        image[None],
        perturb_func=lambda x, radius: (x[0] if isinstance(x, tuple) else x) + noise,
        n_perturb_samples=6,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert ours.item() > 0


def test_infidelity_against_captum_with_the_same_noise(five_classes):
    """captum's infidelity (normalize=True), handed the same perturbations and the map repeated over the
    input's channels as the attribution."""
    from mmcam.metrics.faithfulness import infidelity

    captum_metrics = pytest.importorskip("captum.metrics", reason="needs the dev extra (captum)")
    model, image, maps, classes, scorer = five_classes
    ours = infidelity(scorer, image, maps, sigma=0.2, samples=8, seed=5)
    noise = torch.randn((8, *image.shape), generator=torch.Generator().manual_seed(5)) * 0.2

    def perturb(inputs):
        return noise, inputs - noise

    for k, cls in enumerate(classes):
        theirs = captum_metrics.infidelity(
            lambda x, c=cls: model(x).softmax(dim=1)[:, c],
            perturb,
            image[None],
            maps[k][None, None].expand(1, *image.shape),
            n_perturb_samples=8,
            normalize=True,
        )
        torch.testing.assert_close(ours[k : k + 1], theirs.float(), rtol=1e-3, atol=1e-8)


def test_road_against_pytorch_grad_cam_without_noise(five_classes):
    """ROAD's most- and least-relevant-first averages and their combination equal pytorch-grad-cam's (its noisy linear imputer with the noise set to 0, so that
    both fill the same pixels with the same values); each filled pixel is its neighbours' weighted mean."""
    import numpy as np

    from mmcam.metrics.road import NEIGHBOURS, linear_imputation, road

    perturbation = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence", reason="dev extra")
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, image, maps, classes, scorer = five_classes
    percentiles = (20, 70)
    ours = road(scorer, image, maps, percentiles, noise=0.0)
    images, targets = image[None].repeat(2, 1, 1, 1), [ClassifierOutputSoftmaxTarget(c) for c in classes]
    removals = (perturbation.RemoveMostRelevantFirst, perturbation.RemoveLeastRelevantFirst)
    changes = {
        (removal, p): perturbation.PerturbationConfidenceMetric(removal(p, NoisyLinearImputer(noise=0)))(
            images, maps.numpy(), targets, model
        )
        for removal in removals
        for p in percentiles
    }
    most_first, least_first = (
        np.mean([changes[(removal, p)] for p in percentiles], axis=0) for removal in removals
    )
    np.testing.assert_allclose(ours.most_first.numpy(), most_first, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.least_first.numpy(), least_first, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.combined.numpy(), (least_first - most_first) / 2, rtol=1e-4, atol=1e-6)
    keep = torch.ones(48, 48, dtype=torch.bool)
    keep[10:14, 20:25] = False
    filled = linear_imputation(image, keep, noise=0.0)
    torch.testing.assert_close(filled[:, keep], image[:, keep])
    weighted = sum(weight * filled[:, 12 + dr, 22 + dc] for (dr, dc), weight in NEIGHBOURS.items())
    torch.testing.assert_close(filled[:, 12, 22], weighted, rtol=1e-4, atol=1e-5)  # the weights sum to 1


def test_flat_ssim_equals_quantus():
    import numpy as np

    from mmcam.metrics.similarity import flat_ssim

    quantus = pytest.importorskip("quantus", reason="the comparison needs the dev extra (quantus)")
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 12, 10, generator=generator), torch.rand(3, 12, 10, generator=generator)
    b[0] = a[0] * 0.5 + 0.1  # a related pair
    theirs = quantus.similarity_func.ssim(a.reshape(3, -1).numpy(), b.reshape(3, -1).numpy(), batched=True)
    np.testing.assert_allclose(flat_ssim(a, b).numpy(), theirs, rtol=1e-5, atol=1e-6)
    assert flat_ssim(a[:1], a[:1]).item() == pytest.approx(1.0)


def test_random_logit_equals_quantus(five_classes):
    """Quantus's RandomLogit (SSIM of the flattened maps) on the same model, maps and explanation function:
    the same other classes drawn, the same scores."""
    import numpy as np

    import mmcam
    from mmcam.metrics.similarity import flat_ssim, random_other_classes

    quantus = pytest.importorskip("quantus", reason="the comparison needs the dev extra (quantus)")
    model, image, _, _, _ = five_classes
    images = torch.stack([image, image.flip(-1), image * 0.5])
    labels = [1, 3, 0]
    explainer = mmcam.Explainer(model, layer="layer3")

    def explain(inputs, targets):
        return explainer(torch.as_tensor(np.asarray(inputs)), [int(t) for t in targets]).maps[:, 0]

    maps = explain(images, labels)
    others = random_other_classes(labels, 5, seed=7)
    ours = flat_ssim(maps, explain(images, others))
    metric = quantus.RandomLogit(num_classes=5, seed=7, abs=False, normalise=False, disable_warnings=True)
    theirs = metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=np.array(labels),
        a_batch=maps[:, None].numpy(),
        explain_func=lambda model, inputs, targets, **kwargs: explain(inputs, targets)[:, None].numpy(),
        device="cpu",
    )
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5)


def test_histogram_entropy_and_complexity_rise_by_their_formulas():
    from mmcam.metrics.sanity import complexity_rise, histogram_entropy

    two_values = torch.zeros(4, 4)
    two_values[:2] = 1.0  # half the pixels in the first bin, half in the last
    spread = torch.arange(16.0).reshape(4, 4)  # 16 values in 16 bins
    entropy = histogram_entropy(torch.stack([two_values, spread, torch.ones(4, 4)]), bins=16)
    assert entropy.tolist() == pytest.approx([math.log(2), math.log(16), 0.0], abs=1e-6)
    rise = complexity_rise(
        torch.stack([two_values, torch.ones(4, 4)]), torch.stack([spread, spread]), bins=16
    )
    assert rise[0].item() == pytest.approx((math.log(16) - math.log(2)) / math.log(2), rel=1e-5)
    assert math.isnan(rise[1].item())  # a constant trained map has no entropy to rise from


@pytest.fixture
def quantus_randomizing_like(monkeypatch):
    """Quantus's model wrapper made to randomize as mmcam does."""
    quantus = pytest.importorskip("quantus", reason="the comparison needs the dev extra (quantus)")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    def use(steps):
        """``steps``: a fully randomized copy, or mmcam's cascading steps [(layer, copy at that step)]."""
        steps = steps if isinstance(steps, list) else [("all", steps)]
        monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", lambda self, order, seed: iter(steps))
        monkeypatch.setattr(PyTorchModel, "random_layer_generator_length", property(lambda self: len(steps)))
        return quantus

    return use


def layercam_maps(network, inputs, targets):
    """(N, H, W) LayerCAM maps at layer3 of one target per input, from numpy or torch inputs."""
    import numpy as np

    import mmcam

    explainer = mmcam.Explainer(network, layer="layer3", method="layercam")
    return explainer(torch.as_tensor(np.asarray(inputs)), [int(t) for t in targets]).maps[:, 0]


def quantus_randomization_scores(metric, model, images, labels):
    """A Quantus randomization metric's scores, explaining with ``layercam_maps``."""
    import numpy as np

    return metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=np.array(labels),
        a_batch=None,
        explain_func=lambda model, inputs, targets, **kwargs: layercam_maps(model, inputs, targets)[
            :, None
        ].numpy(),
        device="cpu",
    )


def test_efficient_mprt_equals_quantus(five_classes, quantus_randomizing_like):
    """Quantus's EfficientMPRT (relative rise of the discrete entropy, 100 bins) on the same maps of the
    trained and of the same fully randomized model."""
    import numpy as np

    from mmcam.metrics.sanity import complexity_rise, fully_randomized

    model, image, _, _, _ = five_classes
    images, labels = torch.stack([image, image.flip(-1)]), [1, 3]
    randomized = fully_randomized(model, seed=5)
    quantus = quantus_randomizing_like(randomized)

    ours = complexity_rise(layercam_maps(model, images, labels), layercam_maps(randomized, images, labels))
    theirs = quantus_randomization_scores(quantus.EfficientMPRT(disable_warnings=True), model, images, labels)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-6)


def test_smooth_mprt_equals_quantus_with_the_same_noise(five_classes, quantus_randomizing_like, monkeypatch):
    """Quantus's SmoothMPRT (last layer's Spearman of maps averaged over noisy copies, the last copy clean)
    handed mmcam's noise and fully randomized model; mmcam explains each model's copies in one call."""
    import numpy as np

    import mmcam
    from mmcam.metrics.sanity import fully_randomized, noisy_copies, smoothed_correlation

    model, image, _, _, _ = five_classes
    images, labels, samples = torch.stack([image, image.flip(-1) * 2]), [1, 3], 4
    randomized = fully_randomized(model, seed=5)
    quantus = quantus_randomizing_like(randomized)
    copies = [noisy_copies(x, samples, magnitude=0.1, seed=9) for x in images]

    def explain(network, inputs, targets):
        explainer = mmcam.Explainer(network, layer="layer3", method="layercam")
        return explainer(torch.as_tensor(np.asarray(inputs)), targets).maps

    ours = [
        smoothed_correlation(explain(model, copy, c), explain(randomized, copy, c)).item()
        for copy, c in zip(copies, labels)
    ]
    # Quantus draws copy n of the batch as x + randn * 0.1 (max - min): hand it mmcam's draws, in order.
    spans = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3)))[:, None, None, None]
    noise = [
        ((torch.stack([c[n] for c in copies]) - images) / (0.1 * spans)).numpy() for n in range(samples - 1)
    ]
    draws = iter(range(10**6))
    monkeypatch.setattr(np.random, "randn", lambda *shape: noise[next(draws) % (samples - 1)])
    # SmoothMPRT explains the noisy copies with quantus.explain, whatever explain_func says: route it to mmcam.
    monkeypatch.setattr(
        quantus,
        "explain",
        lambda model, inputs, targets, **kwargs: explain(model, inputs, [int(t) for t in targets])[
            :, :1
        ].numpy(),
    )
    theirs = quantus.SmoothMPRT(nr_samples=samples, return_last_correlation=True, disable_warnings=True)(
        model=model,
        x_batch=images.numpy(),
        y_batch=np.array(labels),
        a_batch=None,
        explain_func=quantus.explain,
        device="cpu",
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_pointing_and_energy_equal_quantus_on_maps_with_one_peak():
    """Quantus's PointingGame (is the map's maximum inside the mask?) and AttributionLocalisation (the share
    of positive mass inside) on the same maps and masks; Quantus takes the first maximum, mmcam shares
    ties, so the maps here have one maximum each."""
    import numpy as np

    quantus = pytest.importorskip("quantus", reason="the comparison needs the dev extra (quantus)")
    maps = torch.rand(6, 1, 20, 20, generator=torch.Generator().manual_seed(3))
    masks = torch.zeros(6, 1, 20, 20, dtype=torch.bool)
    for k in range(6):
        masks[k, 0, 2 * k : 2 * k + 9, 4:15] = True
    x, y = np.zeros((6, 1, 20, 20), dtype=np.float32), np.zeros(6, dtype=int)
    options = {"disable_warnings": True, "abs": False, "normalise": False}
    hits = quantus.PointingGame(**options).evaluate_batch(
        x_batch=x, y_batch=y, a_batch=maps.numpy(), s_batch=masks.numpy()
    )
    shares = quantus.AttributionLocalisation(**options).evaluate_batch(
        x_batch=x, y_batch=y, a_batch=maps.numpy(), s_batch=masks.numpy()
    )
    np.testing.assert_array_equal(
        peak_hit_shares(maps[:, 0], masks[:, 0]).numpy(), np.asarray(hits, dtype=float)
    )
    np.testing.assert_allclose(energy_inside(maps[:, 0], masks[:, 0]).numpy(), shares, rtol=1e-5)
    assert 0 < sum(hits) < 6  # some peaks inside, some outside: both outcomes compared


def test_cascading_randomization_equals_quantus_mprt_on_the_same_steps(
    five_classes, quantus_randomizing_like
):
    """Quantus's MPRT (Spearman of the maps at every cascading step) handed mmcam's randomization steps, each
    a copy (Quantus randomizes one copy in place, one module at a time with one seed)."""
    import copy

    import numpy as np

    from mmcam.metrics.sanity import randomization_steps

    model, image, _, _, _ = five_classes
    images, labels = torch.stack([image, image.flip(-1)]), [1, 3]

    def explain(network):
        return layercam_maps(network, images, labels)

    steps = [(name, copy.deepcopy(step)) for name, step in randomization_steps(model, seed=5)][:4]
    quantus = quantus_randomizing_like(steps)
    theirs = quantus_randomization_scores(quantus.MPRT(disable_warnings=True), model, images, labels)
    ours = dict(cascading_randomization(model, explain, seed=5))
    for name, _ in steps:
        np.testing.assert_allclose(ours[name].numpy(), theirs[name], rtol=1e-4, atol=1e-5)


def test_the_metric_registry_refuses_a_duplicate_a_direction_and_a_need_no_case_has():
    from mmcam.metrics.contract import Metric, by_name
    from mmcam.metrics.registry import METRICS

    class Named(Metric):
        name, label, better = "x", "x", "higher"

    class Sideways(Metric):
        name, label, better = "y", "y", "sideways"

    class Needy(Metric):
        name, label, better, needs = "z", "z", "lower", frozenset({"truth", "weather"})

    assert list(by_name(Named())) == ["x"]
    with pytest.raises(ValueError, match="two metrics are named 'x'"):
        by_name(Named(), Named())
    with pytest.raises(ValueError, match="lower' or 'higher"):
        by_name(Sideways())
    with pytest.raises(ValueError, match="weather"):
        by_name(Needy())
    assert all(name == metric.name for name, metric in METRICS.items())


def _case(maps, truth, score=None, image=None):
    """A case of K targets with ``maps`` and ``truth``; the model's targets' probabilities are
    ``score(images) -> (M, K)``."""
    from mmcam.metrics.contract import Case, Settings

    image = torch.zeros(3, *maps.shape[-2:]) if image is None else image
    return Case(
        method="gradcam",
        inputs={"pixel_values": image[None]},
        image_key="pixel_values",
        targets=[None] * len(maps),
        maps=maps,
        explanation=None,
        truth=truth,
        settings=Settings(steps=8),
        model=nn.Identity(),
        forward=lambda model, inputs: inputs["pixel_values"],
        probabilities=score or (lambda images: torch.zeros(len(images), len(maps))),
        explainer=lambda model: None,
        randomized=lambda seed: None,
        concept_table=lambda layer: None,
    )


def _truth(masks, about, described=None, removed=None):
    from mmcam.metrics.contract import Truth

    objects = torch.stack([masks[k] for k in range(len(masks))])
    empty = torch.zeros_like(masks)
    described = [bool(a) for a in about] if described is None else described
    return Truth(masks, torch.zeros(len(masks), 1, 4), empty, objects, about, described, removed)


def _peak_at(size, y, x):
    maps = torch.zeros(1, *size)
    maps[0, y, x] = 1.0
    return maps


def test_tolerant_pointing_hits_within_15_px_at_224_euclidean_and_scales_with_the_short_side():
    from mmcam.metrics.pointing import PeakPointing, TolerantPointing, tolerance_px

    assert tolerance_px((224, 300)) == 15 and tolerance_px((112, 224)) == 7.5
    mask = torch.zeros(1, 224, 224, dtype=torch.bool)
    mask[0, 100:120, 100:120] = True
    truth = _truth(mask, [[0]])
    for (y, x), strict, tolerant in [
        ((110, 110), 1.0, 1.0),  # inside
        ((110, 133), 0.0, 1.0),  # 14 px right of the last mask column
        ((110, 136), 0.0, 0.0),  # 17 px
        ((131, 131), 0.0, 0.0),  # 12 px down and right: 17 px away, a square window of 15 would hit
    ]:
        case = _case(_peak_at((224, 224), y, x), truth)
        assert float(PeakPointing()(case)) == strict and float(TolerantPointing()(case)) == tolerant, (y, x)
    small = torch.zeros(1, 112, 224, dtype=torch.bool)
    small[0, 50:60, 100:120] = True
    case = _case(_peak_at((112, 224), 55, 130), _truth(small, [[0]]))  # 11 px: beyond 7.5
    assert float(TolerantPointing()(case)) == 0.0


def test_shared_attributes_hit_on_any_object_and_hallucinated_targets_are_counted_apart():
    from mmcam.metrics.pointing import Hallucinated, PeakPointing, UnambiguousPointing

    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 20:28, 20:28] = True
    two_red = masks[0] | masks[1]
    maps = torch.stack([_peak_at((32, 32), 24, 24)[0]] * 3)
    truth = _truth(torch.stack([two_red, masks[0], torch.zeros(32, 32, dtype=torch.bool)]), [[0, 1], [0], []])
    case = _case(maps, truth)
    assert PeakPointing()(case).tolist()[:2] == [1.0, 0.0] and math.isnan(PeakPointing()(case)[2])
    unambiguous = UnambiguousPointing()(case)
    assert math.isnan(unambiguous[0]) and unambiguous[1] == 0.0 and math.isnan(unambiguous[2])
    assert Hallucinated()(case).tolist() == [0.0, 0.0, 1.0]


def _planted_scene():
    """A 64 x 64 gray image with two objects, A (rows 8-23, columns 8-23) and B (rows 40-55, columns
    40-55), and a model of two targets: target 0 reads only B's cell, target 1 only A's."""
    image = torch.full((3, 64, 64), 0.5)
    objects = torch.zeros(2, 64, 64, dtype=torch.bool)
    objects[0, 8:24, 8:24] = True
    objects[1, 40:56, 40:56] = True
    image[:, objects[0]] = 1.0
    image[:, objects[1]] = 0.9

    def score(images):
        return torch.stack(
            [images[:, 0, 40:56, 40:56].mean(dim=(1, 2)), images[:, 0, 8:24, 8:24].mean(dim=(1, 2))], dim=1
        )

    return image, objects, score


def test_grid_deletion_on_planted_evidence_and_random_order_in_between():
    from mmcam.metrics.faithfulness import GridDeletion, GridInsertion

    image, objects, score = _planted_scene()
    truth = _truth(objects, [[1], [0]])
    right = torch.stack([objects[1], objects[0]]).float()  # each target's map on the cell it reads
    wrong = 1 - right  # the read cell last
    uniform = torch.ones(2, 64, 64)
    deletion = {
        name: GridDeletion()(_case(m, truth, score, image))
        for name, m in [("right", right), ("wrong", wrong), ("uniform", uniform)]
    }
    insertion = {
        name: GridInsertion()(_case(m, truth, score, image))
        for name, m in [("right", right), ("wrong", wrong)]
    }
    # the read cell filled with the background (gray 0.5) at the first step, the score falls from 0.9 or 1
    # to 0.5 at once (AUC about 0.55); at the last step (about 0.85-0.94)
    assert (deletion["right"] < 0.6).all() and (deletion["wrong"] > 0.8).all()
    assert (deletion["right"] < deletion["uniform"]).all() and (deletion["uniform"] < deletion["wrong"]).all()
    assert (insertion["right"] > insertion["wrong"]).all()


def test_reliance_agreement_finds_the_object_the_model_reads_from_one_forward_of_the_removals():
    from mmcam.metrics.reliance import RelianceMass, ReliancePeak, RelianceRank

    image, objects, score = _planted_scene()
    removed = torch.stack([torch.where(objects[o], 0.5, image) for o in range(2)])
    calls = []

    def counted(images):
        calls.append(len(images))
        return score(images)

    maps = torch.stack([objects[1], objects[1]]).float() * torch.linspace(0.5, 1, 64)  # both maps on B
    case = _case(maps, _truth(objects, [[1], [0]], removed=lambda: removed), counted, image)
    assert ReliancePeak()(case).tolist() == [1.0, 0.0]  # target 0 reads B, target 1 reads A
    assert RelianceMass()(case).tolist() == [1.0, 0.0]
    assert RelianceRank()(case).tolist() == pytest.approx([1.0, -1.0])
    assert sorted(calls) == [1, 2]  # the input and the two removals, each once for the three metrics
    alone = _case(
        maps[:, None, 0].expand(-1, 64, -1), _truth(objects[:1], [[0], [0]], removed=lambda: removed[:1])
    )
    assert math.isnan(ReliancePeak()(alone)[0])  # one object: nothing to choose between
