"""Choosing the next token and finding stop strings: the same rules for one session and a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltamem_agents.session.options import GenerationOptions

__all__ = ["find_stop", "longest_stop_prefix", "sample_token"]


def sample_token(logits: torch.Tensor, gen: GenerationOptions, generator: torch.Generator | None) -> int:
    """The next token: greedy at temperature 0, else nucleus sampling (``top_p``)."""
    if gen.temperature == 0:
        return int(logits.argmax(-1).item())
    probs = torch.softmax(logits / gen.temperature, dim=-1)
    if gen.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        sorted_probs[(cumulative - sorted_probs) > gen.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator).item())


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first stop string starts in ``text`` (``None``: no stop yet)."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def longest_stop_prefix(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might still become a stop string (held back while streaming)."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                best = max(best, size)
                break
    return best
