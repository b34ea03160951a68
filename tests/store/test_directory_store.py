"""DirectorySessionStore with real files: round trips, verification, crashes and concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
import torch

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.store import base as store_module
from deltamem_agents.store import records as records_module
from deltamem_agents.store.base import (
    SessionConflictError,
    SessionCorruptError,
    SessionExistsError,
    SessionLockTimeout,
    SessionMismatchError,
    SessionNotFoundError,
    SessionStore,
    default_store_root,
)
from deltamem_agents.store.directory import DirectorySessionStore
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    InvalidSessionIdError,
    SessionKey,
    chain_next,
    validate_id,
)

FP = Fingerprint(backbone="tiny-llama", backbone_signature="sig-1", adapter="none", config="cfg-1")
KEY = SessionKey(user_id="alice", session_id="chat-1")


def make_state(value: float, layers=(0, 3)) -> DeltaMemState:
    return DeltaMemState({i: torch.full((1, 2, 4, 4), value) + torch.arange(16.0).view(4, 4) for i in layers})


def msg(content: str, role: str = "user", **kw) -> ChatMessage:
    return ChatMessage(role=role, content=content, **kw)


@pytest.fixture
def store(tmp_path: Path) -> DirectorySessionStore:
    return DirectorySessionStore(tmp_path / "sessions")


def log_lines(store: DirectorySessionStore, key: SessionKey) -> list[dict]:
    text = (store.session_dir(key) / "messages.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def assert_chain_verifies(lines: list[dict]) -> None:
    chain = ""
    for index, entry in enumerate(lines):
        assert entry["i"] == index
        chain = chain_next(chain, entry["message"])
        assert entry["chain"] == chain


def two_turns(store: DirectorySessionStore):
    record = store.create(KEY, FP)
    record = store.commit(record, new_messages=[msg("hi"), msg("hello!", "assistant")], state=make_state(1.0))
    record = store.commit(record, new_messages=[msg("how are you?")], state=make_state(2.0), tokens_written=7)
    return record


# -- ids ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "", ".", "..", "a" * 129, ".hidden", "a..b", "a b", "x\n", "a\\b", "-x", "é"]
)
def test_invalid_ids_are_refused(bad, store):
    with pytest.raises(InvalidSessionIdError) as info:
        SessionKey(user_id="alice", session_id=bad)
    assert "session_id" in str(info.value) and repr(bad) in str(info.value)
    with pytest.raises(InvalidSessionIdError, match="user_id"):
        SessionKey(user_id=bad, session_id="ok")
    with pytest.raises(InvalidSessionIdError):
        store.list(bad)
    with pytest.raises(ValueError):  # file data goes through pydantic: still refused
        SessionKey.model_validate({"user_id": "u", "session_id": bad})


@pytest.mark.parametrize("good", ["a", "a" * 128, "alice@example.com", "s-1_2.3", "0"])
def test_valid_ids(good):
    assert validate_id("session_id", good) == good
    key = SessionKey(session_id=good)
    assert str(key) == f"default/{good}"
    assert SessionKey.parse(str(key)) == key


# -- round trip -----------------------------------------------------------------------------------
def test_round_trip(store):
    record = store.create(KEY, FP, extra={"title": "first chat"})
    assert record.state is None and record.messages == []
    messages = [
        msg("You are helpful.", "system"),
        msg("what's 2+2?", metadata={"source": "cli", "turn": 0}),
        msg("", "assistant", tool_calls=[{"id": "c1", "type": "function", "function": {"name": "add"}}]),
        msg("4", "tool", tool_call_id="c1", name="add"),
        msg("It is 4 — ünïcode ✓", "assistant"),
    ]
    state = make_state(0.5)
    committed = store.commit(record, new_messages=messages, state=state, tokens_written=42)
    assert record.metadata.turn_count == 0  # the input record is untouched

    loaded = DirectorySessionStore(store.root).load(KEY, expect=FP)
    assert loaded is not None
    assert loaded.state.equal(state) and loaded.state.layers.keys() == {0, 3}
    assert loaded.messages == messages
    meta = loaded.metadata
    assert meta == committed.metadata
    assert (meta.turn_count, meta.message_count, meta.tokens_written) == (1, 5, 42)
    assert meta.extra == {"title": "first chat"} and meta.key == KEY and meta.fingerprint == FP
    assert meta.state_file == "state-000001.safetensors" and meta.created_at <= meta.updated_at
    assert meta.created_at.tzinfo is not None


def test_several_commits_append(store):
    record = two_turns(store)
    record = store.commit(record, new_messages=[], state=None)  # a turn may store no state
    loaded = store.load(KEY)
    assert [m.content for m in loaded.messages] == ["hi", "hello!", "how are you?"]
    assert loaded.state is None and loaded.metadata.state_file is None
    assert (loaded.metadata.turn_count, loaded.metadata.message_count, loaded.metadata.tokens_written) == (3, 3, 7)
    lines = log_lines(store, KEY)
    assert len(lines) == 3
    assert_chain_verifies(lines)
    assert lines[-1]["chain"] == loaded.metadata.log_chain
    record = store.commit(record, new_messages=[msg("back")], state=make_state(3.0))
    files = sorted(p.name for p in store.session_dir(KEY).iterdir())
    assert files == [".lock", "messages.jsonl", "meta.json", "state-000004.safetensors"]  # old states removed
    assert store.load(KEY).state.equal(make_state(3.0))


def test_list_delete_exists(store):
    assert store.list() == [] and not store.exists(KEY) and store.load(KEY) is None
    for user, session in [("bob", "b"), ("alice", "z"), ("alice", "a")]:
        store.create(SessionKey(user_id=user, session_id=session), FP)
    store.create(SessionKey(session_id="anon"), FP)
    assert [str(m.key) for m in store.list()] == ["alice/a", "alice/z", "bob/b", "default/anon"]
    assert [str(m.key) for m in store.list("alice")] == ["alice/a", "alice/z"]
    assert store.list("nobody") == []
    key = SessionKey(user_id="alice", session_id="a")
    with pytest.raises(SessionExistsError, match="alice/a"):
        store.create(key, FP)
    assert store.exists(key)
    assert store.delete(key) is True
    assert not store.exists(key) and store.load(key) is None and store.delete(key) is False
    assert [str(m.key) for m in store.list("alice")] == ["alice/z"]
    assert store.delete(SessionKey(user_id="ghost", session_id="x")) is False
    recreated = store.create(key, FP)  # a deleted id can be used again, empty
    assert recreated.messages == [] and store.load(key).metadata.turn_count == 0


def test_commit_after_delete_or_from_stale_record(store):
    record = store.create(KEY, FP)
    newer = store.commit(record, new_messages=[msg("a")], state=make_state(1.0))
    with pytest.raises(SessionConflictError, match="store.lock"):
        store.commit(record, new_messages=[msg("b")], state=make_state(2.0))
    store.delete(KEY)
    with pytest.raises(SessionNotFoundError, match="alice/chat-1"):
        store.commit(newer, new_messages=[msg("c")], state=None)


def test_load_or_create_and_require(store):
    with pytest.raises(SessionNotFoundError):
        store.require(KEY)
    record = store.load_or_create(KEY, FP)
    store.commit(record, new_messages=[msg("x")], state=make_state(1.0))
    assert store.load_or_create(KEY, FP).messages[0].content == "x"


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DELTAMEM_HOME", str(tmp_path / "home"))
    assert default_store_root() == tmp_path / "home" / "sessions"
    assert DirectorySessionStore().root == tmp_path / "home" / "sessions"
    monkeypatch.delenv("DELTAMEM_HOME")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_store_root() == Path.home() / ".local" / "share" / "deltamem" / "sessions"


def test_store_is_an_abc():
    assert issubclass(DirectorySessionStore, SessionStore)
    with pytest.raises(TypeError):
        SessionStore()  # type: ignore[abstract]


# -- fingerprints ---------------------------------------------------------------------------------
def test_fingerprint_mismatch(store):
    two_turns(store)
    other = FP.model_copy(update={"adapter": "sha-other", "config": "cfg-2"})
    assert len(FP.mismatch(other)) == 2 and FP.mismatch(FP) == []
    with pytest.raises(SessionMismatchError) as info:
        store.load(KEY, expect=other)
    text = str(info.value)
    assert "alice/chat-1" in text and "'none'" in text and "'sha-other'" in text and "cfg-2" in text
    assert "adapter" in text and "config" in text and "deltamem sessions delete alice/chat-1" in text
    assert info.value.saved == FP and info.value.expected == other
    assert store.load(KEY, expect=FP) is not None


# -- corruption -----------------------------------------------------------------------------------
def test_corrupted_state_file(store):
    record = two_turns(store)
    path = store.session_dir(KEY) / record.metadata.state_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SessionCorruptError, match="state-000002.safetensors.*checksum"):
        store.load(KEY)
    path.unlink()
    with pytest.raises(SessionCorruptError, match="missing"):
        store.load(KEY)


def test_edited_log_line(store):
    two_turns(store)
    path = store.session_dir(KEY) / "messages.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"hello!"', b'"HELLO!"'))  # same length
    with pytest.raises(SessionCorruptError, match="messages.jsonl.*line 2.*hash chain"):
        store.load(KEY)


def test_truncated_log(store):
    two_turns(store)
    path = store.session_dir(KEY) / "messages.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(SessionCorruptError, match="truncated"):
        store.load(KEY)
    # a whole last line removed, with the tail padded back to the committed length
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + b" " * (len(lines[-1]) - 1) + b"\n")
    with pytest.raises(SessionCorruptError, match="messages.jsonl"):
        store.load(KEY)
    path.unlink()
    with pytest.raises(SessionCorruptError, match="missing"):
        store.load(KEY)


def test_bad_meta(store):
    two_turns(store)
    path = store.session_dir(KEY) / "meta.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(SessionCorruptError, match="schema_version 99.*newer"):
        store.load(KEY)
    path.write_text(json.dumps({**meta, "key": {"user_id": "bob", "session_id": "x"}}))
    with pytest.raises(SessionCorruptError, match="bob/x"):
        store.load(KEY)
    path.write_text("{not json")
    with pytest.raises(SessionCorruptError, match="meta.json"):
        store.load(KEY)
    assert store.list() == []  # list skips (and logs) a session it cannot read


# -- crashes --------------------------------------------------------------------------------------
def test_crash_before_meta_keeps_previous_turn(store, monkeypatch):
    record = two_turns(store)
    before = store.load(KEY)

    def boom(directory, meta):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(DirectorySessionStore, "_write_meta", staticmethod(boom))
    with pytest.raises(OSError, match="simulated"):
        store.commit(record, new_messages=[msg("lost 1"), msg("lost 2")], state=make_state(9.0))
    monkeypatch.undo()

    assert len(log_lines(store, KEY)) == 5  # the uncommitted tail is on disk...
    assert (store.session_dir(KEY) / "state-000003.safetensors").exists()
    after = store.load(KEY)  # ...and ignored
    assert after.metadata == before.metadata and after.messages == before.messages
    assert after.state.equal(before.state)

    record = store.commit(record, new_messages=[msg("kept")], state=make_state(4.0))
    lines = log_lines(store, KEY)
    assert [entry["message"]["content"] for entry in lines] == ["hi", "hello!", "how are you?", "kept"]
    assert_chain_verifies(lines)
    assert store.load(KEY).state.equal(make_state(4.0))
    states = sorted(p.name for p in store.session_dir(KEY).glob("state-*"))
    assert states == ["state-000003.safetensors"]


def test_hand_written_tail_is_ignored_then_truncated(store):
    record = two_turns(store)
    path = store.session_dir(KEY) / "messages.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"i": 3, "chain": "junk", "message": {"role": "user", "content": "half')  # torn line
    assert store.load(KEY).messages == record.messages
    store.commit(record, new_messages=[msg("next")], state=None)
    assert_chain_verifies(log_lines(store, KEY))
    assert len(store.load(KEY).messages) == 4


def test_orphan_state_file_is_ignored(store):
    record = two_turns(store)
    orphan = store.session_dir(KEY) / "state-000099.safetensors"
    orphan.write_bytes(b"garbage")
    (store.session_dir(KEY) / ".meta.json.abc.tmp").write_bytes(b"half")
    assert store.load(KEY).state.equal(make_state(2.0))
    store.commit(record, new_messages=[], state=make_state(5.0))
    assert not orphan.exists() and not (store.session_dir(KEY) / ".meta.json.abc.tmp").exists()


def test_keyboard_interrupt_during_state_write(store, monkeypatch):
    record = two_turns(store)
    real_replace = os.replace

    def interrupted(src, dst, *args, **kwargs):
        if Path(dst).name.startswith("state-"):
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.commit(record, new_messages=[msg("interrupted")], state=make_state(8.0))
    monkeypatch.undo()
    directory = store.session_dir(KEY)
    assert not list(directory.glob(".*.tmp"))  # atomic_write_bytes cleaned up
    loaded = store.load(KEY)
    assert loaded.state.equal(make_state(2.0)) and loaded.messages == record.messages
    with store.lock(KEY, timeout=0):  # the lock was released
        pass
    store.commit(record, new_messages=[msg("retry")], state=make_state(3.0))
    assert [m.content for m in store.load(KEY).messages][-1] == "retry"


# -- concurrency ----------------------------------------------------------------------------------
def _one_turn(store: DirectorySessionStore, key: SessionKey, tag: str, i: int) -> None:
    with store.lock(key, timeout=60):
        record = store.load(key, expect=FP)
        turn = record.metadata.turn_count + 1
        store.commit(record, new_messages=[msg(f"{tag}-{i}")], state=make_state(float(turn)), tokens_written=1)


def _process_worker(root: str, tag: str, n: int) -> None:
    torch.set_num_threads(1)
    store = DirectorySessionStore(root)
    for i in range(n):
        _one_turn(store, KEY, tag, i)


def _check_concurrent_result(store: DirectorySessionStore, tags: list[str], n: int) -> None:
    record = store.load(KEY, expect=FP)  # verifies the state checksum and the whole chain
    total = len(tags) * n
    assert (record.metadata.turn_count, record.metadata.message_count, record.metadata.tokens_written) == (
        total,
        total,
        total,
    )
    assert record.state.equal(make_state(float(total)))  # every turn saw the previous one
    lines = log_lines(store, KEY)
    assert len(lines) == total
    assert_chain_verifies(lines)
    contents = [entry["message"]["content"] for entry in lines]
    for tag in tags:
        assert [c for c in contents if c.startswith(f"{tag}-")] == [f"{tag}-{i}" for i in range(n)]
    assert sorted(p.name for p in store.session_dir(KEY).glob("state-*")) == [f"state-{total:06d}.safetensors"]


def test_concurrent_processes(store):
    store.create(KEY, FP)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(str(store.root), tag, 20)) for tag in ("p0", "p1")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    _check_concurrent_result(store, ["p0", "p1"], 20)


# Threads taking turns (some sharing one store object) are tested on both stores by
# tests/session/test_redis_store.py::test_concurrent_threads_take_turns.


def test_lock_is_exclusive_and_reentrant(store):
    store.create(KEY, FP)
    held, release = threading.Event(), threading.Event()

    def holder():
        with store.lock(KEY):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(SessionLockTimeout, match="alice/chat-1"):
            with store.lock(KEY, timeout=0.1):
                pass
    finally:
        release.set()
        thread.join()
    with store.lock(KEY):  # reentrant: commit inside a held lock does not deadlock
        record = store.load(KEY)
        with DirectorySessionStore(store.root).lock(KEY, timeout=1):
            store.commit(record, new_messages=[msg("x")], state=None)


def test_records_module_exports():
    assert records_module.SESSION_SCHEMA_VERSION == 1
    assert store_module.SessionStore is SessionStore


def test_head_reads_the_committed_metadata_only(tmp_path):
    store = DirectorySessionStore(tmp_path)
    key = SessionKey(user_id="u", session_id="s")
    assert store.head(key) is None
    record = store.create(key, Fingerprint(backbone="b", backbone_signature="x", config="c"))
    record = store.commit(record, new_messages=[ChatMessage(role="user", content="hi")], state=None)
    assert store.head(key) == record.metadata
    (store.session_dir(key) / "messages.jsonl").write_text("tampered\n")  # head does not read the log
    assert store.head(key).message_count == 1


def test_rewrite_replaces_log_and_state_atomically(tmp_path, monkeypatch):
    store = DirectorySessionStore(tmp_path)
    key = SessionKey(user_id="u", session_id="forget")
    record = store.create(key, Fingerprint(backbone="b", backbone_signature="x", config="c"))
    said = [ChatMessage(role="user", content=f"message {i}") for i in range(4)]
    old_state = DeltaMemState({0: torch.ones(1, 1, 8, 8)})
    record = store.commit(record, new_messages=said, state=old_state)

    # a crash before the commit point leaves the previous turn exactly as it was
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DirectorySessionStore, "_write_meta", staticmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        store.rewrite(record, messages=said[1:], state=DeltaMemState({0: torch.zeros(1, 1, 8, 8)}))
    monkeypatch.undo()
    still = store.load(key)
    assert [m.content for m in still.messages] == [m.content for m in said] and still.state.equal(old_state)

    kept = [said[0], said[2]]
    new_state = DeltaMemState({0: torch.full((1, 1, 8, 8), 2.0)})
    record = store.rewrite(record, messages=kept, state=new_state, tokens_written=7)
    loaded = store.load(key)
    assert [m.content for m in loaded.messages] == ["message 0", "message 2"]
    assert loaded.state.equal(new_state) and loaded.metadata.tokens_written == 7
    assert loaded.metadata.turn_count == 2 and loaded.metadata.message_count == 2
    files = sorted(p.name for p in store.session_dir(key).iterdir() if not p.name.startswith("."))
    assert files == ["messages-000002.jsonl", "meta.json", "state-000002.safetensors"]
    # later turns append to the rewritten log
    store.commit(record, new_messages=[ChatMessage(role="assistant", content="ok")], state=new_state)
    assert [m.content for m in store.load(key).messages] == ["message 0", "message 2", "ok"]
