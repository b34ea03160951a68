"""Does the adapter make free replies loop? The repeated-n-gram share of long replies.

Probes are answered in a few words, so their scores cannot show a model that falls into a loop
once it writes more (a checkpoint that scored well on probes looped in free chat). The check of
`deltamem eval --free-prompts K` asks K open prompts (`FREE_PROMPTS`) after a conversation's
history has been written into the state, once with the adapter's state and once with the bare
backbone on the same context, and compares how much of each reply repeats itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from statistics import mean
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: the goal: the adapter's replies repeat themselves at most this much more than the backbone's
RATIO_GOAL = 1.2


def repeated_ngram_share(tokens: Sequence[str | int], n: int = 4) -> float:
    """Share of the reply's n-grams that already occurred earlier in it (0 below n tokens).

    A reply that never repeats four tokens in a row scores 0; one stuck in a loop tends to 1."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[Hashable, ...]] = set()
    repeated = 0
    for gram in grams:
        if gram in seen:
            repeated += 1
        seen.add(gram)
    return repeated / len(grams)


class FreeReply(BaseModel):
    """One free prompt answered with or without the state, and how much it repeats itself."""

    model_config = ConfigDict(extra="forbid")

    conversation: str
    prompt: str
    memory: Literal["adapter", "bare"] = Field(description="adapter: the conversation's state; bare: an empty state")
    reply: str
    tokens: int = Field(description="tokenizer token ids of the reply (what the share is computed on)")
    repeated_share: float
    finish_reason: str


class FreeChatResult(BaseModel):
    """The free-chat check: mean repeated-n-gram share with the adapter's state and bare."""

    model_config = ConfigDict(extra="forbid")

    prompts: int
    free_tokens: int
    n: int = 4
    adapter_share: float = Field(description="mean repeated-n-gram share of the replies with the state")
    bare_share: float = Field(description="the same for the bare backbone on the same context")
    ratio: float | None = Field(description="adapter / bare; 1 when neither repeats, None when only the adapter does")
    adapter_tokens: float = Field(description="mean reply length in tokens, with the state")
    bare_tokens: float
    replies: list[FreeReply]

    @property
    def met(self) -> bool:
        """The goal: ratio <= RATIO_GOAL."""
        return self.ratio is not None and self.ratio <= RATIO_GOAL


def summarize_free(replies: Sequence[FreeReply], *, free_tokens: int, n: int = 4) -> FreeChatResult:
    """Means over the prompts, and the ratio the goal is stated on."""
    adapter = [r for r in replies if r.memory == "adapter"]
    bare = [r for r in replies if r.memory == "bare"]
    a = round(mean(r.repeated_share for r in adapter), 4) if adapter else 0.0
    b = round(mean(r.repeated_share for r in bare), 4) if bare else 0.0
    ratio = round(a / b, 3) if b > 0 else (1.0 if a == 0 else None)
    return FreeChatResult(
        prompts=len(adapter), free_tokens=free_tokens, n=n, adapter_share=a, bare_share=b, ratio=ratio,
        adapter_tokens=round(mean(r.tokens for r in adapter), 1) if adapter else 0.0,
        bare_tokens=round(mean(r.tokens for r in bare), 1) if bare else 0.0, replies=list(replies),
    )


def free_chat_markdown(result: FreeChatResult) -> list[str]:
    """The report's section: the two means, their ratio and the goal (every reply is in the JSON)."""
    ratio = "-" if result.ratio is None else f"{result.ratio:.2f}"
    verdict = "met" if result.met else "missed"
    lines = [
        "## Free chat: does the state make replies loop?", "",
        (f"{result.prompts} open prompts, each after a conversation's history (prompt i on conversation i mod N), "
        f"up to {result.free_tokens} new tokens, greedy, on the recent window: once with the conversation's state, "
        f"once with the bare backbone (an empty state). Repeated {result.n}-gram share: the share of a reply's "
        f"{result.n}-grams of token ids that already occurred earlier in it (0: no loop, near 100: a loop)."), "",
        f"| memory | repeated {result.n}-gram share | reply tokens |", "|---|---|---|",
        f"| adapter's state | {100 * result.adapter_share:.1f} | {result.adapter_tokens:.0f} |",
        f"| bare backbone | {100 * result.bare_share:.1f} | {result.bare_tokens:.0f} |", "",
        f"Ratio adapter / bare: {ratio} (goal <= {RATIO_GOAL}: {verdict}).",
    ]
    return lines
