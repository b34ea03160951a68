"""Export and import a user's memory as one portable archive (``deltamem export`` / ``import``).

An archive is a zip written deterministically (members in a fixed order, stored uncompressed,
fixed timestamps and permissions, no platform metadata), so the same memory gives the same
bytes: export -> import -> export is byte-identical, into a folder store or Redis alike.
Members, in this order::

    manifest.json                                   ArchiveManifest: format, versions, fingerprint,
                                                    the sessions, every other member's sha256
    sessions/<user>/<session>/session.json          ArchivedSession: key, fingerprint, counters, extra
    sessions/<user>/<session>/messages.jsonl        the hash-chained log, as the stores write it
    sessions/<user>/<session>/state.safetensors     the δ-state (absent when none was saved)
    sessions/<user>/<session>/textlog.jsonl         the text-log entries (when the log was exported)

`import_archive` verifies the whole archive (checksums, members, format version, log chains,
states) before it writes anything, refuses a state saved for another backbone, adapter or
config unless ``replay=True`` (the state is then re-written from the messages by
`DeltaMemRuntime.rebuild`), refuses to overwrite an existing session unless ``force=True``, and
writes each session through the store's own commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deltamem_agents._version import __version__
from deltamem_agents.core.state import DeltaMemState, StateFileError
from deltamem_agents.errors import ConflictError, NotFoundError, UserError
from deltamem_agents.fileio import atomic_write_bytes
from deltamem_agents.memory.textlog import LogHit, TextLog
from deltamem_agents.progress import ProgressLike
from deltamem_agents.store.base import SessionCorruptError, SessionStore
from deltamem_agents.store.codec import decode_log, encode_log
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
    canonical_json,
    validate_id,
)

if TYPE_CHECKING:
    from deltamem_agents.runtime import DeltaMemRuntime

ARCHIVE_FORMAT = "deltamem-archive"
ARCHIVE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: every member's timestamp (the earliest a zip can hold): the bytes never depend on the clock
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_PARTS = ("session.json", "messages.jsonl", "state.safetensors", "textlog.jsonl")


# -- errors -----------------------------------------------------------------------------------------
class ArchiveError(UserError):
    """Base of the archive errors; nothing was written when one is raised by `import_archive`."""


class ArchiveCorruptError(ArchiveError, ValueError):
    """The archive is damaged (bad checksum, missing or unexpected member, truncated, not a zip)
    or has a format version this deltamem-agents does not read."""


class ArchiveNotFoundError(ArchiveError, NotFoundError):
    """No archive file at the path given, or no sessions to export."""


class ArchiveMismatchError(ArchiveError, ConflictError):
    """The archive's states were saved for another backbone, adapter or δ-mem config."""

    def __init__(self, source: str, saved: Fingerprint, expected: Fingerprint) -> None:
        self.saved, self.expected, self.differences = saved, expected, saved.mismatch(expected)
        super().__init__(
            f"archive {source} holds states for another model ({'; '.join(self.differences)}); import it with "
            "the backbone and adapter it was exported with, or pass --replay (replay=True) to re-write each "
            "state from its messages with this model"
        )


class ArchiveConflictError(ArchiveError, ConflictError):
    """The import would overwrite sessions (or text-log entries) that already exist."""


# -- what the archive holds -------------------------------------------------------------------------
class ArchiveMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    size: int = Field(ge=0)


class ArchiveManifest(BaseModel):
    """``manifest.json``: what the archive holds, for which model, and every member's checksum."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["deltamem-archive"] = ARCHIVE_FORMAT
    format_version: int = ARCHIVE_FORMAT_VERSION
    deltamem_version: str = __version__
    fingerprint: Fingerprint = Field(description="backbone, backbone signature, adapter and config of every state")
    user_id: str
    sessions: list[str] = Field(description="'user/session' keys, sorted")
    textlog: bool = Field(description="whether the text-log entries are included")
    members: list[ArchiveMember] = Field(description="every member but the manifest, in archive order")


class ArchivedSession(BaseModel):
    """``session.json``: what a store restores of a session besides its log and state. Turn
    counts and timestamps of the store are not carried (each message keeps its own time)."""

    model_config = ConfigDict(extra="forbid")

    key: SessionKey
    fingerprint: Fingerprint
    message_count: int = Field(ge=0)
    log_chain: str
    state_sha256: str | None
    tokens_written: int = Field(ge=0)
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass
class SessionContent:
    """One verified session of an archive."""

    info: ArchivedSession
    messages: list[ChatMessage]
    state: DeltaMemState | None
    log_entries: list[LogHit] = field(default_factory=list)


@dataclass
class Archive:
    """A verified archive (`read_archive`): nothing in it failed a check."""

    source: str
    manifest: ArchiveManifest
    sessions: list[SessionContent]
    sha256: str


class ExportReport(BaseModel):
    path: str | None
    sha256: str = Field(description="sha256 of the archive's bytes")
    sessions: list[str]
    messages: int
    log_entries: int
    state_sha256: dict[str, str | None] = Field(description="per session, sha256 of its δ-state's safetensors")


class ImportReport(BaseModel):
    source: str
    store: str
    sessions: list[str]
    messages: int
    log_entries: int
    log_entries_skipped: int = Field(0, description="entries in the archive, not imported (no text log given)")
    replayed: bool
    replaced: list[str] = Field(default_factory=list, description="sessions that existed and were replaced (force)")


def _member_dir(key: SessionKey) -> str:
    return f"sessions/{key.user_id}/{key.session_id}/"


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _entry_line(hit: LogHit) -> str:
    return canonical_json({"id": hit.id, "text": hit.text, "metadata": hit.metadata}) + "\n"


def canonical_state(data: bytes) -> bytes:
    """Safetensors bytes with the header's keys sorted (tensors and metadata alike): the same
    state gives the same bytes, whatever order the writer put its metadata in."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def _zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.create_system = 3  # the same bytes on every platform
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, data)
    return buffer.getvalue()


# -- export -----------------------------------------------------------------------------------------
def build_archive(
    store: SessionStore, *, user_id: str, session_id: str | None = None, textlog: TextLog | None = None
) -> tuple[bytes, ExportReport]:
    """The archive of a user's sessions (or one of them) in ``store``, with their text-log
    entries when ``textlog`` is given; every session is loaded (and so verified) first."""
    validate_id("user_id", user_id)
    if session_id is not None:
        keys = [SessionKey(user_id=user_id, session_id=session_id)]
        if not store.exists(keys[0]):
            raise ArchiveNotFoundError(f"no session {keys[0]} in {store.location}: nothing to export")
    else:
        keys = sorted((meta.key for meta in store.list(user_id)), key=str)
        if not keys:
            raise ArchiveNotFoundError(f"user {user_id!r} has no sessions in {store.location}: nothing to export")
    members: list[tuple[str, bytes]] = []
    fingerprints: dict[Fingerprint, str] = {}
    shas: dict[str, str | None] = {}
    n_messages = n_entries = 0
    for key in keys:
        record = store.require(key)
        fingerprints.setdefault(record.fingerprint, str(key))
        log, chain = encode_log(record.messages, start=0, chain="")
        state = canonical_state(record.state.to_bytes()) if record.state is not None else None
        sha = hashlib.sha256(state).hexdigest() if state is not None else None
        info = ArchivedSession(
            key=key, fingerprint=record.fingerprint, message_count=len(record.messages), log_chain=chain,
            state_sha256=sha, tokens_written=record.metadata.tokens_written, extra=record.metadata.extra,
        )
        base = _member_dir(key)
        members += [(base + "session.json", _json_bytes(info.model_dump(mode="json"))), (base + "messages.jsonl", log)]
        if state is not None:
            members.append((base + "state.safetensors", state))
        if textlog is not None:
            entries = textlog.list(user_id=key.user_id, session_id=key.session_id)
            members.append((base + "textlog.jsonl", "".join(_entry_line(h) for h in entries).encode("utf-8")))
            n_entries += len(entries)
        shas[str(key)] = sha
        n_messages += len(record.messages)
    if len(fingerprints) > 1:
        raise ArchiveError(
            f"the sessions of {user_id!r} were saved for different models ({', '.join(fingerprints.values())} "
            "differ); export them one at a time with --session"
        )
    manifest = ArchiveManifest(
        fingerprint=next(iter(fingerprints)), user_id=user_id, sessions=[str(k) for k in keys],
        textlog=textlog is not None,
        members=[ArchiveMember(name=n, sha256=hashlib.sha256(d).hexdigest(), size=len(d)) for n, d in members],
    )
    data = _zip([(MANIFEST, _json_bytes(manifest.model_dump(mode="json"))), *members])
    report = ExportReport(
        path=None, sha256=hashlib.sha256(data).hexdigest(), sessions=manifest.sessions, messages=n_messages,
        log_entries=n_entries, state_sha256=shas,
    )
    return data, report


def export_archive(
    store: SessionStore, out: str | os.PathLike[str], *, user_id: str, session_id: str | None = None,
    textlog: TextLog | None = None,
) -> ExportReport:
    """`build_archive`, written to ``out`` atomically (a reader never sees half an archive)."""
    data, report = build_archive(store, user_id=user_id, session_id=session_id, textlog=textlog)
    atomic_write_bytes(out, data)
    return report.model_copy(update={"path": str(out)})


# -- reading and verifying --------------------------------------------------------------------------
def read_archive(source: str | os.PathLike[str] | bytes) -> Archive:
    """Read and verify a whole archive; `ArchiveCorruptError` names the first thing wrong."""
    if isinstance(source, bytes):
        name, data = "<bytes>", source
    else:
        name = str(source)
        try:
            data = Path(source).expanduser().read_bytes()
        except FileNotFoundError:
            raise ArchiveNotFoundError(f"no archive at {name}") from None
        except IsADirectoryError:
            raise ArchiveNotFoundError(f"{name} is a folder, not an archive file") from None

    def corrupt(what: str) -> ArchiveCorruptError:
        return ArchiveCorruptError(f"archive {name} {what}; nothing was imported")

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if len(set(names)) != len(names):
                raise corrupt("has duplicate members")
            if MANIFEST not in names:
                raise corrupt(f"has no {MANIFEST} (not a deltamem archive, or damaged)")
            manifest = _parse_manifest(archive.read(MANIFEST), corrupt)
            listed = [m.name for m in manifest.members]
            unexpected = sorted(set(names) - set(listed) - {MANIFEST})
            if unexpected:
                raise corrupt(f"has members its manifest does not list ({', '.join(unexpected[:3])})")
            contents: dict[str, bytes] = {}
            for member in manifest.members:
                if member.name not in names:
                    raise corrupt(f"is missing member {member.name}")
                blob = archive.read(member.name)
                if len(blob) != member.size or hashlib.sha256(blob).hexdigest() != member.sha256:
                    raise corrupt(f"member {member.name} fails its checksum (modified or damaged)")
                contents[member.name] = blob
    except zipfile.BadZipFile as exc:
        raise corrupt(f"is not a readable zip archive (truncated or damaged: {exc})") from None
    except (zipfile.LargeZipFile, EOFError, OSError, KeyError, RuntimeError, NotImplementedError, zlib.error) as exc:
        raise corrupt(f"cannot be read ({exc})") from None
    if len(set(manifest.sessions)) != len(manifest.sessions) or len(set(listed)) != len(listed):
        raise corrupt("lists a session or a member twice")
    known = {f"sessions/{k}/{part}" for k in manifest.sessions for part in _PARTS}
    stray = sorted(set(listed) - known)
    if stray:
        raise corrupt(f"has members of no listed session ({', '.join(stray[:3])})")
    sessions = [_session(manifest, key_text, contents, corrupt) for key_text in manifest.sessions]
    return Archive(source=name, manifest=manifest, sessions=sessions, sha256=hashlib.sha256(data).hexdigest())


def _parse_manifest(raw: bytes, corrupt: Any) -> ArchiveManifest:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise corrupt(f"has a {MANIFEST} that is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        named = data.get("format") if isinstance(data, dict) else None
        raise corrupt(f"is not a deltamem archive (its {MANIFEST} names format {named!r})")
    version = data.get("format_version")
    if version != ARCHIVE_FORMAT_VERSION:
        newer = isinstance(version, int) and version > ARCHIVE_FORMAT_VERSION
        hint = "upgrade deltamem-agents to read it" if newer else "it cannot be read"
        raise corrupt(
            f"has format version {version!r} and this deltamem-agents reads version {ARCHIVE_FORMAT_VERSION}: {hint}"
        )
    try:
        return ArchiveManifest.model_validate(data)
    except ValidationError as exc:
        raise corrupt(f"has an invalid {MANIFEST} ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None


def _session(manifest: ArchiveManifest, key_text: str, contents: dict[str, bytes], corrupt: Any) -> SessionContent:
    try:
        key = SessionKey.parse(key_text)
    except UserError:
        raise corrupt(f"names an invalid session {key_text!r}") from None
    if key.user_id != manifest.user_id:
        raise corrupt(f"holds session {key} of another user than {manifest.user_id!r}")
    base = _member_dir(key)

    def member(name: str, required: bool = True) -> bytes | None:
        if base + name not in contents:
            if required:
                raise corrupt(f"is missing member {base + name}")
            return None
        return contents[base + name]

    try:
        info = ArchivedSession.model_validate_json(member("session.json") or b"")
    except ValidationError as exc:
        raise corrupt(f"member {base}session.json is invalid ({exc.errors()[0]['msg']})") from None
    if info.key != key or info.fingerprint != manifest.fingerprint:
        raise corrupt(f"member {base}session.json does not match the manifest (key or fingerprint)")
    log = member("messages.jsonl") or b""
    meta = SessionMetadata(key=key, fingerprint=info.fingerprint, message_count=info.message_count,
                           log_chain=info.log_chain, log_bytes=len(log))
    try:
        messages = decode_log(key, meta, log, f"archive member {base}messages.jsonl")
    except SessionCorruptError as exc:
        raise corrupt(f"member {base}messages.jsonl fails verification ({str(exc).split(';')[0]})") from None
    state = None
    if info.state_sha256 is not None:
        blob = member("state.safetensors") or b""
        if hashlib.sha256(blob).hexdigest() != info.state_sha256:
            raise corrupt(f"member {base}state.safetensors does not match its session's state_sha256")
        try:
            state = DeltaMemState.from_bytes(blob)
        except StateFileError as exc:
            raise corrupt(f"member {base}state.safetensors is not a δ-mem state ({exc})") from None
    elif member("state.safetensors", required=False) is not None:
        raise corrupt(f"has a state for {key}, whose session.json records none")
    entries: list[LogHit] = []
    raw = member("textlog.jsonl", required=manifest.textlog)
    try:
        lines = (raw or b"").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise corrupt(f"member {base}textlog.jsonl is not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            hit = LogHit(id=row["id"], text=row["text"], metadata=row["metadata"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise corrupt(f"member {base}textlog.jsonl line {number} is not a log entry") from None
        if (hit.metadata.get("user_id"), hit.metadata.get("session_id")) != (key.user_id, key.session_id):
            raise corrupt(f"member {base}textlog.jsonl line {number} belongs to another session than {key}")
        entries.append(hit)
    return SessionContent(info=info, messages=messages, state=state, log_entries=entries)


# -- import -----------------------------------------------------------------------------------------
def check_conflicts(
    archive: Archive, store: SessionStore, *, textlog: TextLog | None = None, force: bool = False
) -> list[SessionKey]:
    """The archive's sessions that already exist in ``store`` (or have entries in ``textlog``);
    `ArchiveConflictError` if there are any and not ``force``."""
    existing = [
        key for key in (content.info.key for content in archive.sessions)
        if store.exists(key) or (textlog is not None and textlog.count(user_id=key.user_id, session_id=key.session_id))
    ]
    if existing and not force:
        raise ArchiveConflictError(
            f"{', '.join(map(str, existing[:5]))} already exist{'s' if len(existing) == 1 else ''} in {store.location}; "
            "pass --force (force=True) to replace them, or delete them first"
        )
    return existing


def import_archive(
    source: str | os.PathLike[str] | bytes | Archive,
    target: DeltaMemRuntime | SessionStore,
    *,
    textlog: TextLog | None = None,
    replay: bool = False,
    force: bool = False,
    expect: Fingerprint | None = None,
    progress: ProgressLike = False,
) -> ImportReport:
    """Import an archive into the store of ``target`` (a `DeltaMemRuntime`, whose fingerprint
    the archive must match, or a bare `SessionStore`, checked against ``expect`` if given).

    Everything is verified before the first write. ``replay=True`` (a runtime is needed) stores
    the messages and re-writes each state from them with the runtime's model
    (`DeltaMemRuntime.rebuild`), instead of refusing another model's states. ``force=True``
    replaces sessions (and their text-log entries) that exist; otherwise they are refused.
    Text-log entries are imported into ``textlog`` (embedded by its own embedding function)."""
    from deltamem_agents.runtime import DeltaMemRuntime

    archive = source if isinstance(source, Archive) else read_archive(source)
    runtime = target if isinstance(target, DeltaMemRuntime) else None
    store = runtime.store if runtime is not None else target
    assert isinstance(store, SessionStore)
    if runtime is not None:
        expect = runtime.fingerprint
    if replay and runtime is None:
        raise ArchiveError("replaying an archive needs a model: pass a DeltaMemRuntime as the target, not a store")
    if expect is not None and archive.manifest.fingerprint != expect and not replay:
        raise ArchiveMismatchError(archive.source, archive.manifest.fingerprint, expect)
    keys = [content.info.key for content in archive.sessions]
    existing = check_conflicts(archive, store, textlog=textlog, force=force)
    n_entries = skipped = 0
    for content in archive.sessions:
        _write_session(content, store, runtime, replace=content.info.key in existing, replay=replay,
                       textlog=textlog, progress=progress)
        if textlog is not None:
            n_entries += textlog.put_entries(content.log_entries)
        else:
            skipped += len(content.log_entries)
    return ImportReport(
        source=archive.source, store=store.location, sessions=[str(k) for k in keys],
        messages=sum(len(c.messages) for c in archive.sessions), log_entries=n_entries, log_entries_skipped=skipped,
        replayed=replay, replaced=[str(k) for k in existing],
    )


def _write_session(
    content: SessionContent, store: SessionStore, runtime: DeltaMemRuntime | None, *, replace: bool, replay: bool,
    textlog: TextLog | None, progress: ProgressLike,
) -> None:
    """One session through the store's own commits, under its lock; a session this call created
    is removed again if a later step fails (one that it replaced stays deleted)."""
    key, info = content.info.key, content.info
    with store.lock(key):
        if replace:
            store.delete(key)
            if textlog is not None:
                textlog.delete_session(user_id=key.user_id, session_id=key.session_id)
        fingerprint = runtime.fingerprint if replay and runtime is not None else info.fingerprint
        record = store.create(key, fingerprint, extra=info.extra)
        try:
            store.commit(
                record, new_messages=content.messages, state=None if replay else content.state,
                tokens_written=0 if replay else info.tokens_written,
            )
            if replay and runtime is not None:
                # the runtime's one replay path: a fresh state written from the messages, one atomic rewrite
                runtime.rebuild(key.session_id, user_id=key.user_id, keep=lambda _m: True, progress=progress)
        except BaseException:
            store.delete(key)
            raise
        finally:
            if runtime is not None:
                runtime.close(key.session_id, user_id=key.user_id)  # never serve a cached older session




__all__ = [
    "ARCHIVE_FORMAT",
    "ARCHIVE_FORMAT_VERSION",
    "Archive",
    "ArchiveConflictError",
    "ArchiveCorruptError",
    "ArchiveError",
    "ArchiveManifest",
    "ArchiveMismatchError",
    "ArchiveNotFoundError",
    "ArchivedSession",
    "ExportReport",
    "ImportReport",
    "build_archive",
    "canonical_state",
    "check_conflicts",
    "export_archive",
    "import_archive",
    "read_archive",
]
