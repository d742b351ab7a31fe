"""What 'the model comes back exactly as it went in' means, as a snapshot to compare."""

import torch


def snapshot(model):
    return {
        "values": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"])
    for key, value in before["values"].items():
        assert torch.equal(after["values"][key], value), key


def counted_forwards(model, call):
    """``call()``'s result and how many forward passes of ``model`` it ran; the model must come back
    unchanged."""
    before = snapshot(model)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        result = call()
    finally:
        handle.remove()
    assert_unchanged(model, before)
    return result, len(calls)
