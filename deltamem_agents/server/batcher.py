"""`BatchDecoder`: the answers of concurrent turns of different sessions, decoded in one batch.

Each turn runs in its own worker thread (it holds its session's store lock, which is bound to
the thread). When a turn reaches its answer, it hands `(session, message, options)` to the
decoder's single batch thread and waits for its text on a queue of its own. The batch thread
collects the turns that are waiting (at most ``max_rows``; when idle it waits ``window_s`` for
company), decodes them with `deltamem_agents.session.batch.SessionBatch` (one batch row per
session, each with its own δ-mem state and KV cache), and feeds every row's text back to its
turn. The turn then logs and commits as usual: batching changes who runs the forward passes,
not what a turn writes.

Turns with tools are decoded alone (`SessionBatch` does not parse tool calls), as are turns
when batching is off (`TurnScheduler` then never creates this class).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from deltamem_agents.server.errors import TurnCancelled
from deltamem_agents.session.batch import BatchRequest, SessionBatch
from deltamem_agents.session.records import ChatMessage
from deltamem_agents.session.session import GenerationOptions, MemorySession

logger = logging.getLogger(__name__)

#: How often a waiting turn checks whether its client went away.
POLL_S = 0.1


class BatchDecodeError(RuntimeError):
    """A batched decode failed; every turn in that batch fails with it (nothing is committed)."""


class _End:
    """Sentinel: the row's answer is complete (``session.last_reply`` is set)."""


@dataclass
class _Row:
    request: BatchRequest
    cancelled: threading.Event
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)


@dataclass
class BatchCounters:
    batches: int = 0
    rows: int = 0
    max_rows: int = 0
    serial: int = 0


class BatchDecoder:
    """One batch thread that decodes the waiting turns of different sessions together."""

    def __init__(self, *, window_s: float = 0.005, max_rows: int = 16) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.window_s, self.max_rows = window_s, max_rows
        self.counters = BatchCounters()
        self._lock = threading.Lock()
        self._waiting: queue.SimpleQueue[_Row | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="deltamem-batch", daemon=True)
        self._closed = False
        self._thread.start()

    # -- the turn's side ------------------------------------------------------------------------------
    def decode(
        self,
        session: MemorySession,
        message: ChatMessage,
        *,
        tools: Any = None,
        tool_choice: str | None = None,
        cancelled: threading.Event | None = None,
        **generation: Any,
    ) -> Iterator[str]:
        """A `TurnDecoder` (see `HybridMemory.stream_chat`): yields the answer's text and leaves
        the `Reply` in ``session.last_reply``. Call it from the turn's own thread."""
        if tools or tool_choice is not None:
            with self._lock:
                self.counters.serial += 1
            yield from session.stream(message, tools=tools, tool_choice=tool_choice, **generation)
            return
        if self._closed:
            raise BatchDecodeError("the server is shutting down; retry on another instance")
        # Bad options fail this turn here, never the batch it would have joined.
        GenerationOptions.model_validate({**session.config.generation.model_dump(), **generation})
        row = _Row(BatchRequest(session=session, message=message, options=dict(generation)), cancelled or threading.Event())
        self._waiting.put(row)
        while True:
            try:
                item = row.out.get(timeout=POLL_S)
            except queue.Empty:
                if row.cancelled.is_set():
                    raise TurnCancelled("the client went away during the turn") from None
                if not self._thread.is_alive():
                    raise BatchDecodeError("the batch thread stopped; see the server log") from None
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- the batch thread ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the batch thread once the batch it runs (if any) ends."""
        self._closed = True
        self._waiting.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            rows, stop = [first], False
            deadline = time.monotonic() + self.window_s
            while len(rows) < self.max_rows:
                try:
                    nxt = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                rows.append(nxt)
            live = []
            for row in rows:
                if row.cancelled.is_set():
                    row.out.put(TurnCancelled("the client went away before the answer started"))
                else:
                    live.append(row)
            self._decode(live)
            if stop:
                return

    def _decode(self, rows: list[_Row]) -> None:
        if not rows:
            return
        try:
            batch = SessionBatch([row.request for row in rows])
        except ValueError as exc:  # a row the batch refuses (SessionError): that row alone fails
            if len(rows) == 1:
                rows[0].out.put(exc)
                return
            for row in rows:
                self._decode([row])
            return
        with self._lock:
            self.counters.batches += 1
            self.counters.rows += len(rows)
            self.counters.max_rows = max(self.counters.max_rows, len(rows))
        try:
            for piece in batch.stream():
                rows[piece.row].out.put(piece.text)
        except Exception as exc:  # noqa: BLE001 - handed to every turn of the batch, which re-raises it
            logger.error("batched decode of %d turns failed", len(rows), exc_info=exc)
            for row in rows:
                error = BatchDecodeError(f"the batched decode failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                row.out.put(error)
            return
        for row in rows:
            row.out.put(_End())


__all__ = ["BatchCounters", "BatchDecodeError", "BatchDecoder"]
