"""Export / import archives (deltamem_agents.memory.archive) on a tiny model, a real embedded
Chroma log (hashing embeddings) and a real redis-server: byte-identical round trips between
stores, every damage case refused with the target untouched, another model's states refused
unless replayed, existing sessions refused unless forced."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from deltamem_agents import DeltaMemConfig
from deltamem_agents.cli._runtime import state_digest
from deltamem_agents.errors import ConflictError, UserError
from deltamem_agents.memory.archive import (
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveMismatchError,
    ArchiveNotFoundError,
    build_archive,
    export_archive,
    import_archive,
    read_archive,
)
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.memory.textlog import TextLog, TextLogConfig
from deltamem_agents.session import ChatMessage, SessionKey
from tests.memory.hashing import HashingEmbedding
from tests.redis_server import redis_prefix, redis_server  # noqa: F401 - fixtures
from tests.tiny_models import tiny_runtime


def open_log(path) -> TextLog:
    return TextLog(TextLogConfig(path=path), embedding_function=HashingEmbedding())


@pytest.fixture
def logs(tmp_path):
    opened: list[TextLog] = []

    def make(name: str) -> TextLog:
        log = open_log(tmp_path / name)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


@pytest.fixture
def source(chat_tokenizer, tmp_path, logs):
    """A folder-store runtime with two sessions of ada (and one of bob), logged in a text log."""
    runtime = tiny_runtime(chat_tokenizer, tmp_path / "src")
    log = logs("src-log")
    memory = HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()]))
    memory.add([{"role": "user", "content": "My ferret is Quillon."}, {"role": "assistant", "content": "Noted."}],
               session_id="pets", user_id="ada", metadata={"topic": "pets"})
    memory.add("I live in Ljubljana.", session_id="pets", user_id="ada")
    memory.add("My locker code is 7312.", session_id="gym", user_id="ada")
    memory.ingest_document("Deadline moved to Friday. The budget is 12k.", session_id="gym", user_id="ada", source="notes.txt")
    memory.add("Unrelated: bob likes tea.", session_id="tea", user_id="bob")
    return runtime, log


def _same_members(a: bytes, b: bytes) -> None:
    za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    assert za.namelist() == zb.namelist()
    for name in za.namelist():
        assert za.read(name).decode(errors="replace") == zb.read(name).decode(errors="replace"), name


def records(store, user_id="ada"):
    return {str(m.key): store.require(m.key) for m in store.list(user_id)}


def test_dir_to_redis_to_archive_is_byte_identical(source, chat_tokenizer, logs, tmp_path, request):
    from deltamem_agents.store.redis_store import RedisSessionStore

    runtime, log = source
    first = export_archive(runtime.store, tmp_path / "a.zip", user_id="ada", textlog=log)
    assert first.sessions == ["ada/gym", "ada/pets"] and first.messages == 5 and first.log_entries >= 5

    server, prefix = request.getfixturevalue("redis_server"), request.getfixturevalue("redis_prefix")
    target = tiny_runtime(chat_tokenizer, RedisSessionStore(server.url, prefix=prefix))
    target_log = logs("redis-log")
    report = import_archive(tmp_path / "a.zip", target, textlog=target_log)
    assert report.sessions == first.sessions and report.log_entries == first.log_entries and not report.replayed

    again, second = build_archive(target.store, user_id="ada", textlog=target_log)
    _same_members(again, (tmp_path / "a.zip").read_bytes())
    assert again == (tmp_path / "a.zip").read_bytes()
    assert second.sha256 == first.sha256 and second.state_sha256 == first.state_sha256
    for key, record in records(runtime.store).items():
        imported = target.store.require(SessionKey.parse(key))
        assert [m.model_dump() for m in imported.messages] == [m.model_dump() for m in record.messages]
        assert state_digest(imported.state) == state_digest(record.state)
        assert imported.metadata.extra == record.metadata.extra
        assert imported.metadata.tokens_written == record.metadata.tokens_written
    # the imported log answers searches with the entries' ids and metadata kept
    hits = target_log.search("locker code", user_id="ada", session_id="gym", k=1)
    assert "7312" in hits[0].text and hits[0].id in {h.id for h in log.list(user_id="ada", session_id="gym")}


def test_dir_to_dir_round_trip_and_one_session(source, chat_tokenizer, logs, tmp_path):
    runtime, log = source
    data, report = build_archive(runtime.store, user_id="ada", session_id="pets", textlog=log)
    assert report.sessions == ["ada/pets"]
    assert build_archive(runtime.store, user_id="ada", session_id="pets", textlog=log)[0] == data  # deterministic
    target = tiny_runtime(chat_tokenizer, tmp_path / "dst")
    target_log = logs("dst-log")
    import_archive(data, target, textlog=target_log)
    assert [str(m.key) for m in target.store.list()] == ["ada/pets"]
    assert build_archive(target.store, user_id="ada", textlog=target_log)[0] == data
    # the imported session goes on as any other: the next turn appends to it
    memory = HybridMemory(target, target_log, MemoryRouter(policies=[NeverRetrieve()]))
    memory.add("My sister is Ana.", session_id="pets", user_id="ada")
    assert target.store.require(SessionKey(user_id="ada", session_id="pets")).metadata.message_count == 4

    manifest = read_archive(data).manifest
    assert manifest.fingerprint == runtime.fingerprint and manifest.format_version == 1 and manifest.textlog
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == ["manifest.json", "sessions/ada/pets/session.json", "sessions/ada/pets/messages.jsonl",
                     "sessions/ada/pets/state.safetensors", "sessions/ada/pets/textlog.jsonl"]


def test_without_a_text_log_the_archive_holds_sessions_only(source, chat_tokenizer, tmp_path):
    runtime, _ = source
    data, report = build_archive(runtime.store, user_id="ada")
    assert report.log_entries == 0 and not read_archive(data).manifest.textlog
    target = tiny_runtime(chat_tokenizer, tmp_path / "dst")
    assert import_archive(data, target).log_entries == 0


def _rezip(data: bytes, change) -> bytes:
    """The archive's members passed through ``change(name, bytes) -> bytes | None`` (None drops it)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            blob = change(name, src.read(name))
            if blob is not None:
                dst.writestr(name, blob)
    return out.getvalue()


def _manifest(edit):
    def change(name, blob):
        if name != "manifest.json":
            return blob
        data = json.loads(blob)
        edit(data)
        return json.dumps(data).encode()
    return change


def _bump(data):
    data["format_version"] = 2


def _forge_message(name, blob):
    return blob.replace(b"Quillon", b"Tomas!!") if name.endswith("pets/messages.jsonl") else blob


def _add_member(data: bytes) -> bytes:
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("sessions/ada/extra.bin", b"x")
    return out.getvalue()


DAMAGE = {
    "bad checksum": (lambda d: _rezip(d, _forge_message), "fails its checksum"),
    "missing member": (lambda d: _rezip(d, lambda n, b: None if n.endswith("gym/state.safetensors") else b),
                       "is missing member sessions/ada/gym/state.safetensors"),
    "unexpected member": (lambda d: _add_member(d), "does not list (sessions/ada/extra.bin)"),
    "wrong format version": (lambda d: _rezip(d, _manifest(_bump)), "format version 2"),
    "truncated": (lambda d: d[: len(d) * 2 // 3], "not a readable zip archive"),
    "not an archive": (lambda d: b"hello", "not a readable zip archive"),
    "no manifest": (lambda d: _rezip(d, lambda n, b: None if n == "manifest.json" else b), "has no manifest.json"),
}
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_archive_is_refused_and_nothing_is_written(case, source, chat_tokenizer, logs, tmp_path):
    runtime, log = source
    data, _ = build_archive(runtime.store, user_id="ada", textlog=log)
    target = tiny_runtime(chat_tokenizer, tmp_path / "dst")
    target_log = logs("dst-log")
    # the target already holds a session: it must come out of the refusal exactly as it was
    import_archive(build_archive(runtime.store, user_id="bob", textlog=log)[0], target, textlog=target_log)
    before = (target.store.list(), target.store.require(SessionKey(user_id="bob", session_id="tea")).messages,
              target_log.count())
    damage, message = DAMAGE[case]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(damage(data))
    with pytest.raises(ArchiveCorruptError) as caught:
        import_archive(bad, target, textlog=target_log, force=True)
    text = str(caught.value)
    assert message in text and "nothing was imported" in text and "\n" not in text
    assert isinstance(caught.value, UserError)
    after = (target.store.list(), target.store.require(SessionKey(user_id="bob", session_id="tea")).messages,
             target_log.count())
    assert after == before and not target.store.list("ada")


def test_another_models_states_are_refused_unless_replayed(source, chat_tokenizer, logs, tmp_path):
    runtime, log = source
    data, _ = build_archive(runtime.store, user_id="ada", textlog=log)
    other = tiny_runtime(chat_tokenizer, tmp_path / "dst", config=DeltaMemConfig(rank=4))
    other_log = logs("dst-log")
    with pytest.raises(ArchiveMismatchError) as caught:
        import_archive(data, other, textlog=other_log)
    assert "δ-mem config differs" in str(caught.value) and "--replay" in str(caught.value)
    assert isinstance(caught.value, ConflictError) and not other.store.list() and other_log.count() == 0

    report = import_archive(data, other, textlog=other_log, replay=True)
    assert report.replayed and report.sessions == ["ada/gym", "ada/pets"]
    for key, record in records(runtime.store).items():
        imported = other.store.require(SessionKey.parse(key), expect=other.fingerprint)
        assert [m.content for m in imported.messages] == [m.content for m in record.messages]
        assert imported.state.rank == 4  # written by this model
        twin = other.session(f"twin-{imported.key.session_id}", user_id="twin")
        for message in imported.messages:
            twin.ingest(message)
        assert state_digest(imported.state) == state_digest(twin.state)
    assert other_log.count(user_id="ada") == log.count(user_id="ada")


def test_existing_sessions_are_refused_unless_forced(source, chat_tokenizer, tmp_path):
    runtime, _ = source
    data, _ = build_archive(runtime.store, user_id="ada")
    target = tiny_runtime(chat_tokenizer, tmp_path / "dst")
    session = target.session("pets", user_id="ada")
    session.ingest(ChatMessage(role="user", content="Something else entirely."))
    target.save(session)
    kept = target.store.require(SessionKey(user_id="ada", session_id="pets"))
    with pytest.raises(ArchiveConflictError, match=r"ada/pets already exists .* --force"):
        import_archive(data, target)
    assert target.store.list("ada") == [kept.metadata]  # nothing written, not even ada/gym
    report = import_archive(data, target, force=True)
    assert report.replaced == ["ada/pets"]
    assert build_archive(target.store, user_id="ada")[0] == data


def test_bare_store_targets_and_clear_errors(source, tmp_path):
    from deltamem_agents.session import DirectorySessionStore

    runtime, _ = source
    data, _ = build_archive(runtime.store, user_id="ada")
    store = DirectorySessionStore(tmp_path / "bare")
    with pytest.raises(ArchiveMismatchError):
        import_archive(data, store, expect=runtime.fingerprint.model_copy(update={"adapter": "other"}))
    with pytest.raises(ArchiveError, match="needs a model"):
        import_archive(data, store, replay=True)
    import_archive(data, store)  # the caller vouches for the model: restored verbatim
    assert build_archive(store, user_id="ada")[0] == data
    with pytest.raises(ArchiveNotFoundError, match="no sessions"):
        build_archive(runtime.store, user_id="nobody")
    with pytest.raises(ArchiveNotFoundError, match="no session ada/nope"):
        build_archive(runtime.store, user_id="ada", session_id="nope")
    with pytest.raises(ArchiveNotFoundError, match="no archive at"):
        read_archive(tmp_path / "missing.zip")
    assert hashlib.sha256(data).hexdigest() == read_archive(data).sha256
