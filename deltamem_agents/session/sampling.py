"""Choosing the next token and finding stop strings: the same rules for one session and a batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import torch

from deltamem_agents.session.options import GenerationOptions

__all__ = ["ReplyDecoder", "Sampler", "find_stop", "longest_stop_prefix", "sample_token"]

#: picks the next token from logits ``[1, vocab]``, the options and a seeded generator
Sampler = Callable[[torch.Tensor, GenerationOptions, torch.Generator | None], int]


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


class ReplyDecoder:
    """One reply's decoding rule, token by token: sampling, end-of-turn tokens, stop strings,
    ``max_new_tokens`` and the text released while streaming. A session decoding alone and a
    batch row both run it (see `deltamem_agents.session.session.Turn`), so the two cannot drift.

    Per token: `choose` from the logits; if it returns a token, feed it to the model, then call
    `fed`. Both return the text they release (possibly empty) until `finished`.
    """

    def __init__(
        self, tokenizer: Any, gen: GenerationOptions, stop_ids: Collection[int], device: torch.device, *,
        sampler: Sampler | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.gen = gen
        self.sampler = sampler or sample_token
        self.stop_ids = frozenset() if gen.ignore_eos else frozenset(stop_ids)
        self.generator: torch.Generator | None = None
        if gen.temperature > 0:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(gen.seed if gen.seed is not None else int(time.time_ns() % 2**63))
        #: the reply's tokens so far, and its text as released (up to a stop string)
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: Literal["stop", "length"] | None = None
        self.started = time.perf_counter()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1e3

    def choose(self, logits: torch.Tensor) -> tuple[str, int | None]:
        """Sample the next token from ``logits`` ``[1, vocab]`` and apply the stop rules.

        Returns the text this releases (incomplete characters and what may still become a stop
        string are held back) and the token to feed; ``None``: the reply ended at an end-of-turn
        token or a stop string, and that token is not fed."""
        if self.finished:
            raise RuntimeError("the reply has ended; nothing more to choose")
        token = self.sampler(logits, self.gen, self.generator)
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return "", None
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        emitted = len(self.text)
        stop_at = find_stop(text, self.gen.stop)
        if stop_at is not None:
            self.finish_reason = "stop"
            self.text = text[:stop_at]
            return text[emitted:stop_at], None
        if text.endswith("\ufffd"):  # wait for whole characters
            return "", token
        release = len(text) - longest_stop_prefix(text, self.gen.stop)
        if release <= emitted:
            return "", token
        self.text = text[:release]
        return text[emitted:release], token

    def fed(self) -> str:
        """The chosen token went through the model. At ``max_new_tokens`` the reply ends here:
        returns what was held back (an incomplete stop string is just text then)."""
        if len(self.tokens) < self.gen.max_new_tokens:
            return ""
        self.finish_reason = "length"
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        released = text[len(self.text) :]
        if released:
            self.text = text
        return released
