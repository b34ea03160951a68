"""A decode-aware attention for Hugging Face models on CPU: SDPA, except for one-token steps.

PyTorch's CPU ``scaled_dot_product_attention`` in bfloat16/float16 runs its flash kernel even
for a single query, which costs ~280 µs per layer at 512 cached tokens and ~1.1 ms at 2,048
(torch 2.13, 2 cores), against ~80 and ~130 µs for two plain matmuls and a softmax. In a
decoding step that is a third of the time per token. `DECODE_ATTENTION` is SDPA with that one
case replaced; it is registered under its own name in transformers' attention and mask
interfaces (masks are SDPA's), so nothing of the model's code is copied or patched.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: the name `use_decode_attention` registers and sets as the model's attention implementation
DECODE_ATTENTION = "deltamem_sdpa"

_HALF = (torch.bfloat16, torch.float16)


def decode_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention-function signature; ``query`` is ``[B, Hq, T, D]``, ``key`` and
    ``value`` ``[B, Hkv, L, D]``; returns ``[B, T, Hq, D]`` as SDPA's does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, steps, dim = query.shape
    plain = (
        steps == 1
        and query.dtype in _HALF
        and query.device.type == "cpu"
        and dropout == 0.0
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
        and heads % key.shape[1] == 0
    )
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # one query row per grouped head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(scale)  # [B, Hkv, G, L]
    if attention_mask is not None:
        mask = attention_mask[..., -1:, :]  # [B or 1, 1, 1, L]: this query's row
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = scores.softmax(dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, Hkv, G, D]
    return out.reshape(batch, 1, heads, dim), None


def _register() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # pragma: no cover - a transformers without the interfaces
        return False
    AttentionInterface.register(DECODE_ATTENTION, decode_attention_forward)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return True


def use_decode_attention(model: nn.Module) -> bool:
    """Switch a model that attends with ``"sdpa"`` to `DECODE_ATTENTION`; returns whether it
    did. Other implementations (eager, flash, flex) are left alone: they chose differently."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not _register():
        return False
    setter = getattr(model, "set_attn_implementation", None)
    try:
        if callable(setter):
            setter(DECODE_ATTENTION)
        else:  # pragma: no cover - transformers before set_attn_implementation
            config._attn_implementation = DECODE_ATTENTION
    except (ValueError, TypeError, KeyError) as err:  # pragma: no cover - a version that refuses custom names
        logger.debug("kept sdpa attention: %s", err)
        return False
    return config._attn_implementation == DECODE_ATTENTION
