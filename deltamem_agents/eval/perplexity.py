"""Does the adapter hurt the backbone when its memory starts empty? Perplexity on generic text.

The text is read the way an application reads it: the state starts empty and every token is
written as it passes, so later tokens read a state written by the earlier ones. That is compared
with the bare backbone on the same tokens (an empty state that is never written reads zero,
which is exactly the bare backbone). The held-out text is the prose of Python's own reference
documentation (``pydoc_data.topics``, shipped with every CPython), which no adapter trains on
(the trainer's preservation term reads the standard library's module docstrings instead).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from deltamem_agents.data.generic_text import python_reference_passages


def generic_passages(count: int = 12, min_chars: int = 1500) -> list[str]:
    """Prose passages of the Python reference (no code, no tables): the check's held-out text."""
    return python_reference_passages(count, min_chars)


@torch.no_grad()
def _nll(model: Any, ids: torch.Tensor) -> tuple[float, int]:
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
    return float(loss), ids.shape[1] - 1


def perplexity_check(model: Any, tokenizer: Any, handle: Any, *, passages: int = 12, tokens: int = 512) -> dict[str, Any]:
    """Perplexity of the bare backbone and of the backbone with the adapter writing from empty."""
    device = next(model.parameters()).device
    bare_nll = mem_nll = 0.0
    count = 0
    for text in generic_passages(passages):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :tokens].to(device)
        handle.reset_state()
        with handle.writing(False):
            nll, n = _nll(model, ids)
        bare_nll += nll
        handle.reset_state()
        with handle.writing(True):
            nll, _ = _nll(model, ids)
        mem_nll += nll
        handle.reset_state()
        count += n
    bare, adapter = math.exp(bare_nll / count), math.exp(mem_nll / count)
    return {"source": "pydoc_data.topics (Python reference prose)", "passages": passages, "tokens": count,
            "bare": round(bare, 4), "adapter": round(adapter, 4), "ratio": round(adapter / bare, 5)}
