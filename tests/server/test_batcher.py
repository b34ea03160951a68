"""BatchDecoder on its own: announced turns are waited for and share one batch, a turn that
arrives while a batch runs joins it, a row the batch refuses fails alone, a closed stream lets
its row go, and the answers are the sessions' own (as `MemorySession.stream` gives)."""

from __future__ import annotations

import threading

import pytest

from deltamem_agents.server.batcher import BatchDecodeError, BatchDecoder
from deltamem_agents.session import ChatMessage, SessionError


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def run_turns(decoder: BatchDecoder, jobs: list[tuple]) -> list[object]:
    """Each job (session, message) in its own thread, announced first, as the scheduler does."""
    results: list[object] = [None] * len(jobs)
    announced = threading.Barrier(len(jobs))

    def turn(index: int, session, message) -> None:
        with decoder.expecting() as ticket:
            announced.wait()  # everyone is announced before anyone asks for an answer
            try:
                text = "".join(decoder.decode(session, message, ticket=ticket, max_new_tokens=3))
                results[index] = (text, session.last_reply.text)
            except SessionError as exc:
                results[index] = exc

    threads = [threading.Thread(target=turn, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_announced_turns_share_one_batch_and_get_their_own_answers(runtime):
    decoder = BatchDecoder(max_wait_s=30, max_rows=8)
    try:
        sessions = [runtime.session(f"b{i}") for i in range(3)]
        results = run_turns(decoder, [(s, user(f"Hello {i}, how are you today?")) for i, s in enumerate(sessions)])
    finally:
        decoder.close()
    assert decoder.counters.joins == 3 and decoder.counters.max_rows == 3  # all three decoded side by side
    assert decoder.counters.rows >= 3 * 2  # 3 tokens each: at least two batched forwards per row
    twins = [runtime.session(f"t{i}") for i in range(3)]
    for i, twin in enumerate(twins):
        alone = "".join(twin.stream(user(f"Hello {i}, how are you today?"), max_new_tokens=3))
        streamed, reply = results[i]
        assert streamed == reply == alone


def test_a_row_the_batch_refuses_fails_alone(runtime):
    decoder = BatchDecoder(max_wait_s=30, max_rows=8)
    try:
        good = runtime.session("good")
        answered = runtime.session("answered")
        answered.reply("Hi.", max_new_tokens=2)  # ends with the assistant: nothing to answer without a message
        results = run_turns(decoder, [(good, user("Hello there.")), (answered, None)])
    finally:
        decoder.close()
    assert isinstance(results[1], SessionError) and "nothing to answer" in str(results[1])
    assert isinstance(results[0], tuple) and results[0][0] == results[0][1]
    assert good.messages[-1].role == "assistant"


def test_bad_options_fail_before_joining_a_batch(runtime):
    decoder = BatchDecoder(max_wait_s=1, max_rows=4)
    try:
        with decoder.expecting() as ticket, pytest.raises(ValueError, match="temperature"):
            list(decoder.decode(runtime.session("x"), user("Hi"), ticket=ticket, temperature=-1))
        assert decoder.counters.batches == 0 and not ticket.pending
    finally:
        decoder.close()


def test_a_turn_arriving_while_a_batch_runs_joins_it_and_ends_first(runtime):
    decoder = BatchDecoder(max_wait_s=0, max_rows=8)
    long_session, short_session = runtime.session("long"), runtime.session("short")
    order: list[str] = []
    first_piece = threading.Event()

    def long_turn() -> None:
        for _ in decoder.decode(long_session, user("Tell me a story."), max_new_tokens=40, ignore_eos=True):
            first_piece.set()
        order.append("long")

    try:
        thread = threading.Thread(target=long_turn)
        thread.start()
        assert first_piece.wait(60)  # the long turn is decoding
        text = "".join(decoder.decode(short_session, user("Hi."), max_new_tokens=3, ignore_eos=True))
        order.append("short")
        thread.join(timeout=120)
    finally:
        decoder.close()
    assert order == ["short", "long"]  # it did not wait for the running batch to drain
    assert decoder.counters.max_rows == 2 and decoder.counters.joins == 2
    assert text == short_session.last_reply.text
    assert long_session.last_reply.stats.decode_tokens == 40


def test_a_closed_stream_lets_its_row_go_and_commits_nothing(runtime):
    decoder = BatchDecoder(max_wait_s=0, max_rows=4)
    session = runtime.session("closed")
    try:
        stream = decoder.decode(session, user("Tell me a story."), max_new_tokens=40, ignore_eos=True)
        next(stream)
        stream.close()  # the client went away: returns once the batch thread let the session go
        assert [m.role for m in session.messages] == []
        assert "".join(decoder.decode(session, user("Hello?"), max_new_tokens=2)) == session.last_reply.text
    finally:
        decoder.close()
    assert [m.role for m in session.messages] == ["user", "assistant"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batch_thread_that_dies_fails_its_turns_instead_of_leaving_them_waiting(runtime, monkeypatch):
    decoder = BatchDecoder(max_wait_s=0, max_rows=4)

    def broken(self) -> None:
        raise SystemExit("a bug in the batch loop")  # not an Exception: it ends the thread

    monkeypatch.setattr(BatchDecoder, "_drop_cancelled", broken)
    session = runtime.session("dies")
    try:
        with pytest.raises(BatchDecodeError, match="batch thread stopped"):
            list(decoder.decode(session, user("Hello?"), max_new_tokens=4))
        assert [m.role for m in session.messages] == []  # its row was aborted
        with pytest.raises(BatchDecodeError, match="shutting down"):
            list(decoder.decode(session, user("Again?"), max_new_tokens=4))
    finally:
        decoder.close()
