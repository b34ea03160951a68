"""The decode-aware attention gives SDPA's answers, with padding, in every dtype it handles."""

from __future__ import annotations

import pytest
import torch

from deltamem_agents.model.attention import DECODE_ATTENTION, use_decode_attention
from tests.tiny_models import tiny_model


def _sdpa_model(dtype: torch.dtype):
    model = tiny_model(dtype=dtype)
    model.set_attn_implementation("sdpa")
    return model


def _decode(model, ids: torch.Tensor, mask: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """Greedy steps after a prefill; the logits of every step, stacked."""
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        logits = [out.logits[:, -1]]
        for _ in range(steps):
            token = out.logits[:, -1:].argmax(-1)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
            logits.append(out.logits[:, -1])
    return torch.stack(logits, 1).float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_decode_attention_matches_sdpa_with_left_padding(dtype):
    reference, fast = _sdpa_model(dtype), _sdpa_model(dtype)
    assert use_decode_attention(fast) and fast.config._attn_implementation == DECODE_ATTENTION
    ids = torch.randint(3, 128, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # row 1 is left-padded: padding must stay out of its attention
    ids[1, :4] = 0
    expected, got = _decode(reference, ids, mask), _decode(fast, ids, mask)
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, expected, atol=tolerance * max(1.0, float(expected.abs().max())), rtol=0)


def test_only_sdpa_models_are_switched():
    eager = tiny_model()  # the tiny models attend eagerly
    assert not use_decode_attention(eager) and eager.config._attn_implementation == "eager"
