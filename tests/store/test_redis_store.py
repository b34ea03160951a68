"""RedisSessionStore against a REAL redis-server (started per module on loopback), and the
behaviour both stores share, run on both: round trips, verification, optimistic concurrency,
leases across threads and processes, a dead holder's lease expiring, safe release."""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.session import (
    ChatMessage,
    DirectorySessionStore,
    Fingerprint,
    SessionConflictError,
    SessionCorruptError,
    SessionExistsError,
    SessionKey,
    SessionLockTimeout,
    SessionMismatchError,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
    open_session_store,
)
from deltamem_agents.store.redis_store import (
    RedisSessionStore,
    SessionLeaseLost,
    redact_url,
)
from tests.redis_server import redis_prefix, redis_server  # noqa: F401 - fixtures

FP = Fingerprint(backbone="tiny-llama", backbone_signature="sig-1", adapter="none", config="cfg-1")
KEY = SessionKey(user_id="alice", session_id="chat-1")
ROOT = Path(__file__).resolve().parents[2]


def make_state(value: float, layers=(0, 3)) -> DeltaMemState:
    return DeltaMemState({i: torch.full((1, 2, 4, 4), value) + torch.arange(16.0).view(4, 4) for i in layers})


def msg(content: str, role: str = "user", **kw) -> ChatMessage:
    return ChatMessage(role=role, content=content, **kw)


@pytest.fixture
def rstore(redis_server, redis_prefix) -> RedisSessionStore:  # noqa: F811
    return RedisSessionStore(redis_server.url, prefix=redis_prefix, lease_ttl=5.0)


@pytest.fixture(params=["directory", "redis"])
def store(request, tmp_path) -> SessionStore:
    """Each shared behaviour test runs on both stores."""
    if request.param == "directory":
        return DirectorySessionStore(tmp_path / "sessions")
    return request.getfixturevalue("rstore")


def same_store(store: SessionStore) -> SessionStore:
    """Another store object on the same storage (what another process would open)."""
    if isinstance(store, RedisSessionStore):
        return RedisSessionStore(store.url, prefix=store.prefix, lease_ttl=store.lease_ttl)
    return DirectorySessionStore(store.root)


def two_turns(store: SessionStore):
    record = store.create(KEY, FP)
    record = store.commit(record, new_messages=[msg("hi"), msg("hello!", "assistant")], state=make_state(1.0))
    return store.commit(record, new_messages=[msg("how are you?")], state=make_state(2.0), tokens_written=7)


# -- shared behaviour, both stores ----------------------------------------------------------------
def test_round_trip(store):
    record = store.create(KEY, FP, extra={"title": "first chat"})
    messages = [
        msg("You are helpful.", "system"),
        msg("what's 2+2?", metadata={"source": "cli", "turn": 0}),
        msg("", "assistant", tool_calls=[{"id": "c1", "type": "function", "function": {"name": "add"}}]),
        msg("4", "tool", tool_call_id="c1", name="add"),
        msg("It is 4 — ünïcode ✓", "assistant"),
    ]
    committed = store.commit(record, new_messages=messages, state=make_state(0.5), tokens_written=42)
    assert record.metadata.turn_count == 0  # the input record is untouched
    loaded = same_store(store).load(KEY, expect=FP)
    assert loaded.state.equal(make_state(0.5)) and loaded.state.layers.keys() == {0, 3}
    assert loaded.messages == messages and loaded.metadata == committed.metadata
    meta = loaded.metadata
    assert (meta.turn_count, meta.message_count, meta.tokens_written) == (1, 5, 42)
    assert meta.extra == {"title": "first chat"} and meta.created_at.tzinfo is not None

    record = store.commit(committed, new_messages=[msg("again")], state=None)  # a turn may store no state
    loaded = store.load(KEY)
    assert loaded.state is None and [m.content for m in loaded.messages][-1] == "again"
    assert loaded.metadata.turn_count == 2 and loaded.metadata.message_count == 6


def test_rewrite_replaces_log_and_state(store):
    record = two_turns(store)
    kept = [record.messages[0], record.messages[2]]
    record = store.rewrite(record, messages=kept, state=make_state(9.0), tokens_written=3)
    loaded = store.load(KEY, expect=FP)
    assert [m.content for m in loaded.messages] == ["hi", "how are you?"] and loaded.state.equal(make_state(9.0))
    assert (loaded.metadata.turn_count, loaded.metadata.message_count, loaded.metadata.tokens_written) == (3, 2, 3)
    record = store.commit(record, new_messages=[msg("after")], state=make_state(1.5))  # appends after the rewrite
    assert [m.content for m in store.load(KEY).messages] == ["hi", "how are you?", "after"]


def test_list_delete_exists_head(store):
    assert store.list() == [] and not store.exists(KEY) and store.load(KEY) is None and store.head(KEY) is None
    for user, session in [("bob", "b"), ("alice", "z"), ("alice", "a"), ("alice.b", "x")]:
        store.create(SessionKey(user_id=user, session_id=session), FP)
    store.create(SessionKey(session_id="anon"), FP)
    assert [str(m.key) for m in store.list()] == ["alice/a", "alice/z", "alice.b/x", "bob/b", "default/anon"]
    assert [str(m.key) for m in store.list("alice")] == ["alice/a", "alice/z"]
    assert store.list("nobody") == []
    key = SessionKey(user_id="alice", session_id="a")
    with pytest.raises(SessionExistsError, match="alice/a"):
        store.create(key, FP)
    record = store.commit(store.load(key), new_messages=[msg("x")], state=make_state(1.0))
    assert store.head(key) == record.metadata and store.exists(key)
    assert store.delete(key) is True
    assert not store.exists(key) and store.load(key) is None and store.delete(key) is False
    assert [str(m.key) for m in store.list("alice")] == ["alice/z"]
    assert store.create(key, FP).messages == [] and store.load(key).metadata.turn_count == 0  # id reusable, empty


def test_stale_record_and_deleted_session_are_refused(store):
    record = store.create(KEY, FP)
    newer = store.commit(record, new_messages=[msg("a")], state=make_state(1.0))
    with pytest.raises(SessionConflictError, match="store.lock"):
        store.commit(record, new_messages=[msg("b")], state=make_state(2.0))
    with pytest.raises(SessionConflictError):
        store.rewrite(record, messages=[], state=None)
    assert [m.content for m in store.load(KEY).messages] == ["a"]  # nothing of the refused commits
    store.delete(KEY)
    with pytest.raises(SessionNotFoundError, match="alice/chat-1"):
        store.commit(newer, new_messages=[msg("c")], state=None)


def test_fingerprint_mismatch_is_refused(store):
    two_turns(store)
    other = FP.model_copy(update={"adapter": "sha-other", "config": "cfg-2"})
    with pytest.raises(SessionMismatchError) as info:
        store.load(KEY, expect=other)
    assert info.value.saved == FP and info.value.expected == other
    assert "deltamem sessions delete alice/chat-1" in str(info.value)
    with pytest.raises(SessionMismatchError):
        store.load_or_create(KEY, other)
    assert store.load(KEY, expect=FP) is not None


def test_lock_is_exclusive_between_threads_and_reentrant(store):
    store.create(KEY, FP)
    held, release = threading.Event(), threading.Event()

    def holder():
        with store.lock(KEY):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        started = time.monotonic()
        with pytest.raises(SessionLockTimeout, match="alice/chat-1"):
            with same_store(store).lock(KEY, timeout=0.2):
                pass
        assert 0.15 <= time.monotonic() - started < 2.0
    finally:
        release.set()
        thread.join()
    with store.lock(KEY):  # reentrant, also through another object on the same storage
        record = store.load(KEY)
        with same_store(store).lock(KEY, timeout=1):
            store.commit(record, new_messages=[msg("x")], state=None)
    with store.lock(KEY, timeout=0):  # released
        pass


def _one_turn(store: SessionStore, key: SessionKey, tag: str, i: int) -> None:
    with store.lock(key, timeout=60):
        record = store.load(key, expect=FP)
        turn = record.metadata.turn_count + 1
        store.commit(record, new_messages=[msg(f"{tag}-{i}")], state=make_state(float(turn)), tokens_written=1)


def _check_turns(store: SessionStore, tags: list[str], n: int) -> None:
    record = store.load(KEY, expect=FP)  # verifies the state checksum and the whole chain
    total = len(tags) * n
    meta = record.metadata
    assert (meta.turn_count, meta.message_count, meta.tokens_written) == (total, total, total)
    assert record.state.equal(make_state(float(total)))  # every turn saw the previous one
    contents = [m.content for m in record.messages]
    for tag in tags:
        assert [c for c in contents if c.startswith(f"{tag}-")] == [f"{tag}-{i}" for i in range(n)]


def test_concurrent_threads_take_turns(store):
    store.create(KEY, FP)
    errors: list[BaseException] = []

    def worker(tag: str) -> None:
        try:
            own = store if tag in ("t0", "t1") else same_store(store)
            for i in range(8):
                _one_turn(own, KEY, tag, i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{j}",)) for j in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    _check_turns(store, [f"t{j}" for j in range(4)], 8)


# -- Redis: verification ----------------------------------------------------------------------------
def test_corruption_in_redis_is_detected(rstore):
    two_turns(rstore)
    client = rstore.client
    state_key = rstore.key_name(KEY, "state")
    good = client.get(state_key)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    client.set(state_key, bytes(bad))
    with pytest.raises(SessionCorruptError, match="state at redis key.*checksum"):
        rstore.load(KEY)
    client.delete(state_key)
    with pytest.raises(SessionCorruptError, match="missing"):
        rstore.load(KEY)
    client.set(state_key, good)
    assert rstore.load(KEY).state.equal(make_state(2.0))

    log_key = rstore.key_name(KEY, "log")
    line = client.lindex(log_key, 1)
    client.lset(log_key, 1, line.replace(b'"hello!"', b'"HELLO!"'))
    with pytest.raises(SessionCorruptError, match="message log.*line 2.*hash chain"):
        rstore.load(KEY)
    client.lset(log_key, 1, line)
    client.rpop(log_key)
    with pytest.raises(SessionCorruptError, match="truncated"):
        rstore.load(KEY)

    meta_key = rstore.key_name(KEY, "meta")
    meta = json.loads(client.get(meta_key))
    client.set(meta_key, json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(SessionCorruptError, match="schema_version 99.*newer"):
        rstore.load(KEY)
    client.set(meta_key, json.dumps({**meta, "key": {"user_id": "bob", "session_id": "x"}}))
    with pytest.raises(SessionCorruptError, match="bob/x"):
        rstore.head(KEY)
    assert rstore.list() == []  # list skips (and logs) a session it cannot read


def test_a_commit_racing_another_between_check_and_exec_is_refused(rstore, monkeypatch):
    """The version check and the write are one WATCH/MULTI: a commit landing in between wins,
    the other fails instead of overwriting it."""
    record = two_turns(rstore)
    other = same_store(rstore)
    real = RedisSessionStore._check_lease
    raced = []

    def race(self, key):
        if self is rstore and not raced:
            raced.append(True)
            other.commit(other.load(key), new_messages=[msg("sneaked in")], state=make_state(5.0))
        return real(self, key)

    monkeypatch.setattr(RedisSessionStore, "_check_lease", race)
    with pytest.raises(SessionConflictError, match="another writer"):
        rstore.commit(record, new_messages=[msg("lost")], state=make_state(6.0))
    monkeypatch.undo()
    loaded = rstore.load(KEY, expect=FP)
    assert [m.content for m in loaded.messages][-1] == "sneaked in" and loaded.state.equal(make_state(5.0))
    assert loaded.metadata.turn_count == 3


def test_prefixes_are_separate_namespaces(redis_server, rstore):  # noqa: F811
    two_turns(rstore)
    neighbour = RedisSessionStore(redis_server.url, prefix=rstore.prefix + "other:")
    assert neighbour.list() == [] and not neighbour.exists(KEY) and neighbour.load(KEY) is None
    neighbour.create(KEY, FP)  # the same key in another namespace
    assert rstore.load(KEY).metadata.turn_count == 2 and neighbour.load(KEY).metadata.turn_count == 0
    assert {k.decode().split(":", 1)[0] + ":" for k in rstore.client.keys(f"{rstore.prefix}*")} == {rstore.prefix}


# -- Redis: leases ------------------------------------------------------------------------------------
def test_a_lease_is_renewed_while_held(redis_server, redis_prefix):  # noqa: F811
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix, lease_ttl=0.6)
    with store.lock(KEY):
        time.sleep(1.5)  # 2.5 TTLs: without renewal the lease would be gone
        assert store.client.pttl(store.key_name(KEY, "lock")) > 0
        outcome: list[BaseException | None] = []

        def contender():  # another thread (the holding thread would re-enter)
            try:
                with same_store(store).lock(KEY, timeout=0.1):
                    outcome.append(None)
            except SessionLockTimeout as exc:
                outcome.append(exc)

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
        assert isinstance(outcome[0], SessionLockTimeout)
    assert not store.client.exists(store.key_name(KEY, "lock"))  # released


def test_an_expired_holder_cannot_release_or_commit_over_a_new_holder(redis_server, redis_prefix, monkeypatch):  # noqa: F811
    from deltamem_agents.store import redis_store

    # a holder that stalls (its renewals never run) for longer than its lease
    monkeypatch.setattr(redis_store._Leases, "_renew", staticmethod(lambda lease: None))
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix, lease_ttl=0.5)
    record = store.create(KEY, FP)
    lock_key = store.key_name(KEY, "lock")
    taken, done = threading.Event(), threading.Event()
    second_token: list[bytes] = []

    def newcomer():
        with RedisSessionStore(store.url, prefix=store.prefix, lease_ttl=30).lock(KEY, timeout=10):
            second_token.append(store.client.get(lock_key))
            taken.set()
            done.wait(10)

    with store.lock(KEY):
        first_token = store.client.get(lock_key)
        thread = threading.Thread(target=newcomer)  # takes the lock once the lease ran out
        thread.start()
        assert taken.wait(10)
        assert second_token[0] != first_token
        with pytest.raises(SessionLeaseLost, match="lease"):
            store.commit(record, new_messages=[msg("too late")], state=None)
    # leaving the block ran the compare-and-delete: the newcomer's lock is intact
    assert store.client.get(lock_key) == second_token[0]
    done.set()
    thread.join()
    assert not store.client.exists(lock_key) and store.load(KEY).messages == []


_HOLDER = """
import sys, time
from deltamem_agents.store.redis_store import RedisSessionStore
store = RedisSessionStore(sys.argv[1], prefix=sys.argv[2], lease_ttl=float(sys.argv[3]))
with store.lock("alice/chat-1"):
    print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(url: str, prefix: str, ttl: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, url, prefix, str(ttl)], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_the_lock_is_exclusive_across_processes_and_a_dead_holders_lease_expires(redis_server, redis_prefix):  # noqa: F811
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix, lease_ttl=1.0)
    holder = _start_holder(redis_server.url, redis_prefix, 1.0)
    try:
        time.sleep(1.5)  # past one TTL: the holder's renewals keep it
        with pytest.raises(SessionLockTimeout, match="lease expires within 1s"):
            with store.lock(KEY, timeout=0.3):
                pass
        holder.send_signal(signal.SIGKILL)  # a crash: nothing released
        holder.wait(10)
        assert store.client.exists(store.key_name(KEY, "lock"))
        started = time.monotonic()
        with store.lock(KEY, timeout=10):
            waited = time.monotonic() - started
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert waited <= 1.5  # at most one TTL after the last renewal


def _process_worker(url: str, prefix: str, tag: str, n: int) -> None:
    torch.set_num_threads(1)
    store = RedisSessionStore(url, prefix=prefix)
    for i in range(n):
        _one_turn(store, KEY, tag, i)


def test_two_processes_take_turns_on_one_session(rstore):
    rstore.create(KEY, FP)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(rstore.url, rstore.prefix, tag, 15)) for tag in ("p0", "p1")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    _check_turns(rstore, ["p0", "p1"], 15)


# -- selection by URL ---------------------------------------------------------------------------------
def test_open_session_store_picks_the_backend(tmp_path, redis_server, redis_prefix, monkeypatch):  # noqa: F811
    directory = open_session_store(tmp_path / "s", lock_timeout=3)
    assert isinstance(directory, DirectorySessionStore) and directory.root == tmp_path / "s" and directory.lock_timeout == 3
    assert isinstance(open_session_store(str(tmp_path / "s")), DirectorySessionStore)
    assert open_session_store(f"file://{tmp_path}/s").root == tmp_path / "s"
    assert open_session_store(directory) is directory
    redis = open_session_store(f"{redis_server.url}?prefix={redis_prefix}&lease_ttl=7&socket_timeout=5", lock_timeout=9)
    assert isinstance(redis, RedisSessionStore)
    assert (redis.prefix, redis.lease_ttl, redis.lock_timeout) == (redis_prefix, 7.0, 9.0)
    assert open_session_store(f"{redis_server.url}?prefix=a:", prefix="b:").prefix == "b:"  # keywords win
    with pytest.raises(SessionStoreError, match="redis://"):  # also a ValueError
        open_session_store("s3://bucket/sessions")
    from deltamem_agents.server import ServerSettings

    assert ServerSettings(store=redis_server.url).store == redis_server.url
    with pytest.raises(ValueError, match="unknown session store"):
        ServerSettings(store="s3://bucket/sessions")
    with pytest.raises(ValueError, match="give the session store once"):
        ServerSettings(store=redis_server.url, home=tmp_path)
    monkeypatch.setitem(sys.modules, "redis", None)  # the client package not installed
    with pytest.raises(SessionStoreError, match=r"pip install 'deltamem-agents\[redis\]'"):
        open_session_store(redis_server.url)
    monkeypatch.undo()
    with pytest.raises(SessionStoreError, match="cannot reach the Redis session store"):
        open_session_store("redis://127.0.0.1:1/0")
    assert redact_url("redis://user:secret@host:6380/1") == "redis://user:***@host:6380/1"
    assert "secret" not in repr(RedisSessionStore(f"redis://:secret@127.0.0.1:{redis_server.port}/0", check=False))


# -- a real session, persisted through Redis ---------------------------------------------------------------
def test_a_memory_session_persists_through_redis_and_resumes(chat_tokenizer, redis_server, redis_prefix):  # noqa: F811
    from tests.tiny_models import tiny_model, tiny_runtime

    url = f"{redis_server.url}?prefix={redis_prefix}"
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    runtime = tiny_runtime(chat_tokenizer, url, window=256, seed=1, model=model)
    assert isinstance(runtime.store, RedisSessionStore)
    session = runtime.session("persist", user_id="ada")
    session.ingest([{"role": "user", "content": "My favourite colour is teal."}, {"role": "assistant", "content": "Teal, noted."}])
    meta = runtime.save(session)
    assert meta.turn_count == 1 and meta.message_count == 2 and meta.tokens_written > 0

    twin = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)  # same weights
    again = tiny_runtime(chat_tokenizer, url, window=256, seed=1, model=twin)  # "another process"
    resumed = again.session("persist", user_id="ada")
    assert [m.content for m in resumed.messages] == [m.content for m in session.messages]
    assert resumed.state.equal(session.state) and resumed.state.norms() == session.state.norms()
    resumed.reply("What is my favourite colour?", max_new_tokens=4)
    assert again.save(resumed).turn_count == 2
    # the first runtime sees the other's commit and reopens the session from Redis
    assert len(runtime.session("persist", user_id="ada").messages) == 4
    assert [m.key.session_id for m in again.sessions("ada")] == ["persist"]


def test_the_cli_reads_sessions_from_the_store_deltamem_store_names(rstore, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from deltamem_agents.cli import app

    two_turns(rstore)
    monkeypatch.setenv("DELTAMEM_STORE", f"{rstore.url}?prefix={rstore.prefix}")
    runner = CliRunner()
    listed = runner.invoke(app, ["sessions", "list"])
    assert listed.exit_code == 0, listed.output
    assert "alice" in listed.output and "chat-1" in listed.output and rstore.prefix in listed.output
    shown = runner.invoke(app, ["sessions", "show", "alice/chat-1"])
    assert shown.exit_code == 0 and "how are you?" in shown.output and "redis://" in shown.output
    inspected = runner.invoke(app, ["inspect", "--session", "alice/chat-1"])
    assert inspected.exit_code == 0, inspected.output
    assert "turn 2, 3 messages" in inspected.output and "redis://" in inspected.output
    assert runner.invoke(app, ["sessions", "delete", "alice/chat-1", "--yes"]).exit_code == 0
    assert not rstore.exists(KEY)
    # --home (a folder) wins over $DELTAMEM_STORE
    empty = runner.invoke(app, ["sessions", "list", "--home", str(tmp_path / "folder")])
    assert empty.exit_code == 0 and "no sessions in" in empty.output and str(tmp_path) in empty.output.replace("\n", "")
