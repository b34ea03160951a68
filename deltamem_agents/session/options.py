"""What a session is configured with and what a turn reports: the pydantic models that cross
the session's boundary (CLI, server, integrations), without the decoding machinery behind them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.session.tools import ToolCall

__all__ = ["GenerationOptions", "Reply", "SessionConfig", "TurnStats"]


class GenerationOptions(BaseModel):
    """How replies are decoded. ``temperature == 0`` is greedy."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: decode exactly ``max_new_tokens`` tokens, past end-of-turn tokens (stop strings still
    #: apply): equal work per turn, for benchmarks
    ignore_eos: bool = False
    #: text the answer is made to start with (fed, then decoding continues after it): forces a
    #: form a small model would not choose itself, e.g. ``"{"`` for JSON. Part of the answer.
    response_prefix: str = ""


class SessionConfig(BaseModel):
    """The context-window policy of a session and its default generation options."""

    model_config = ConfigDict(extra="forbid")

    context_window: int = Field(1024, ge=16, description="tokens of recent conversation kept in attention")
    rebuild_keep: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of the window kept when it overflows and is rebuilt"
    )
    prefill_chunk: int = Field(512, ge=1, description="tokens per forward when ingesting")
    ingest_mode: Literal["blocks", "sliding"] = Field(
        "blocks",
        description="how ingest meets a full window: 'blocks' drops it (the state holds it; the last block keeps "
        "at least the kept share, so nothing is re-prefilled); 'sliding' re-prefills its kept share, as replies do",
    )
    system_prompt: str | None = Field(None, description="a system message put first in a new session")
    generation: GenerationOptions = Field(default_factory=GenerationOptions)


class TurnStats(BaseModel):
    """What one call cost and did."""

    tokens_written: int = 0
    context_tokens: int = 0
    prefill_tokens: int = Field(0, description="new tokens fed: the messages of this call and its generation prompt")
    rebuild_tokens: int = Field(0, description="context tokens re-fed, writing off, to rebuild the window (a reopened session, a full window)")
    prefill_ms: float = 0.0
    decode_tokens: int = 0
    decode_ms: float = 0.0
    window_rebuilt: bool = False
    wrote: bool = True


class Reply(BaseModel):
    """A generated answer. With tools, ``text`` is the answer without its tool-call blocks
    (``raw_text`` keeps everything the model wrote) and ``tool_calls`` the parsed calls."""

    text: str
    finish_reason: Literal["stop", "length", "tool_calls"]
    stats: TurnStats
    raw_text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
