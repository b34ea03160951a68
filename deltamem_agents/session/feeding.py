"""Feeding tokens into a session: the attention-window policy, and the fast path for long ingests.

Tokens go through the model ``prefill_chunk`` at a time on top of the session's KV cache, and
every token fed with writing on is written into the δ-mem state. What happens when the window
(``context_window`` tokens) is full depends on the call:

* **sliding** (replies, probes, ``ingest(write=False)``, and ingest with ``ingest_mode="sliding"``):
  the most recent ``rebuild_keep`` share of the window is kept and re-prefilled, writing off,
  before the next chunk. A reply always has its recent context, but a long input pays for every
  kept token a second time, about twice the forwards of the bare backbone.
* **blocks** (`MemorySession.ingest` with writing on, the default ``ingest_mode``): a full window
  is dropped, not re-prefilled, and feeding goes on in an empty one. The state carries the history
  across blocks; inside a block each chunk attends to the chunks before it, exactly as training's
  ``write_history`` lays a history out (a fresh KV cache, ``prefill_chunk`` tokens per forward,
  growing). The input's length is known, so the blocks are cut such that the last one holds at
  least the kept share (``rebuild_keep`` of the window) of new tokens: the window the next reply
  sees is then as long as a sliding rebuild leaves it, with no rebuild at all. A long ingest costs
  exactly its own forwards. A rest shorter than the kept share that does not fit the window is
  fed sliding, as before (one rebuild, only for short ingests on a nearly full window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from deltamem_agents.progress import ProgressLike, shows_progress, tracked
from deltamem_agents.session.chat import (
    ChatMessage,
    ChatTemplateError,
    Encoded,
    is_note,
    template_view,
)
from deltamem_agents.session.options import GenerationOptions, SessionConfig, TurnStats

#: a `MemorySession` (not imported: session.py imports this module)
MemorySession = Any

__all__ = [
    "PROGRESS_MIN_TOKENS", "IngestPlan", "apply_batched_prefill", "feed", "keep_tokens", "next_forward",
    "plan_batched_prefill", "shrink_window",
]

#: ``progress=True`` shows a bar for inputs of at least this many tokens (a reporter object
#: given as ``progress`` is always used)
PROGRESS_MIN_TOKENS = 2048


@dataclass(frozen=True)
class IngestPlan:
    """How an ingest feeds: in blocks (see the module docstring) or sliding, and its progress."""

    blocks: bool = True
    progress: ProgressLike = False


def keep_tokens(config: SessionConfig) -> int:
    """Tokens a rebuilt window keeps: the ``rebuild_keep`` share of ``context_window``."""
    return max(1, int(config.context_window * config.rebuild_keep))


def shrink_window(session: MemorySession, stats: TurnStats) -> None:
    """The sliding rebuild: keep the most recent part of the window, re-prefilled writing off."""
    kept = session._window[-keep_tokens(session.config) :]
    session._cache, session._window = None, []
    with session.handle.writing(False):
        session._forward_window(kept, None, stats)
    stats.window_rebuilt = True
    stats.rebuild_tokens += len(kept)


def _reporter_for(plan: IngestPlan | None, tokens: int) -> ProgressLike:
    if plan is None or not shows_progress(plan.progress):
        return False
    if plan.progress is True and tokens < PROGRESS_MIN_TOKENS:
        return False
    return plan.progress


def next_forward(held: int, rest: int, run_left: int, config: SessionConfig, *, blocks: bool) -> tuple[str | None, int]:
    """The window policy, one forward at a time: with ``held`` tokens in the window, ``rest``
    tokens left to feed, ``run_left`` of them in the current run, first ``"drop"`` the window
    (blocks), ``"shrink"`` it (sliding) or nothing, then feed how many tokens."""
    window, keep, chunk = config.context_window, keep_tokens(config), config.prefill_chunk
    if blocks and held + rest > window and rest >= keep:
        # Blocks. The rest's length is known, so the blocks are cut such that the last one holds
        # at least ``keep`` new tokens: the window the next reply sees needs no rebuild.
        action = None
        if held >= window or rest == keep:
            action, held = "drop", 0
        n = min(window - held, chunk, run_left)
        return action, min(n, rest - keep) if held + rest > window else n
    # sliding (also in blocks, a rest too short to fill a new block's kept share: as before)
    action = "shrink" if held >= window else None
    held = keep_tokens(config) if action else held
    return action, min(window - held, chunk, run_left)


def feed(
    session: MemorySession, encoded: Encoded, stats: TurnStats, *, write: bool, plan: IngestPlan | None = None
) -> torch.Tensor:
    """Feed ``encoded`` on top of the session's context (``plan``: an ingest's; None: sliding);
    returns the logits of the last token."""
    ids, segments = encoded.ids, encoded.segment_ids
    blocks = plan is not None and plan.blocks and write
    started = time.perf_counter()
    logits = None
    with tracked(_reporter_for(plan, len(ids)), "ingesting", total=len(ids)) as bar:
        for run_start, run_end, run_writes in encoded.runs():
            writes = write and run_writes
            position = run_start
            with session.handle.writing(writes):
                while position < run_end:
                    action, n = next_forward(
                        len(session._window), len(ids) - position, run_end - position, session.config, blocks=blocks
                    )
                    if action == "drop":
                        session._cache, session._window = None, []
                        stats.window_rebuilt = True
                    elif action == "shrink":
                        shrink_window(session, stats)
                    logits = session._forward_window(ids[position : position + n], segments[position : position + n], stats)
                    if writes:
                        stats.tokens_written += n
                    position += n
                    bar.advance(n)
    stats.prefill_tokens += len(ids)
    stats.prefill_ms += (time.perf_counter() - started) * 1e3
    assert logits is not None
    return logits


# -- a turn's prefill as one row of a batched forward (session/continuous.py) ------------------------
def plan_batched_prefill(
    session: MemorySession, new: list[ChatMessage], gen: GenerationOptions, *, write: bool
) -> tuple[Encoded, int] | None:
    """The tokens a turn's prefill would feed, when feeding them is one forward that a batch of
    other sessions' prefills may share: the context is in place (nothing to rebuild), they fit
    the window and one chunk, every one of them is written (no notes), no response prefix, TSW
    or MSW writes (SSW needs segment ids), and a context to attend to (a padding query with none
    would attend to nothing). None: prefill alone (`Turn.prefill`). Changes nothing."""
    config = session.config
    if (
        not write or gen.response_prefix or session._rendered is None or session.state is None or not session._window
        or session.handle.config.write_strategy == "ssw"
    ):
        return None
    pending = [*session.messages[session._written :], *new]
    if any(is_note(m) for m in pending):
        return None
    views = [template_view(m) for m in [*session.messages, *new]]
    try:
        encoded, next_segment = session.encoder.encode_delta(
            session._rendered, views, session._written, next_segment=session._next_segment, add_generation_prompt=True
        )
    except ChatTemplateError:
        return None
    if not encoded.ids or len(encoded.ids) > config.prefill_chunk or len(session._window) + len(encoded.ids) > config.context_window:
        return None
    return encoded, next_segment


def apply_batched_prefill(session: MemorySession, encoded: Encoded, next_segment: int, stats: TurnStats, elapsed_ms: float) -> None:
    """The bookkeeping `feed` does after its forwards, for tokens a batched forward fed: they
    join the window, the rendered text and the written messages, and count as written."""
    session._window.extend(encoded.ids)
    session._rendered += encoded.text
    session._written = len(session.messages)
    session._next_segment = next_segment
    stats.prefill_tokens += len(encoded.ids)
    stats.tokens_written += len(encoded.ids)
    stats.prefill_ms += elapsed_ms
