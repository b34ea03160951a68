"""`BatchDecoder`: the answers of concurrent turns of different sessions, decoded in one batch.

Each turn runs in its own worker thread (it holds its session's store lock, which is bound to
the thread). When a turn reaches its answer, it hands `(session, message, options)` to the
decoder's single batch thread and waits for its text on a queue of its own. The batch thread
decodes the waiting turns with `deltamem_agents.session.batch.SessionBatch` (one batch row per
session, each with its own δ-mem state and KV cache) and feeds every row's text back to its
turn. The turn then logs and commits as usual: batching changes who runs the forward passes,
not what a turn writes.

**Who joins a batch.** A turn announces itself when it starts (`expecting`). Before its answer
it still prepares on the model (routing probe, earlier messages), one turn at a time, so turns
reach the batcher one after another. The batch thread therefore waits while announced turns are
still preparing, up to ``max_wait_s``, and then decodes everyone that arrived (at most
``max_rows``). The wait costs little: meanwhile the model is busy with those preparations.

Turns with tools are decoded alone (`SessionBatch` does not parse tool calls).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from deltamem_agents.errors import DeltaMemError
from deltamem_agents.server.errors import TurnCancelled
from deltamem_agents.session.batch import BatchRequest, SessionBatch
from deltamem_agents.session.session import GenerationOptions, MemorySession
from deltamem_agents.store.records import ChatMessage

logger = logging.getLogger(__name__)

#: How often a waiting turn checks whether its client went away.
POLL_S = 0.1


class BatchDecodeError(DeltaMemError, RuntimeError):
    """A batched decode failed; every turn in that batch fails with it (nothing is committed)."""


class _End:
    """Sentinel: the row's answer is complete (``session.last_reply`` is set)."""


@dataclass
class Ticket:
    """A turn's announcement: the batcher counts it as coming until it asks for its answer."""

    pending: bool = True


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

    def __init__(self, *, max_wait_s: float = 5.0, max_rows: int = 16) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_wait_s, self.max_rows = max_wait_s, max_rows
        self.counters = BatchCounters()
        self._cond = threading.Condition()
        self._waiting: deque[_Row] = deque()
        self._expected = 0
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="deltamem-batch", daemon=True)
        self._thread.start()

    # -- the turn's side ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def expecting(self) -> Iterator[Ticket]:
        """Announce a turn that is about to prepare its answer; pass the ticket to `decode`."""
        ticket = Ticket()
        with self._cond:
            self._expected += 1
        try:
            yield ticket
        finally:
            self._withdraw(ticket)

    def _withdraw(self, ticket: Ticket | None) -> None:
        if ticket is None or not ticket.pending:
            return
        with self._cond:
            ticket.pending = False
            self._expected -= 1
            self._cond.notify_all()

    def decode(
        self,
        session: MemorySession,
        message: ChatMessage,
        *,
        tools: Any = None,
        tool_choice: str | None = None,
        cancelled: threading.Event | None = None,
        ticket: Ticket | None = None,
        **generation: Any,
    ) -> Iterator[str]:
        """A `TurnDecoder` (see `HybridMemory.stream_chat`): yields the answer's text and leaves
        the `Reply` in ``session.last_reply``. Call it from the turn's own thread."""
        if tools or tool_choice is not None:
            self._withdraw(ticket)
            with self._cond:
                self.counters.serial += 1
            yield from session.stream(message, tools=tools, tool_choice=tool_choice, **generation)
            return
        try:
            # Bad options fail this turn here, never the batch it would have joined.
            GenerationOptions.model_validate({**session.config.generation.model_dump(), **generation})
        except BaseException:
            self._withdraw(ticket)
            raise
        row = _Row(BatchRequest(session=session, message=message, options=dict(generation)), cancelled or threading.Event())
        with self._cond:
            if self._closed:
                raise BatchDecodeError("the server is shutting down; retry on another instance")
            if ticket is not None and ticket.pending:
                ticket.pending = False
                self._expected -= 1
            self._waiting.append(row)
            self._cond.notify_all()
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
        """Stop the batch thread once it has decoded the turns already waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    def _next_rows(self) -> list[_Row] | None:
        """Wait for a turn, then for the announced ones (bounded); None once closed and empty."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._waiting) < self.max_rows and self._expected > 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_rows, len(self._waiting))
            return [self._waiting.popleft() for _ in range(count)]

    def _serve(self) -> None:
        while (rows := self._next_rows()) is not None:
            live = []
            for row in rows:
                if row.cancelled.is_set():
                    row.out.put(TurnCancelled("the client went away before the answer started"))
                else:
                    live.append(row)
            self._decode(live)

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
        with self._cond:
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


__all__ = ["BatchCounters", "BatchDecodeError", "BatchDecoder", "Ticket"]
