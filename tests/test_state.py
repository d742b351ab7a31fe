"""The user's model comes back exactly as it went in, after success and after failure."""

import gc

import pytest
import torch

import mmcam
from tests.model_state import assert_unchanged, snapshot


@pytest.fixture
def mixed_state_model(resnet18):
    """A model in train mode with one frozen block and one submodule in eval mode."""
    resnet18.train()
    resnet18.layer1.eval()
    for p in resnet18.layer2.parameters():
        p.requires_grad_(False)
    yield resnet18
    resnet18.eval()
    for p in resnet18.parameters():
        p.requires_grad_(True)


@pytest.mark.parametrize(
    "method", ["gradcam", "scorecam", "guided-gradcam", "smooth-gradcam++", "shapleycam", "fullgrad"]
)
def test_unchanged_after_success(mixed_state_model, method):
    before = snapshot(mixed_state_model)
    mmcam.explain(mixed_state_model, torch.randn(1, 3, 32, 32), [2], method=method)
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_a_target_raises(mixed_state_model):
    before = snapshot(mixed_state_model)

    def broken(output):
        raise RuntimeError("induced failure")

    with pytest.raises(RuntimeError, match="induced failure"):
        mmcam.explain(mixed_state_model, torch.randn(1, 3, 32, 32), broken, layer="layer4")
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_bad_input(mixed_state_model):
    before = snapshot(mixed_state_model)
    with pytest.raises(ValueError, match="could not run on inputs"):
        mmcam.explain(mixed_state_model, torch.randn(1, 4, 32, 32), 0, layer="layer4")
    assert_unchanged(mixed_state_model, before)


def test_unchanged_after_auto_layer_probe(mixed_state_model):
    before = snapshot(mixed_state_model)
    assert mmcam.explain(mixed_state_model, torch.randn(1, 3, 64, 64), 1).layer == "layer2"  # 8x8
    assert_unchanged(mixed_state_model, before)


def test_works_under_no_grad_and_on_frozen_models(resnet18, images):
    expected = mmcam.explain(resnet18, images, 1, layer="layer4").raw
    with torch.no_grad():
        assert torch.equal(mmcam.explain(resnet18, images, 1, layer="layer4").raw, expected)
    for p in resnet18.parameters():
        p.requires_grad_(False)
    try:
        assert torch.equal(mmcam.explain(resnet18, images, 1, layer="layer4").raw, expected)
    finally:
        for p in resnet18.parameters():
            p.requires_grad_(True)


def test_inference_mode_gives_a_clear_error(resnet18, images):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        mmcam.explain(resnet18, images, 1, layer="layer4")


def _live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_no_growth_of_live_tensors_over_200_calls(cam_net, images):
    explainer = mmcam.Explainer(cam_net, layer="features")
    explainer(images, [0, 1])
    before = _live_tensors()
    for _ in range(200):
        explainer(images, [0, 1])
    assert _live_tensors() <= before


# --- state shared beyond one model: other threads, other models, the process -------------------------


def test_two_threads_explaining_the_vilt_fixture_give_the_maps_of_one():
    """ViLT's row-major patch order shadows ``visual_embed`` on the instance: under the model's lock, two
    threads explaining the trained fixture at once neither fail nor see each other's order."""
    import threading
    from pathlib import Path

    from PIL import Image

    from mmcam.adapters.vqa import explain_answers
    from mmcam.loading import load_vqa
    from mmcam.zoo.world import make_scenes

    vqa = load_vqa(str(Path(__file__).parent / "fixtures" / "models" / "vilt-vqa-shapes"))
    scenes = make_scenes(2, 51_000, n_objects=2)
    images = [Image.fromarray(scene.image) for scene in scenes]
    question = "what color is the circle?"
    alone = [explain_answers(vqa, image, question, top=2).explanation.raw for image in images]
    start, results, errors = threading.Barrier(2), {}, []

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = [
                explain_answers(vqa, images[index], question, top=2).explanation.raw for _ in range(4)
            ]
        except (AttributeError, RuntimeError, ValueError) as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index in range(2):
        for raw in results[index]:
            torch.testing.assert_close(raw, alone[index], atol=1e-6, rtol=1e-5)
    assert "visual_embed" not in vars(vqa.model.vilt.embeddings)


class _Recurrent(torch.nn.Module):
    """conv -> GRU over the rows -> linear; ``during(cudnn_enabled)`` runs before its GRU."""

    def __init__(self, during):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.gru = torch.nn.GRU(4 * 8, 4, batch_first=True)
        self.fc = torch.nn.Linear(4, 2)
        self.gru.register_forward_pre_hook(lambda m, a: during(torch.backends.cudnn.enabled))

    def forward(self, x):
        return self.fc(self.gru(self.conv(x).permute(0, 2, 1, 3).flatten(2))[0][:, -1])


def test_the_cudnn_switch_is_counted_over_overlapping_calls():
    """cuDNN is a process-wide switch: when two calls on RNN models overlap, the first to end leaves it off
    for the other, and the last to end turns it back on."""
    import threading

    inside, other_ended, seen = threading.Event(), threading.Event(), []

    def first_during(enabled: bool) -> None:
        seen.append(enabled)
        if len(seen) == 1:
            inside.set()
            assert other_ended.wait(30)
            seen.append(torch.backends.cudnn.enabled)

    first, second = _Recurrent(first_during).eval(), _Recurrent(lambda enabled: None).eval()
    thread = threading.Thread(target=lambda: mmcam.explain(first, torch.randn(1, 3, 8, 8), 1, layer="conv"))
    thread.start()
    assert inside.wait(30)
    mmcam.explain(second, torch.randn(1, 3, 8, 8), 1, layer="conv")
    assert not torch.backends.cudnn.enabled  # the first call is still running
    other_ended.set()
    thread.join()
    assert seen[:2] == [False, False] and torch.backends.cudnn.enabled


def test_quiet_generation_filters_its_own_thread_and_leaves_the_logger_as_it_was():
    """The generation notice is dropped by a filter for the thread inside, not by the logger's level: another
    thread's records pass meanwhile, and the logger comes back with its level and without the filter."""
    import logging
    import threading

    from mmcam.adapters.hub import quiet_generation

    logger = logging.getLogger("transformers.generation.utils")
    level, filters = logger.level, list(logger.filters)
    seen: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with quiet_generation():
            logger.warning("this thread's notice")
            logger.error("this thread's error")
            other = threading.Thread(target=lambda: logger.warning("another thread's notice"))
            other.start()
            other.join()
            assert logger.level == logging.INFO
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["this thread's error", "another thread's notice", "after"]
    assert logger.filters == filters


def test_the_sample_mixing_check_is_remembered_per_forward_function(cam_net):
    """Whether samples mix after a layer depends on the forward function: a forward that subtracts the batch
    mean mixes them where the plain one does not, on the same model, layer and shapes."""
    import copy
    import warnings

    def plain(model, inputs):
        return model(inputs["pixel_values"])

    def centred(model, inputs):
        scores = model(inputs["pixel_values"])
        return scores - scores.mean(dim=0, keepdim=True)

    images = {"pixel_values": torch.randn(3, 3, 8, 8)}
    fresh = copy.deepcopy(cam_net)
    mmcam.Explainer(cam_net, layer="features", forward=plain)(images, 1)
    with pytest.warns(UserWarning, match="depend on other samples"):
        after_plain = mmcam.Explainer(cam_net, layer="features", forward=centred)(images, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = mmcam.Explainer(fresh, layer="features", forward=centred)(images, 1)
    torch.testing.assert_close(after_plain.raw, alone.raw)
