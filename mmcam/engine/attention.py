"""Record the attention probabilities a transformer computes in one forward pass, with their graph.

Hugging Face models compute attention either in Python (``softmax(Q K^T / sqrt(d) + mask)`` then a matmul
with V: the "eager" implementation) or with ``torch.nn.functional.scaled_dot_product_attention`` ("sdpa"),
which never shows its probabilities; ``torch.nn.MultiheadAttention`` (torchvision's ViT, OpenCLIP) calls
``multi_head_attention_forward``, whose softmax runs out of sight. ``AttentionRecorder`` sees all three
without touching the model: a torch function mode keeps every softmax over the last axis of a 4-D tensor
(B, heads, queries, keys), and runs each ``scaled_dot_product_attention`` and ``multi_head_attention_forward``
call as its explicit formula so that its probabilities exist and are kept too. The recorded tensors are the
ones the model goes on to use, so gradients reach them.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional
from torch.overrides import TorchFunctionMode

_SOFTMAX = (functional.softmax, torch.softmax, Tensor.softmax)
_MULTI_HEAD = inspect.signature(functional.multi_head_attention_forward)


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


def explicit_multi_head_attention(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None, Tensor] | None:
    """``multi_head_attention_forward`` (``nn.MultiheadAttention``'s computation) written out: its output,
    the weights it returns, and the probabilities P (N, heads, L, S) its output is computed from.

    Q, K, V = the in-projections of the (L, N, E) query and (S, N, E) key and value, split into heads;
    P = softmax(Q K^T / sqrt(d) + M), M the attention mask and key padding mask (True, or -inf, excludes a
    key); output = out_proj(P V with the heads joined); the weights are P, or its mean over heads with
    ``average_attn_weights``. None for what it does not cover (bias_k and bias_v, add_zero_attn, static
    keys, unbatched inputs, active dropout, ``is_causal`` without its mask): those calls run as they are,
    unseen.
    """
    call = _MULTI_HEAD.bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    if (
        a["bias_k"] is not None
        or a["bias_v"] is not None
        or a["add_zero_attn"]
        or a["static_k"] is not None
        or a["static_v"] is not None
        or a["query"].ndim != 3
        or (a["training"] and a["dropout_p"] > 0)
        or (a["is_causal"] and a["attn_mask"] is None)
    ):
        return None
    if a["use_separate_proj_weight"]:
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].chunk(3)
    biases = (None, None, None) if a["in_proj_bias"] is None else a["in_proj_bias"].chunk(3)
    heads = a["num_heads"]
    q, k, v = (
        functional.linear(x, w, b).unflatten(-1, (heads, -1)).permute(1, 2, 0, 3)  # (N, heads, L, d)
        for x, w, b in zip((a["query"], a["key"], a["value"]), weights, biases)
    )
    mask = _additive_mask(a["attn_mask"], a["key_padding_mask"], heads, q.dtype)
    output, probabilities = explicit_attention(q, k, v, attn_mask=mask)
    output = functional.linear(
        output.permute(2, 0, 1, 3).flatten(2), a["out_proj_weight"], a["out_proj_bias"]
    )
    returned = None
    if a["need_weights"]:
        returned = probabilities.mean(dim=1) if a["average_attn_weights"] else probabilities
    return output, returned, probabilities


def _additive_mask(
    attn_mask: Tensor | None, key_padding_mask: Tensor | None, heads: int, dtype: torch.dtype
) -> Tensor | None:
    """``nn.MultiheadAttention``'s attention mask ((L, S) or (N * heads, L, S)) and key padding mask (N, S)
    as one additive mask that broadcasts to (N, heads, L, S)."""
    mask = None
    if attn_mask is not None:
        mask = _additive(attn_mask, dtype)
        if mask.ndim == 3:
            mask = mask.unflatten(0, (-1, heads))
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, dtype)[:, None, None, :]
        mask = padding if mask is None else mask + padding
    return mask


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask (True: excluded) as 0 and -inf; a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


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
        if func is functional.multi_head_attention_forward:
            explicit = explicit_multi_head_attention(*args, **kwargs)
            if explicit is not None:
                self.probabilities.append(explicit[2])
                return explicit[:2]
        result = func(*args, **kwargs)
        if func in _SOFTMAX and isinstance(result, Tensor) and result.ndim == 4 and _last_axis(args, kwargs):
            self.probabilities.append(result)
        return result


def _last_axis(args: tuple, kwargs: dict) -> bool:
    """Whether a softmax call normalizes over the last axis of its 4-D input."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim in (-1, 3)
