"""Record the attention probabilities a transformer computes in one forward pass, with their graph.

Hugging Face models compute attention either in Python (``softmax(Q K^T / sqrt(d) + mask)`` then a matmul
with V: the "eager" implementation) or with ``torch.nn.functional.scaled_dot_product_attention`` ("sdpa"),
which never shows its probabilities. ``AttentionRecorder`` sees both without touching the model: a torch
function mode keeps every softmax over the last axis of a 4-D tensor (B, heads, queries, keys), and runs
each ``scaled_dot_product_attention`` call as its explicit formula so that its probabilities exist and are
kept too. The recorded tensors are the ones the model goes on to use, so gradients reach them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional
from torch.overrides import TorchFunctionMode

_SOFTMAX = (functional.softmax, torch.softmax, Tensor.softmax)


def explicit_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor]:
    """``scaled_dot_product_attention`` written out: (output, probabilities).

    P = softmax(Q K^T * scale + M), output = P V, with M the additive mask (a boolean mask keeps the
    True positions; ``is_causal`` keeps keys up to the query's position). Dropout is not applied: the
    engine runs models in eval mode, where ``dropout_p`` is 0.
    """
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, dim=-3), value.repeat_interleave(repeat, dim=-3)
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale
    lowest = torch.finfo(scores.dtype).min
    if is_causal:
        queries, keys = scores.shape[-2:]
        keep = torch.ones(queries, keys, dtype=torch.bool, device=scores.device).tril(keys - queries)
        scores = scores.masked_fill(~keep, lowest)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, lowest)
        else:
            scores = scores + attn_mask
    probabilities = torch.softmax(scores, dim=-1)
    return probabilities @ value, probabilities


class AttentionRecorder(TorchFunctionMode):
    """``with AttentionRecorder() as recorder: model(...)`` leaves ``recorder.probabilities``: every
    attention probability tensor (B, heads, queries, keys) of the forward, in the order computed."""

    def __init__(self) -> None:
        super().__init__()
        self.probabilities: list[Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is functional.scaled_dot_product_attention:
            output, probabilities = explicit_attention(*args, **kwargs)
            self.probabilities.append(probabilities)
            return output
        result = func(*args, **kwargs)
        if func in _SOFTMAX and isinstance(result, Tensor) and result.ndim == 4 and _last_axis(args, kwargs):
            self.probabilities.append(result)
        return result


def _last_axis(args: tuple, kwargs: dict) -> bool:
    """Whether a softmax call normalizes over the last axis of its 4-D input."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim in (-1, 3)
