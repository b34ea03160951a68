"""`BatchDecoder`: the answers of concurrent turns of different sessions, decoded together by
continuous batching.

Each turn runs in its own worker thread (it holds its session's store lock, which is bound to
the thread). When a turn reaches its answer, it hands `(session, message, options, tools)` to
the decoder's single batch thread and waits for its text on a queue of its own. The batch
thread drives one `deltamem_agents.session.continuous.ContinuousBatch`:

```
worker threads (one per turn)            batch thread (one)
  prepare: routing probe, notes  ──┐       loop:
  decode(...) ── row ──> waiting ──┼──>      admit waiting rows: prefill each (joins at next step)
       ^                           │         drop rows whose client went away (abort)
       │  text pieces, then _End   │         one step: every row gets one token, one forward
       └───────────────────────────┴──<──    rows that ended: committed, _End sent; they leave
  log + save the turn (store lock)
```

A turn joins the running batch at the next token step and leaves it the moment it ends, so
no turn waits for a batch to drain. The model lock (a `FairRLock`, first come first served) is
taken once per step and per prefill, so the worker threads' preparations run between steps
instead of waiting for the whole batch. Batching changes who runs the forwards, not what a
turn writes: the turn still logs and commits atomically in its own thread.

**Starting from idle.** A turn announces itself when it starts (`expecting`). When nothing is
decoding, the batch thread waits for announced turns still preparing, up to ``max_wait_s``,
so a burst of turns starts as one batch; once a batch runs, new turns join it step by step.
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

import torch

from deltamem_agents.errors import DeltaMemError
from deltamem_agents.server.errors import TurnCancelled
from deltamem_agents.session.batch import BatchRequest
from deltamem_agents.session.continuous import ContinuousBatch
from deltamem_agents.session.session import GenerationOptions, MemorySession
from deltamem_agents.store.records import ChatMessage

logger = logging.getLogger(__name__)

#: How long a turn whose client went away waits for the batch thread to let its row go.
RELEASE_TIMEOUT_S = 120.0


class BatchDecodeError(DeltaMemError, RuntimeError):
    """A batched decode failed; every turn in that batch fails with it (nothing is committed)."""


class _End:
    """Sentinel: the row's answer is complete (``session.last_reply`` is set)."""


@dataclass
class Ticket:
    """A turn's announcement: the batcher counts it as coming until it asks for its answer."""

    pending: bool = True


@dataclass(eq=False)
class _Row:
    request: BatchRequest
    cancelled: threading.Event
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    #: set by the batch thread once it no longer touches the row's session
    released: threading.Event = field(default_factory=threading.Event)

    def finish(self, item: Any) -> None:
        self.out.put(item)
        self.released.set()


@dataclass
class BatchCounters:
    batches: int = 0  # batched forwards (decode steps)
    rows: int = 0  # rows summed over those steps
    max_rows: int = 0
    joins: int = 0
    prefill_tokens: int = 0


class BatchDecoder:
    """One batch thread that decodes the running turns of different sessions together."""

    def __init__(self, *, max_wait_s: float = 5.0, max_rows: int = 16) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_wait_s, self.max_rows = max_wait_s, max_rows
        self.counters = BatchCounters()
        self._cond = threading.Condition()
        self._waiting: deque[_Row] = deque()
        self._expected = 0
        self._closed = False
        self._batch: ContinuousBatch | None = None
        self._rows: dict[_Row, None] = {}  # rows in the batch, in join order
        self._seen = (0, 0, 0)  # the running batch's (steps, row_steps, prefill_tokens) already counted
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
        """A `TurnDecoder` (see `HybridMemory.stream_chat`): yields the answer's text (tool-call
        markup held back) and leaves the `Reply` in ``session.last_reply``. Call it from the
        turn's own thread; it returns only once the batch thread has let the session go."""
        try:
            # Bad options fail this turn here, never the batch it would have joined.
            GenerationOptions.model_validate({**session.config.generation.model_dump(), **generation})
        except BaseException:
            self._withdraw(ticket)
            raise
        request = BatchRequest(session=session, message=message, options=dict(generation), tools=tools, tool_choice=tool_choice)
        row = _Row(request, cancelled or threading.Event())
        with self._cond:
            if self._closed:
                raise BatchDecodeError("the server is shutting down; retry on another instance")
            if ticket is not None and ticket.pending:
                ticket.pending = False
                self._expected -= 1
            self._waiting.append(row)
            self._cond.notify_all()
        try:
            while True:
                # Blocks without polling: dozens of waiting turns waking up every few
                # milliseconds would take the GIL from the batch thread. A cancelled row is let
                # go by the batch thread, which then says so; a stopped thread fails every row.
                item = row.out.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not row.released.is_set():  # closed early (the client went away): let the batch drop the row
                row.cancelled.set()
                with self._cond:
                    self._cond.notify_all()
                if not row.released.wait(RELEASE_TIMEOUT_S):
                    logger.error("the batch thread did not let go of a cancelled turn in %.0fs", RELEASE_TIMEOUT_S)

    # -- the batch thread ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the batch thread once it has decoded the turns already waiting or running."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    def _admit(self) -> list[_Row] | None:
        """The rows to join now; waits while idle (see the module docstring). None: closed and done."""
        with self._cond:
            while not self._waiting and not self._rows and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None if not self._rows else []
            if not self._rows:  # idle: let a burst of announced turns start together
                deadline = time.monotonic() + self.max_wait_s
                while len(self._waiting) < self.max_rows and self._expected > 0 and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            room = self.max_rows - len(self._rows)
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _serve(self) -> None:
        try:
            while (joining := self._admit()) is not None:
                try:
                    for row in joining:
                        self._join(row)
                    self._drop_cancelled()
                    if self._rows:
                        self._step()
                except Exception as exc:  # noqa: BLE001 - handed to every turn of the batch, which re-raises it
                    self._fail_all(exc)
        finally:  # closed, or a bug in this loop: no turn may wait for an answer forever
            if self._batch is not None:
                with contextlib.suppress(Exception), self._locks(list(self._rows)), torch.inference_mode():
                    self._batch.abort_all()
            with self._cond:
                self._closed = True
                stranded = [*self._rows, *self._waiting]
                self._waiting.clear()
            self._rows.clear()
            for row in stranded:
                row.finish(BatchDecodeError("the batch thread stopped; see the server log"))

    def _locks(self, rows: list[_Row]) -> contextlib.ExitStack:
        """The session locks of ``rows`` (one shared model lock, as a rule), in a fixed order."""
        stack = contextlib.ExitStack()
        locks = {id(r.request.session.lock): r.request.session.lock for r in rows}
        for _, lock in sorted(locks.items()):
            stack.enter_context(lock)
        return stack

    def _join(self, row: _Row) -> None:
        if row.cancelled.is_set():
            row.finish(TurnCancelled("the client went away before the answer started"))
            return
        session = row.request.session
        if self._batch is not None and (session.model is not self._batch.model or session.handle is not self._batch.handle):
            row.finish(BatchDecodeError("this turn's session runs on another model than the running batch"))
            return
        if self._batch is None:
            self._batch = ContinuousBatch(session.model, session.handle, max_rows=self.max_rows)
        with self._locks([row]), torch.inference_mode():
            try:
                events = self._batch.join(row, row.request)
            except Exception as exc:  # noqa: BLE001 - this row alone fails (bad input, a failed prefill)
                row.finish(exc)
                return
        self._rows[row] = None
        self._count()
        with self._cond:
            self.counters.joins += 1
        for event in events:
            row.out.put(event.text)

    def _drop_cancelled(self) -> None:
        gone = [row for row in self._rows if row.cancelled.is_set()]
        if not gone:
            return
        assert self._batch is not None
        with self._locks(gone), torch.inference_mode():
            for row in gone:
                self._batch.drop(row)
        for row in gone:
            del self._rows[row]
            row.finish(TurnCancelled("the client went away during the turn"))

    def _step(self) -> None:
        assert self._batch is not None
        rows = list(self._rows)
        with self._locks(rows), torch.inference_mode():
            events = self._batch.step()
        self._count()
        for event in events:
            row = event.key
            assert isinstance(row, _Row)
            if event.reply is not None:
                del self._rows[row]
                row.finish(_End())
            elif event.text:
                row.out.put(event.text)
        if not self._rows:
            self._batch, self._seen = None, (0, 0, 0)

    def _count(self) -> None:
        """Add what the running batch did since the last count to the counters."""
        assert self._batch is not None
        stats = self._batch.stats
        steps, row_steps, prefill = self._seen
        with self._cond:
            self.counters.batches += stats.steps - steps
            self.counters.rows += stats.row_steps - row_steps
            self.counters.prefill_tokens += stats.prefill_tokens - prefill
            self.counters.max_rows = max(self.counters.max_rows, stats.max_rows)
        self._seen = (stats.steps, stats.row_steps, stats.prefill_tokens)

    def _fail_all(self, exc: Exception) -> None:
        logger.error("batched decode of %d turns failed", len(self._rows), exc_info=exc)
        rows = list(self._rows)
        if self._batch is not None:
            with self._locks(rows), torch.inference_mode():
                self._batch.abort_all()
        self._batch, self._seen = None, (0, 0, 0)
        self._rows.clear()
        for row in rows:
            error = BatchDecodeError(f"the batched decode failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            row.finish(error)


__all__ = ["BatchCounters", "BatchDecodeError", "BatchDecoder", "Ticket"]
