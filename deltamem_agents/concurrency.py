"""A blocking iterator, run start to end in one worker thread, read by an asyncio consumer.

A turn holds its session's store lock across its yields, and that lock belongs to the thread
that took it, so a turn can never be resumed from whichever thread an event loop happens to
use. `ThreadedStream` runs the whole iterator in one thread (contextvars copied into it), hands
each item to the event loop, re-raises the producer's error in the consumer, and lets the
consumer stop the producer: it stops at its next item and closes the iterator in its own thread
(for a turn: rolls it back). The server's scheduler, `HybridMemory.astream_chat` and the
LangChain and LlamaIndex async streams all use it. Imports nothing of the SDK.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from typing import Any, Generic, Literal, TypeVar

__all__ = ["FairRLock", "Outcome", "ThreadedStream", "iterate_in_thread"]

T = TypeVar("T")
#: How a producer ended: its iterator ran out, it raised, or the consumer stopped it first.
Outcome = Literal["finished", "failed", "stopped"]

#: How often a producer blocked on a full queue checks whether the consumer went away.
POLL_S = 0.1

_ITEM, _ERROR, _END = "item", "error", "end"


class FairRLock:
    """A reentrant lock handed over in arrival order (FIFO).

    ``threading.RLock`` lets the thread that releases it take it straight back, so a loop that
    locks the model once per token (the server's batch thread) would starve every other thread
    waiting for the model. Here a release hands the lock to the longest waiter. Same interface
    as ``RLock``: ``acquire(blocking, timeout)``, ``release``, ``with``."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._count = 0
        self._queue: list[object] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            ticket = object()
            self._queue.append(ticket)
            ready = self._cond.wait_for(
                lambda: self._owner is None and self._queue[0] is ticket, None if timeout < 0 else timeout
            )
            if not ready:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next waiter may be first now
                return False
            self._queue.pop(0)
            self._owner, self._count = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a FairRLock this thread does not hold")
            self._count -= 1
            if self._count == 0:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ThreadedStream(Generic[T]):
    """The items of ``produce()``, computed in a worker thread and read with ``async for``.

    ``produce`` is called in the worker, so the whole iteration (creating, advancing, closing)
    happens in that one thread. ``executor``: where the worker runs (default: a thread of its
    own, so long streams never starve a shared pool). ``maxsize``: at most that many items
    wait for the consumer (0: unbounded); a full queue holds the producer back. ``stop``: the
    event that asks the producer to stop (give your own to let the producer watch it too, e.g.
    while it waits for a batch); `cancel` sets it.

    The stream starts on the first ``__anext__`` or an explicit `start`; `done` then resolves to
    the `Outcome` once the worker has closed the iterator, and `error` holds what it raised.
    """

    def __init__(
        self,
        produce: Callable[[], Iterable[T]],
        *,
        executor: Executor | None = None,
        maxsize: int = 0,
        stop: threading.Event | None = None,
        name: str = "deltamem-stream",
    ) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 (unbounded) or more, got {maxsize}")
        self._produce = produce
        self._executor = executor
        self._space = threading.Semaphore(maxsize) if maxsize else None
        self._name = name
        self.stopped = stop or threading.Event()
        self.error: BaseException | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[Outcome] | None = None
        self._exhausted = False

    # -- the consumer's side (event loop) ---------------------------------------------------------------
    def start(self) -> ThreadedStream[T]:
        """Start the worker (once); call it on the event loop that will read the items."""
        if self._done is not None:
            return self
        loop = asyncio.get_running_loop()
        self._loop, self._queue = loop, asyncio.Queue()
        work = contextvars.copy_context().run
        if self._executor is not None:
            self._done = loop.run_in_executor(self._executor, work, self._work)
        else:
            done: asyncio.Future[Outcome] = loop.create_future()
            self._done = done

            def run() -> None:
                outcome = work(self._work)
                self._call_soon(lambda: done.done() or done.set_result(outcome))

            threading.Thread(target=run, name=self._name, daemon=True).start()
        return self

    @property
    def done(self) -> asyncio.Future[Outcome]:
        """Resolves to the `Outcome` once the worker has closed the iterator (after `start`)."""
        if self._done is None:
            raise RuntimeError("the stream has not started; call start() or read from it first")
        return self._done

    def __aiter__(self) -> ThreadedStream[T]:
        return self

    async def __anext__(self) -> T:
        self.start()
        if self._exhausted or self.stopped.is_set():
            raise StopAsyncIteration
        assert self._queue is not None
        kind, item = await self._queue.get()
        if self._space is not None and kind == _ITEM:
            self._space.release()
        if kind == _ITEM:
            return item
        self._exhausted = True
        if kind == _ERROR:
            raise item
        raise StopAsyncIteration

    def cancel(self) -> None:
        """Ask the producer to stop at its next item (it closes its iterator itself); no wait."""
        self.stopped.set()

    async def aclose(self) -> None:
        """Stop the producer and wait until it has closed its iterator."""
        self.cancel()
        if self._done is not None and not self._done.done():
            await asyncio.wait({self._done})

    # -- the producer's side (worker thread) ------------------------------------------------------------
    def _call_soon(self, callback: Callable[[], Any]) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.stopped.set()
            return False
        return True

    def _post(self, kind: str, item: Any) -> bool:
        queue = self._queue
        assert queue is not None
        return self._call_soon(lambda: queue.put_nowait((kind, item)))

    def _wait_for_space(self) -> bool:
        if self._space is None:
            return True
        while not self._space.acquire(timeout=POLL_S):
            if self.stopped.is_set():
                return False
        return True

    def _work(self) -> Outcome:
        outcome: Outcome = "finished"
        iterator = None
        try:
            iterator = iter(self._produce())
            for item in iterator:
                if self.stopped.is_set() or not self._wait_for_space() or not self._post(_ITEM, item):
                    outcome = "stopped"
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it again
            self.error, outcome = exc, "failed"
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # an abandoned turn rolls back here, in the thread that holds its lock
                except BaseException as exc:  # noqa: BLE001 - reported like the iterator's own errors
                    if self.error is None:
                        self.error, outcome = exc, "failed"
        # Always post the end, so a consumer awaiting the next item is woken even after a stop.
        if self.error is not None:
            self._post(_ERROR, self.error)
        else:
            self._post(_END, None)
        return outcome


async def iterate_in_thread(
    produce: Callable[[], Iterable[T]],
    *,
    executor: Executor | None = None,
    maxsize: int = 0,
    name: str = "deltamem-stream",
) -> AsyncIterator[T]:
    """``async for item in iterate_in_thread(lambda: blocking_generator())``: a `ThreadedStream`
    whose producer is stopped and waited for when the consumer leaves (break, error, cancel)."""
    stream = ThreadedStream(produce, executor=executor, maxsize=maxsize, name=name)
    try:
        async for item in stream:
            yield item
    finally:
        await stream.aclose()
