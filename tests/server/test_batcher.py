"""BatchDecoder on its own: announced turns are waited for and share one batch, a row the batch
refuses fails alone, and the answers are the sessions' own (as `MemorySession.stream` gives)."""

from __future__ import annotations

import threading

import pytest

from deltamem_agents.server.batcher import BatchDecoder
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
    assert (decoder.counters.batches, decoder.counters.rows) == (1, 3)
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
