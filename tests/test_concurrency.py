"""The sync -> async bridge every face streams through (`deltamem_agents.concurrency`)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from deltamem_agents.concurrency import FairRLock, ThreadedStream, iterate_in_thread

WHO = contextvars.ContextVar("who", default="nobody")


class Producer:
    """A generator factory that records where and how far it ran, and how it ended."""

    def __init__(self, count: int = 5, *, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.count, self.fail_at, self.delay = count, fail_at, delay
        self.threads: set[int] = set()
        self.produced = 0
        self.closed = threading.Event()
        self.context: list[str] = []

    def __call__(self):
        self.threads.add(threading.get_ident())
        self.context.append(WHO.get())
        try:
            for i in range(self.count):
                self.threads.add(threading.get_ident())
                if i == self.fail_at:
                    raise KeyError(f"boom at {i}")
                time.sleep(self.delay)
                self.produced += 1
                yield i
        finally:
            self.threads.add(threading.get_ident())
            self.closed.set()


@pytest.mark.asyncio
async def test_items_arrive_in_order_from_one_worker_thread_with_the_context_copied():
    producer = Producer(20)
    WHO.set("caller")
    items = [item async for item in iterate_in_thread(producer)]
    assert items == list(range(20))
    assert len(producer.threads) == 1 and threading.get_ident() not in producer.threads
    assert producer.context == ["caller"] and producer.closed.is_set()


@pytest.mark.asyncio
async def test_an_error_in_the_producer_is_raised_in_the_consumer():
    producer = Producer(5, fail_at=2)
    seen = []
    with pytest.raises(KeyError, match="boom at 2") as caught:
        async for item in iterate_in_thread(producer):
            seen.append(item)
    assert seen == [0, 1] and producer.closed.is_set()
    assert any(frame.name == "__call__" for frame in caught.traceback)  # the producer's own traceback


@pytest.mark.asyncio
async def test_closing_early_stops_the_producer_and_waits_for_it():
    producer = Producer(1000, delay=0.002)
    stream = iterate_in_thread(producer)
    assert [await anext(stream), await anext(stream)] == [0, 1]
    await stream.aclose()
    assert producer.closed.is_set()  # closed, in its own thread, before aclose returned
    assert producer.produced < 1000 and len(producer.threads) == 1


@pytest.mark.asyncio
async def test_a_cancelled_consumer_stops_the_producer():
    producer = Producer(1000, delay=0.002)

    async def consume():
        async for _ in iterate_in_thread(producer):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.closed.is_set() and producer.produced < 1000


@pytest.mark.asyncio
async def test_cancel_does_not_wait_and_done_tells_the_outcome():
    producer = Producer(1000, delay=0.002)
    stream = ThreadedStream(producer).start()
    assert await anext(stream) == 0
    stream.cancel()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert await stream.done == "stopped" and producer.closed.is_set()

    failing = ThreadedStream(Producer(3, fail_at=0)).start()
    assert await failing.done == "failed" and isinstance(failing.error, KeyError)
    finished = ThreadedStream(Producer(3)).start()
    assert [i async for i in finished] == [0, 1, 2] and await finished.done == "finished"


@pytest.mark.asyncio
async def test_a_bounded_queue_holds_the_producer_back():
    producer = Producer(50)
    stream = ThreadedStream(producer, maxsize=2)
    assert await anext(stream) == 0
    await asyncio.sleep(0.2)
    assert producer.produced <= 4  # one read, two waiting, one held back at most
    assert [i async for i in stream] == list(range(1, 50))


@pytest.mark.asyncio
async def test_an_executor_runs_the_worker():
    producer = Producer(3)
    with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        stream = ThreadedStream(producer, executor=pool)
        assert [i async for i in stream] == [0, 1, 2]
        assert await stream.done == "finished"
    assert producer.closed.is_set()


def test_a_producer_whose_loop_closed_stops():
    producer = Producer(10_000, delay=0.001)

    async def read_one():
        stream = ThreadedStream(producer).start()
        return await anext(stream)

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(read_one()) == 0
    loop.close()
    assert producer.closed.wait(5) and producer.produced < 10_000


# -- FairRLock ---------------------------------------------------------------------------------------
def test_fair_rlock_hands_the_lock_to_waiters_in_arrival_order():
    lock, order = FairRLock(), []
    lock.acquire()
    queued = []

    def waiter(name: str) -> None:
        with lock:
            order.append(name)

    for name in ("a", "b", "c"):
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        queued.append(thread)
        while len(lock._queue) < len(queued):  # wait until this one is queued
            time.sleep(0.001)
    lock.release()
    # the releasing thread asks again at once: it queues behind the three waiters
    with lock:
        order.append("main")
    for thread in queued:
        thread.join(timeout=10)
    assert order == ["a", "b", "c", "main"]


def test_fair_rlock_is_reentrant_times_out_and_refuses_a_foreign_release():
    lock = FairRLock()
    with lock, lock:  # reentrant
        result = []
        thread = threading.Thread(target=lambda: result.append(lock.acquire(timeout=0.05)))
        thread.start()
        thread.join()
        assert result == [False] and lock._queue == []
        assert lock.acquire(blocking=False)
        lock.release()
        def foreign_release() -> None:
            try:
                lock.release()
            except RuntimeError as exc:
                result.append(str(exc))

        other = threading.Thread(target=foreign_release)
        other.start()
        other.join()
        assert "does not hold" in result[-1]
    assert lock.acquire(blocking=False)
    lock.release()
