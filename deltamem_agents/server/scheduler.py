"""`TurnScheduler`: every model access of the server goes through here.

- **One turn per session at a time.** In this process an asyncio lock per session queues
  requests on the event loop (not in threads); across processes the session store's file lock
  does the same, so several servers can share one store.
- **A turn runs start to end in one worker thread.** The store lock is bound to the thread that
  took it, so a turn is never moved between threads; its chunks reach the event loop through
  the library's bridge (`deltamem_agents.concurrency.ThreadedStream`), run on the scheduler's
  own bounded pool (shared with the memory verbs), and the bridge's stop flag is also what a
  batched decode watches to leave its batch. The first chunk is awaited before a streamed
  response opens, so input errors still become HTTP statuses.
- **One model.** Sessions share the runtime's model lock (first come, first served). With
  batching on, the answers of concurrent turns of different sessions, tool turns included, are
  decoded by continuous batching (`BatchDecoder`): a turn joins the running batch at the next
  token step and leaves it when it ends; otherwise one after another.
- **Faults.** A turn that fails or whose streaming client goes away commits nothing (the
  library's rule); a SIGKILL loses at most the turns in flight, because each turn is committed
  atomically when it ends.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from deltamem_agents.concurrency import ThreadedStream
from deltamem_agents.memory.hybrid import (
    HybridChunk,
    HybridMemory,
    HybridReply,
    TurnDecoder,
)
from deltamem_agents.server.batcher import BatchDecoder
from deltamem_agents.server.errors import APIError, TurnCancelled
from deltamem_agents.server.schemas import SchedulerStats
from deltamem_agents.session.session import MemorySession, is_note
from deltamem_agents.store.records import ChatMessage, SessionKey

T = TypeVar("T")
Outcome = Literal["ok", "failed", "cancelled"]


@dataclass(frozen=True)
class TurnRequest:
    """One chat turn: the conversation (all of it or its new messages), where it goes
    (``key`` None: stateless, a throwaway session) and how to answer."""

    messages: Sequence[ChatMessage]
    user_id: str
    key: SessionKey | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)


class TurnStream:
    """The chunks of one running turn, read on the event loop. The last chunk carries the
    `HybridReply`; `next` then returns None. Errors of the turn are raised by `next`."""

    def __init__(self, stream: ThreadedStream[HybridChunk]) -> None:
        self._stream = stream
        self._done = False

    async def next(self) -> HybridChunk | None:
        if self._done:
            return None
        try:
            return await anext(self._stream)
        except StopAsyncIteration:
            self._done = True
            return None
        except Exception:  # the turn's error (a cancelled request is not the turn's end)
            self._done = True
            raise

    async def reply(self) -> HybridReply:
        """Read the whole turn; its reply."""
        final = None
        while (chunk := await self.next()) is not None:
            final = chunk.reply or final
        if final is None:
            raise RuntimeError("the turn ended without a reply")
        return final

    def cancel(self) -> None:
        """Abandon the turn (the client went away): it stops at its next piece and commits nothing."""
        if not self._done:
            self._stream.cancel()

    @property
    def done(self) -> bool:
        return self._done


@dataclass
class _SessionLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class TurnScheduler:
    """Runs turns and memory verbs on one `HybridMemory` (see the module docstring)."""

    def __init__(
        self,
        memory: HybridMemory,
        *,
        batching: bool = True,
        batch_wait_s: float = 5.0,
        max_batch_rows: int = 16,
        max_workers: int = 64,
        max_queued_turns: int = 512,
        lock_timeout_s: float = 120.0,
        max_ingest_chars: int = 200_000,
    ) -> None:
        self.memory = memory
        self.runtime = memory.runtime
        self.lock_timeout_s = lock_timeout_s
        self.max_queued_turns = max_queued_turns
        self.max_ingest_chars = max_ingest_chars
        self.batcher = BatchDecoder(max_wait_s=batch_wait_s, max_rows=max_batch_rows) if batching else None
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="deltamem-turn")
        self._locks: dict[SessionKey, _SessionLock] = {}
        self._stats = SchedulerStats()

    # -- chat turns -----------------------------------------------------------------------------------
    async def start_turn(self, turn: TurnRequest) -> TurnStream:
        """Queue a turn behind its session's earlier turns and start it in a worker thread."""
        if self._stats.turns_running >= self.max_queued_turns:
            raise APIError(
                503, f"the server has {self._stats.turns_running} turns running or queued; retry shortly",
                type="server_busy", code="server_busy", headers={"Retry-After": "1"},
            )
        self._stats.turns_running += 1
        try:
            entry = await self._acquire(turn.key) if turn.key is not None else None
        except BaseException:
            self._stats.turns_running -= 1
            raise
        cancelled = threading.Event()
        stream = ThreadedStream(
            lambda: self._chunks(turn, cancelled), executor=self._pool, stop=cancelled, name="deltamem-turn"
        )

        def finished(done: asyncio.Future[Any]) -> None:
            self._stats.turns_running -= 1
            if entry is not None and turn.key is not None:
                self._release(turn.key, entry)
            outcome = self._outcome(done, stream.error)
            if outcome == "ok":
                self._stats.turns_finished += 1
            elif outcome == "cancelled":
                self._stats.turns_cancelled += 1
            else:
                self._stats.turns_failed += 1

        try:
            stream.start()
        except BaseException:  # the pool is shut down: the turn never started
            self._stats.turns_running -= 1
            if entry is not None and turn.key is not None:
                self._release(turn.key, entry)
            raise
        self._stats.turns_started += 1
        stream.done.add_done_callback(finished)
        return TurnStream(stream)

    @staticmethod
    def _outcome(done: asyncio.Future[Any], error: BaseException | None) -> Outcome:
        if done.cancelled() or done.exception() is not None:
            return "failed"
        ended = done.result()
        if ended == "finished":
            return "ok"
        if ended == "stopped" or isinstance(error, TurnCancelled):
            return "cancelled"
        return "failed"

    def _chunks(self, turn: TurnRequest, cancelled: threading.Event) -> Iterator[HybridChunk]:
        """The worker thread's side: the turn start to end. An abandoned turn is closed here, in
        its own thread, and commits nothing."""
        if self.batcher is None:
            self._stats.serial_decodes += 1  # a plain int add: atomic under the GIL
            yield from self._counted(self._turn(turn, MemorySession.stream))
            return
        with self.batcher.expecting() as ticket:
            decoder = functools.partial(self.batcher.decode, cancelled=cancelled, ticket=ticket)
            yield from self._counted(self._turn(turn, decoder))

    def _counted(self, chunks: Iterator[HybridChunk]) -> Iterator[HybridChunk]:
        """The turn's chunks; its prefill cost is added to the stats when it ends."""
        for chunk in chunks:
            if chunk.reply is not None:
                self._stats.prefill_tokens += chunk.reply.stats.prefill_tokens
                self._stats.rebuild_tokens += chunk.reply.stats.rebuild_tokens
            yield chunk

    def _turn(self, turn: TurnRequest, decoder: TurnDecoder) -> Iterator[HybridChunk]:
        return self._stateful(turn, decoder) if turn.key is not None else self._stateless(turn, decoder)

    def _stateful(self, turn: TurnRequest, decoder: TurnDecoder) -> Iterator[HybridChunk]:
        key = turn.key
        assert key is not None
        store = self.runtime.store
        with store.lock(key):  # re-entered by stream_chat in this same thread
            session = self.runtime.session(key.session_id, user_id=key.user_id)
            self._check_ingest_size(session.new_messages(turn.messages))
            yield from self.memory.stream_chat(
                list(turn.messages), session_id=key.session_id, user_id=key.user_id, tools=turn.tools,
                tool_choice=turn.tool_choice, decoder=decoder, **turn.generation,
            )

    def _stateless(self, turn: TurnRequest, decoder: TurnDecoder) -> Iterator[HybridChunk]:
        """A turn in no session (`HybridMemory.stream_chat` with ``stateless=True``): the
        conversation is read, answered and forgotten."""
        self._check_ingest_size([m for m in turn.messages if not is_note(m)])
        yield from self.memory.stream_chat(
            list(turn.messages), user_id=turn.user_id, stateless=True, tools=turn.tools,
            tool_choice=turn.tool_choice, decoder=decoder, **turn.generation,
        )

    def _check_ingest_size(self, new: Sequence[ChatMessage]) -> None:
        size = sum(len(m.content) for m in new)
        if size > self.max_ingest_chars:
            raise APIError(
                413,
                f"this request would add {size} characters of history to the session, more than this server's "
                f"limit of {self.max_ingest_chars}: send only the new messages (a session remembers the earlier "
                "ones), ingest long documents in parts through /v1/sessions/{id}/ingest, or raise --max-ingest-chars",
                code="ingest_too_large", param="messages",
            )

    # -- memory verbs and store reads ----------------------------------------------------------------------
    async def run_exclusive(self, key: SessionKey, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a memory verb: ingest, forget, delete) in a worker thread while no turn
        of the same session runs."""
        entry = await self._acquire(key)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            self._release(key, entry)

    async def run_io(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a store read) in a worker thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    # -- per-session locks (event loop only) ------------------------------------------------------------------
    async def _acquire(self, key: SessionKey) -> _SessionLock:
        entry = self._locks.setdefault(key, _SessionLock())
        entry.users += 1
        try:
            async with asyncio.timeout(self.lock_timeout_s):
                await entry.lock.acquire()
        except TimeoutError:
            self._forget_lock(key, entry)
            raise APIError(
                503, f"session {key} is busy with other requests (waited {self.lock_timeout_s:g}s); retry later",
                type="server_busy", code="session_busy", headers={"Retry-After": "1"},
            ) from None
        except BaseException:
            self._forget_lock(key, entry)
            raise
        return entry

    def _release(self, key: SessionKey, entry: _SessionLock) -> None:
        entry.lock.release()
        self._forget_lock(key, entry)

    def _forget_lock(self, key: SessionKey, entry: _SessionLock) -> None:
        entry.users -= 1
        if entry.users == 0 and self._locks.get(key) is entry:
            del self._locks[key]

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def stats(self) -> SchedulerStats:
        out = self._stats.model_copy()
        if self.batcher is not None:
            counters = self.batcher.counters
            out.batches, out.batched_rows, out.max_batch_rows = counters.batches, counters.rows, counters.max_rows
            out.batch_joins = counters.joins
        return out

    def close(self) -> None:
        """Stop the batch thread and the workers (running turns finish first)."""
        if self.batcher is not None:
            self.batcher.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["TurnRequest", "TurnScheduler", "TurnStream"]
