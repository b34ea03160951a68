"""HybridMemory's memory verbs (add, get, get_all, search, update, delete, history, reset and the
async twins) on a tiny model with a real embedded Chroma log, embedded by hashing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from deltamem_agents.cli._runtime import state_digest
from deltamem_agents.errors import NotFoundError
from deltamem_agents.memory import TextLog, TextLogConfig, TextLogError
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.memory.verbs import MemoryConflictError, MemoryNotFoundError
from deltamem_agents.session import SessionKey
from tests.memory.hashing import HashingEmbedding
from tests.redis_server import redis_prefix, redis_server  # noqa: F401 - fixtures
from tests.tiny_models import tiny_runtime


def open_log(path) -> TextLog:
    return TextLog(TextLogConfig(path=path), embedding_function=HashingEmbedding())


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store")


@pytest.fixture
def textlog(tmp_path):
    log = open_log(tmp_path / "log")
    yield log
    log.close()


@pytest.fixture
def memory(runtime, textlog) -> HybridMemory:
    return HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))


def assert_replayed(runtime, record, name: str) -> None:
    """The committed state is the one a fresh session writes from the committed messages, one by one."""
    twin = runtime.session(name, user_id="twin")
    for message in record.messages:
        twin.ingest(message)
    assert record.state.equal(twin.state) and state_digest(record.state) == state_digest(twin.state)


def test_add_returns_ids_and_get_reads_them(memory, runtime):
    ids = memory.add(
        [{"role": "user", "content": "My ferret is Quillon."}, {"role": "system", "content": "Be brief."},
         {"role": "assistant", "content": "Noted."}],
        session_id="s", user_id="ada", metadata={"topic": "pets"},
    )
    assert len(ids) == 2  # the system message is written into the state, not logged
    first = memory.get(ids[0], user_id="ada")
    assert first.text == "My ferret is Quillon." and first.role == "user" and first.metadata == {"topic": "pets"}
    assert first.session_id == "s" and first.id == ids[0] and first.chunk_ids == [f"{ids[0]}-0"]
    assert memory.get(first.chunk_ids[0], user_id="ada").id == ids[0]  # a chunk id (from search) resolves
    assert runtime.store.head(SessionKey(user_id="ada", session_id="s")).message_count == 3
    assert memory.add("My ferret is Quillon.", session_id="s", user_id="ada") == ids[:1]  # same text, same id
    assert [e.event for e in memory.history(ids[0], user_id="ada")] == ["ADD"]


def test_get_all_filters_by_session_time_and_metadata(memory):
    before = datetime.now(UTC) - timedelta(seconds=1)
    memory.add("I live in Ljubljana.", session_id="a", user_id="ada", metadata={"topic": "home"})
    memory.add("I work as an archivist.", session_id="b", user_id="ada", metadata={"topic": "work"})
    memory.add("Bob's own note.", session_id="a", user_id="bob")
    long_text = " ".join(f"Sentence number {i} is about the garden and the shed." for i in range(60))
    memory.ingest_document(long_text, session_id="a", source="garden.md", user_id="ada")
    everything = memory.get_all(user_id="ada")
    assert len(everything) == 3 and all(item.user_id == "ada" for item in everything)
    assert [i.text for i in memory.get_all(user_id="ada", session_id="b")] == ["I work as an archivist."]
    assert [i.text for i in memory.get_all(user_id="ada", metadata={"topic": "home"})] == ["I live in Ljubljana."]
    document = memory.get_all(user_id="ada", metadata={"kind": "document"})
    assert len(document) == 1 and len(document[0].chunk_ids) > 1 and document[0].text == long_text
    assert len(memory.get_all(user_id="ada", since=before)) == 3
    assert memory.get_all(user_id="ada", until=before) == []
    assert len(memory.get_all(user_id="ada", limit=2)) == 2
    hits = memory.search("archivist work", user_id="ada", k=1)
    assert hits[0].metadata["memory_id"] == memory.get_all(user_id="ada", session_id="b")[0].id


def test_update_corrects_the_entry_and_re_derives_the_state(memory, runtime, textlog):
    memory.add("My ferret is Tomas.", session_id="s")
    memory.reply("What is my pet?", session_id="s", max_new_tokens=3)
    memory.add("I live in Oslo.", session_id="s")
    wrong = next(i for i in memory.get_all(session_id="s") if "Tomas" in i.text)
    fixed = memory.update(wrong.id, "My ferret is Quillon.")
    assert fixed.id == wrong.id and fixed.text == "My ferret is Quillon." and fixed.turn == wrong.turn
    assert textlog.get(wrong.chunk_ids) == []  # the old text left the log
    record = runtime.store.load(SessionKey(session_id="s"))
    assert [m.content for m in record.messages if "ferret" in m.content] == ["My ferret is Quillon."]
    assert_replayed(runtime, record, "fixed")
    assert "Quillon" in memory.search("ferret", k=1)[0].text
    events = memory.history(wrong.id)
    assert [(e.event, e.old_text, e.new_text, e.call) for e in events] == [
        ("ADD", None, "My ferret is Tomas.", "add"), ("UPDATE", "My ferret is Tomas.", "My ferret is Quillon.", "update"),
    ]
    again = memory.update(wrong.id, "My ferret is Quillon!")  # the id stays stable across updates
    assert again.id == wrong.id and len(memory.history(wrong.id)) == 3


def test_update_replaces_a_whole_document(memory, runtime):
    long_text = " ".join(f"Sentence number {i} is about the garden and the shed." for i in range(60))
    memory.ingest_document(long_text, session_id="d", source="garden.md")
    [document] = memory.get_all(session_id="d")
    assert len(document.chunk_ids) > 1
    fixed = memory.update(document.id, "The garden has no shed.")
    assert fixed.id == document.id and fixed.kind == "document" and fixed.source == "garden.md"
    assert fixed.text == "The garden has no shed." and len(fixed.chunk_ids) == 1
    record = runtime.store.load(SessionKey(session_id="d"))
    assert [(m.content, m.metadata["kind"]) for m in record.messages] == [("The garden has no shed.", "document")]
    assert_replayed(runtime, record, "document")


def test_errors_change_nothing(memory, runtime):
    [mine] = memory.add("My locker code is 7312.", session_id="s", user_id="ada")
    [other] = memory.add("I like green tea.", session_id="s", user_id="ada")
    before = runtime.store.head(SessionKey(user_id="ada", session_id="s"))
    for call in (
        lambda: memory.get("no-such-id", user_id="ada"),
        lambda: memory.get(mine, user_id="bob"),
        lambda: memory.update(mine, "changed", user_id="bob"),
        lambda: memory.update("no-such-id", "changed", user_id="ada"),
        lambda: memory.delete(mine, user_id="bob"),
        lambda: memory.history(mine, user_id="bob"),
    ):
        with pytest.raises(MemoryNotFoundError, match="no memory") as caught:
            call()
        assert isinstance(caught.value, NotFoundError) and caught.value.http_status == 404
    with pytest.raises(MemoryConflictError, match="already holds"):
        memory.update(mine, "I like green tea.", user_id="ada")
    with pytest.raises(TextLogError, match="empty"):
        memory.update(mine, "  ", user_id="ada")
    with pytest.raises(TextLogError, match="set by the log"):
        memory.add("x", session_id="s", user_id="ada", metadata={"role": "system"})
    with pytest.raises(TextLogError, match="keys .* are invalid"):
        memory.add("x", session_id="s", user_id="ada", metadata={"$where": 1})
    with pytest.raises(TextLogError, match="64-bit int"):
        memory.add("x", session_id="s", user_id="ada", metadata={"big": 2**70})
    assert runtime.store.head(SessionKey(user_id="ada", session_id="s")) == before
    assert memory.get(mine, user_id="ada").text == "My locker code is 7312." and memory.get(other, user_id="ada")


def test_delete_forgets_the_entry_and_keeps_its_history(memory, runtime):
    [secret] = memory.add("My locker code is 7312.", session_id="s")
    memory.add("I like green tea.", session_id="s")
    report = memory.delete(secret)
    assert report.state_rebuilt and report.messages_removed == 1 and report.log_entries_removed == 1
    with pytest.raises(MemoryNotFoundError):
        memory.get(secret)
    record = runtime.store.load(SessionKey(session_id="s"))
    assert [m.content for m in record.messages] == ["I like green tea."]
    assert_replayed(runtime, record, "deleted")
    assert [(e.event, e.old_text) for e in memory.history(secret)] == [("ADD", None), ("DELETE", "My locker code is 7312.")]


def test_the_audit_survives_a_reopen(runtime, tmp_path):
    first = HybridMemory(runtime, open_log(tmp_path / "kept"))
    [entry] = first.add("I drink cardamom tea.", session_id="s")
    first.update(entry, "I drink mint tea.")
    first.textlog.close()
    reopened = HybridMemory(runtime, open_log(tmp_path / "kept"))
    try:
        events = reopened.history(entry)
        assert [e.event for e in events] == ["ADD", "UPDATE"] and events[1].new_text == "I drink mint tea."
        assert events[0].at <= events[1].at and reopened.get(entry).text == "I drink mint tea."
    finally:
        reopened.textlog.close()


def test_reset_removes_one_user_entirely(memory, runtime):
    [kept] = memory.add("Bob's fact.", session_id="s", user_id="bob")
    memory.add("Ada's fact.", session_id="s1", user_id="ada")
    memory.add("Ada's other fact.", session_id="s2", user_id="ada")
    report = memory.reset(user_id="ada")
    assert (report.sessions_deleted, report.log_entries_removed, report.audit_events_removed) == (2, 2, 2)
    assert memory.get_all(user_id="ada") == [] and runtime.sessions("ada") == []
    assert memory.get(kept, user_id="bob").text == "Bob's fact." and len(memory.history(kept, user_id="bob")) == 1


def test_async_twins(memory):
    async def run():
        [entry] = await memory.aadd("My cat is Miso.", session_id="s")
        got = await memory.aget(entry)
        listed = await memory.aget_all(session_id="s")
        hits = await memory.asearch("cat", session_id="s", k=1)
        fixed = await memory.aupdate(entry, "My cat is Mochi.")
        events = await memory.ahistory(entry)
        await memory.adelete(entry)
        reset = await memory.areset()
        return got, listed, hits, fixed, events, reset

    got, listed, hits, fixed, events, reset = asyncio.run(run())
    assert got.text == "My cat is Miso." and [i.id for i in listed] == [got.id] and hits[0].metadata["memory_id"] == got.id
    assert fixed.text == "My cat is Mochi." and [e.event for e in events] == ["ADD", "UPDATE"]
    assert reset.sessions_deleted == 1


def test_update_and_delete_on_the_redis_store(chat_tokenizer, tmp_path, request):
    from deltamem_agents.store.redis_store import RedisSessionStore

    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    runtime = tiny_runtime(chat_tokenizer, RedisSessionStore(server.url, prefix=prefix))
    log = open_log(tmp_path / "redis-log")
    try:
        memory = HybridMemory(runtime, log)
        [wrong, gone] = memory.add(
            [{"role": "user", "content": "My ferret is Tomas."}, {"role": "user", "content": "My locker code is 7312."}],
            session_id="r",
        )
        memory.update(wrong, "My ferret is Quillon.")
        memory.delete(gone)
        record = runtime.store.load(SessionKey(session_id="r"))
        assert [m.content for m in record.messages] == ["My ferret is Quillon."]
        assert_replayed(runtime, record, "redis")
        assert [e.event for e in memory.history(wrong)] == ["ADD", "UPDATE"]
    finally:
        log.close()



def test_the_audit_lives_on_a_chroma_server_and_survives_its_restart(runtime, tmp_path):
    from tests.memory.test_chroma_server import ChromaServer, chroma_executable

    exe = chroma_executable()
    if exe is None:
        pytest.skip("the `chroma` executable (installed with the chromadb package) is not available")
    server = ChromaServer(exe, tmp_path / "chroma", tmp_path / "chroma.log").start()
    try:
        log = TextLog(TextLogConfig(server_url=server.url), embedding_function=HashingEmbedding())
        memory = HybridMemory(runtime, log)
        [entry] = memory.add("I drink cardamom tea.", session_id="s")
        memory.update(entry, "I drink mint tea.")
        log.close()
        server.stop()
        server.start()  # the same data folder, another port
        memory = HybridMemory(runtime, TextLog(TextLogConfig(server_url=server.url), embedding_function=HashingEmbedding()))
        assert [(e.event, e.new_text) for e in memory.history(entry)] == [
            ("ADD", "I drink cardamom tea."), ("UPDATE", "I drink mint tea."),
        ]
        memory.textlog.close()
    finally:
        server.stop()
