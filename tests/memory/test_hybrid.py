"""HybridMemory: a session, a real Chroma text log and the router, on a tiny model."""

from __future__ import annotations

import warnings

import pytest

from deltamem_agents import DeltaMemConfig
from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import SNIPPET_HEADER, HybridMemory
from deltamem_agents.memory.router import AlwaysRetrieve, MemoryRouter, NeverRetrieve
from deltamem_agents.session import DeltaMemRuntime, SessionConfig, SessionKey, UntrainedMemoryWarning
from tests.tiny_models import randomize_memory, tiny_model


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(
            "tiny-llama", model=tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096),
            tokenizer=chat_tokenizer, adapter=None, config=DeltaMemConfig(), store=tmp_path / "store",
            session_config=SessionConfig(context_window=512),
        )
    randomize_memory(runtime.handle, seed=2)
    return runtime


@pytest.fixture
def textlog(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"))
    yield log
    log.close()


def test_turns_go_into_both_memories_and_the_decision_is_exposed(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    first = memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=4)
    assert first.decision.route == "state" and not first.decision.snippets
    assert textlog.count(user_id="default", session_id="s") == 2  # the question and the answer
    assert runtime.store.head(SessionKey(session_id="s")).turn_count == 1


def test_retrieved_snippets_enter_the_context_without_being_written(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[AlwaysRetrieve()]))
    memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=3)
    session = runtime.session("s")
    written_before = session.state.clone()
    answer = memory.reply("What is my locker code?", session_id="s", max_new_tokens=3)
    assert answer.decision.route in ("retrieve", "both") and answer.decision.retrieved_ids
    notes = [m for m in session.messages if m.role == "system" and m.content.startswith(SNIPPET_HEADER)]
    assert len(notes) == 1 and "7312" in notes[0].content
    assert notes[0].metadata["retrieved"] == answer.decision.retrieved_ids
    assert answer.state_confidence is not None and answer.state_confidence > 0
    assert not session.state.equal(written_before)  # the new turn itself was written


def test_state_confidence_is_zero_for_an_empty_memory(runtime):
    session = runtime.session("empty")
    assert session.state_confidence("Anything?") == 0.0
    assert session.messages == [] and session.state is None


def test_forgetting_removes_the_entries_and_rebuilds_the_state_by_replay(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=3)
    memory.reply("I like green tea.", session_id="s", max_new_tokens=3)
    secret = textlog.search("locker code", user_id="default", session_id="s", k=1)[0]
    assert "7312" in secret.text
    report = memory.forget(session_id="s", ids=[secret.id], progress=False)
    assert report.state_rebuilt and report.messages_removed == 1 and report.log_entries_removed == 1

    session = runtime.session("s")
    assert all("7312" not in m.content for m in session.messages)
    assert all("7312" not in hit.text for hit in textlog.search("locker code", user_id="default", session_id="s", k=5))
    # the rebuilt state is exactly what replaying the remaining messages, one by one, writes
    twin = runtime.session("twin")
    for message in session.messages:
        twin.ingest(message)
    assert twin.state.equal(session.state)
    reloaded = runtime.store.load(SessionKey(session_id="s"))
    assert reloaded.state.equal(session.state) and len(reloaded.messages) == len(session.messages)


def test_forgetting_a_whole_session(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("Hello.", session_id="gone", max_new_tokens=2)
    report = memory.forget(session_id="gone")
    assert report.log_entries_removed == 2 and not report.state_rebuilt
    assert not runtime.store.exists(SessionKey(session_id="gone"))
    assert textlog.count(user_id="default", session_id="gone") == 0
