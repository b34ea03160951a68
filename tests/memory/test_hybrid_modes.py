"""HybridMemory's other ways to run a turn: for asyncio code (`astream_chat`) and stored nowhere
(``stateless=True``)."""

from __future__ import annotations

import contextlib
import threading

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import AlwaysRetrieve, MemoryRouter, NeverRetrieve
from deltamem_agents.session import MemorySession, SessionError, SessionKey
from tests.tiny_models import tiny_runtime


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store")


@pytest.fixture
def textlog(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"))
    yield log
    log.close()


def recording_decoder(threads: list[int]):
    """`MemorySession.stream`, noting the thread each piece is decoded in."""

    def decode(session, message, **options):
        for piece in MemorySession.stream(session, message, **options):
            threads.append(threading.get_ident())
            yield piece

    return decode


# -- astream_chat ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_async_turn_streams_like_the_sync_one_from_one_worker_thread(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    threads: list[int] = []
    chunks = [c async for c in memory.astream_chat(
        "My cat is called Miso.", session_id="a", max_new_tokens=4, decoder=recording_decoder(threads)
    )]
    final = chunks[-1].reply
    assert final is not None and chunks[-1].text == "" and all(c.reply is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == final.text and final.turn == 1
    assert len(set(threads)) == 1 and threading.get_ident() not in threads
    assert runtime.store.head(SessionKey(session_id="a")).turn_count == 1
    assert textlog.count(user_id="default", session_id="a") == 2
    # the same turn, synchronously, on a twin session: the same text
    sync = memory.chat("My cat is called Miso.", session_id="b", max_new_tokens=4)
    assert sync.text == final.text


@pytest.mark.asyncio
async def test_an_async_turn_closed_early_commits_nothing(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("First fact.", session_id="early", max_new_tokens=2)
    committed = runtime.store.load(SessionKey(session_id="early"))
    async with contextlib.aclosing(
        memory.astream_chat("Second fact.", session_id="early", max_new_tokens=8, ignore_eos=True)
    ) as chunks:
        async for _ in chunks:
            break
    assert runtime.store.head(SessionKey(session_id="early")).turn_count == 1
    session = runtime.session("early")
    assert [m.content for m in session.messages] == [m.content for m in committed.messages]
    assert memory.reply("Third fact.", session_id="early", max_new_tokens=2).turn == 2  # the lock was let go


@pytest.mark.asyncio
async def test_an_async_turn_raises_its_error_in_the_caller(runtime):
    memory = HybridMemory(runtime, textlog=None)
    with pytest.raises(SessionError, match="last message must be from the user or a tool"):
        async for _ in memory.astream_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                           session_id="bad", max_new_tokens=2):
            pass


# -- stateless -------------------------------------------------------------------------------------
def test_a_stateless_turn_is_answered_from_the_messages_and_stored_nowhere(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[AlwaysRetrieve()]))
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    reply = memory.chat(conversation, stateless=True, user_id="ada", max_new_tokens=3)
    assert reply.session_id == "" and reply.user_id == "ada" and reply.turn == 0 and reply.decision is None
    question_only = memory.chat(conversation[-1:], stateless=True, max_new_tokens=3)
    assert reply.usage.prompt_tokens > question_only.usage.prompt_tokens  # the whole conversation was read
    assert runtime.store.list() == [] and textlog.count(user_id="ada") == 0


def test_a_stateless_stream_ends_with_its_reply_and_takes_a_decoder(runtime):
    memory = HybridMemory(runtime, textlog=None)
    threads: list[int] = []
    chunks = list(memory.stream_chat("Hello?", stateless=True, max_new_tokens=3, decoder=recording_decoder(threads)))
    assert chunks[-1].reply is not None and "".join(c.text for c in chunks) == chunks[-1].reply.text
    assert threads and runtime.store.list() == []


def test_a_stateless_turn_names_no_session_and_a_stored_one_needs_one(runtime):
    memory = HybridMemory(runtime, textlog=None)
    with pytest.raises(SessionError, match="drop session_id"):
        memory.chat("Hi", session_id="s", stateless=True)
    with pytest.raises(TypeError, match="needs session_id"):
        memory.chat("Hi")
    with pytest.raises(SessionError, match="last message must be from the user or a tool"):
        memory.chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], stateless=True)
    assert runtime.store.list() == []
