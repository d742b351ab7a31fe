"""Leave the user's model exactly as it came: flags, modes and hooks restored, also when a call raises
and when calls overlap (two threads on one model, or one thread on a model and another on a submodule)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

_registry = threading.Lock()
_model_locks: WeakKeyDictionary[nn.Module, threading.RLock] = WeakKeyDictionary()
# id(object) -> [holders, object, the flag it had before the first holder]; entries live only during calls.
_frozen: dict[int, list] = {}
_evaluated: dict[int, list] = {}
_cudnn_off: list = [0, True]  # [holders, torch.backends.cudnn.enabled before the first holder]


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serializes explanation calls on ``model`` (held weakly: models can be freed)."""
    with _registry:
        return _model_locks.setdefault(model, threading.RLock())


def _hold(table: dict[int, list], items: Iterable[Any], read: Callable[[Any], bool]) -> None:
    for item in items:
        entry = table.setdefault(id(item), [0, item, read(item)])
        entry[0] += 1


def _release(table: dict[int, list], items: Iterable[Any], write: Callable[[Any, bool], None]) -> None:
    for item in items:
        entry = table[id(item)]
        entry[0] -= 1
        if entry[0] == 0:
            del table[id(item)]
            write(item, entry[2])


def _set_training(module: nn.Module, flag: bool) -> None:
    module.training = flag  # this module only: its children may still be held by another call


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with every parameter frozen, and restore both on exit.

    Frozen parameters are what makes the backward stop at the captured layer: nothing below it
    is part of the autograd graph, and no weight gradient is ever computed. Eval mode makes
    samples independent (batch norm uses running statistics, dropout is off), which the
    per-sample vectorized backward relies on.

    Calls on one model are serialized by a per-model re-entrant lock held for the whole block.
    The freeze is counted per parameter and per module, so overlapping calls on models that
    share parameters (a model and one of its submodules, from two threads) restore each flag
    only when the last of them ends, to the value it had before the first began.
    """
    with model_lock(model):
        parameters = list(model.parameters())
        modules = list(model.modules())
        with _registry:
            _hold(_frozen, parameters, lambda p: p.requires_grad)
            _hold(_evaluated, modules, lambda m: m.training)
        try:
            with _registry:  # inside the try: a model.eval() that raises midway is undone too
                model.eval()
                for parameter in parameters:
                    parameter.requires_grad_(False)
            yield model
        finally:
            with _registry:
                _release(_frozen, parameters, lambda p, flag: p.requires_grad_(flag))
                _release(_evaluated, modules, _set_training)


def has_rnn(model: nn.Module) -> bool:
    """Whether ``model`` holds a recurrent module (RNN, LSTM, GRU)."""
    return any(isinstance(module, nn.RNNBase) for module in model.modules())


@contextmanager
def cudnn_disabled(active: bool = True) -> Iterator[None]:
    """Turn cuDNN off for the block when ``active`` (counted across threads, restored by the last to leave).

    cuDNN refuses the backward of an RNN in eval mode ("cudnn RNN backward can only be called in
    training mode"); the engine keeps models in eval mode, so their RNN modules run without cuDNN.
    The switch is process-wide (``torch.backends.cudnn.enabled``): other threads run without cuDNN while
    any such call is inside. Overlapping calls are counted; the last to leave puts back the value the
    first found.
    """
    if not active:
        yield
        return
    with _registry:
        if _cudnn_off[0] == 0:
            _cudnn_off[1] = torch.backends.cudnn.enabled
        _cudnn_off[0] += 1
        torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        with _registry:
            _cudnn_off[0] -= 1
            if _cudnn_off[0] == 0:
                torch.backends.cudnn.enabled = _cudnn_off[1]
