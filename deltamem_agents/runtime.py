"""`DeltaMemRuntime`: one loaded backbone + adapter, many persistent sessions.

It loads the backbone and the adapter once, opens sessions from a `SessionStore` (checking
that their saved state was written by this very backbone, adapter and config), keeps open
sessions in memory so their KV cache is reused between turns, and commits each turn.

Open ("warm") sessions form an LRU, optionally bounded by a memory budget (the bytes of their KV
caches and δ-states) and a count: past it, the least recently used sessions that no turn is using
(their store lock is free) are dropped; their next turn reopens them from the store and rebuilds
the context from the log. A warm session is reused only while the store's head is exactly the
revision it was opened at (turn count, log chain, state checksum, creation time): a session another
process changed, rewrote, or deleted and recreated meanwhile is reloaded, never served stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.concurrency import FairRLock
from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.model.adapters import (
    BackboneSignature,
    adapter_fingerprint,
    read_adapter,
)
from deltamem_agents.model.attach import DeltaMemHandle, attach_delta_mem
from deltamem_agents.progress import ProgressLike, tracked
from deltamem_agents.session.session import MemorySession, SessionConfig
from deltamem_agents.store.base import (
    SessionLockTimeout,
    SessionStore,
    default_store_root,
)
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
    SessionRecord,
)
from deltamem_agents.store.url import is_store_url, open_session_store

logger = logging.getLogger(__name__)

#: Shipped adapters live here, one folder per backbone (``deltamem_config.json`` names it).
SHIPPED_ADAPTERS = Path(__file__).resolve().parent / "adapters"
#: Seed of the projections of an untrained δ-mem, so its states stay valid across processes.
UNTRAINED_SEED = 0


class UntrainedMemoryWarning(UserWarning):
    """No trained adapter matches the backbone: the memory is written but changes nothing."""


_warned_untrained: set[str] = set()
_SHARED: dict[tuple[str | None, ...], DeltaMemRuntime] = {}
_SHARED_GUARD = threading.Lock()


def find_shipped_adapter(backbone_name: str) -> Path | None:
    """The adapter shipped in the package for ``backbone_name``, if any."""
    if not SHIPPED_ADAPTERS.is_dir():
        return None
    for folder in sorted(p for p in SHIPPED_ADAPTERS.iterdir() if p.is_dir()):
        try:
            meta, _ = read_adapter(folder)
        except ValueError:
            continue
        if meta.backbone.name == backbone_name:
            return folder
    return None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _revision(meta: SessionMetadata) -> tuple[Any, ...]:
    """What identifies a committed revision of a session: every commit and rewrite changes the
    turn count, the log chain (a hash of every message) or the state checksum, and a session
    deleted and created again has another creation time."""
    return (
        meta.created_at, meta.turn_count, meta.message_count, meta.log_chain, meta.log_file, meta.state_sha256,
        meta.fingerprint,
    )


class WarmSessionStats(BaseModel):
    """The sessions this runtime keeps warm (KV cache + δ-state in memory) and what their LRU
    did since the runtime started (served as is in the server's ``/health``)."""

    model_config = ConfigDict(frozen=True)

    sessions: int = Field(0, description="sessions open in memory")
    bytes: int = Field(0, description="bytes of their KV caches and δ-states, as measured after their last turn")
    budget_bytes: int | None = Field(None, description="the bound (None: unbounded)")
    max_sessions: int | None = Field(None, description="the most sessions kept (None: no count bound)")
    hits: int = Field(0, description="turns that found their session warm and current: only new tokens prefilled")
    misses: int = Field(0, description="sessions opened from the store: new, evicted, or not yet served here")
    stale_reloads: int = Field(0, description="warm sessions another process had changed meanwhile: reloaded from the store")
    evictions: int = Field(0, description="sessions dropped past the budget, least recently used first")
    busy_skips: int = Field(0, description="evictions passed over because a turn was using the session")


@dataclass
class _Warm:
    session: MemorySession
    record: SessionRecord
    bytes: int = 0
    #: handed out since its last commit: a turn that opens it twice (the server does) counts once
    served: bool = False


class DeltaMemRuntime:
    """Backbone + δ-mem + session store; the entry point of applications and the CLI.

    ``adapter``: ``"auto"`` (the adapter shipped for this backbone, else an untrained one, with a
    warning), a folder of either adapter format, or ``None`` (untrained, ``config`` applies).
    ``warm_budget_bytes`` and ``max_warm_sessions`` bound the sessions kept open between turns
    (`set_warm_budget`; ``None``, the default: every opened session stays open); `warm_sessions`
    reports them.
    """

    def __init__(
        self,
        backbone: str | None = None,
        *,
        adapter: str | Path | Literal["auto"] | None = "auto",
        config: DeltaMemConfig | None = None,
        store: SessionStore | str | Path | None = None,
        session_config: SessionConfig | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        progress: ProgressLike = True,
        warm_budget_bytes: int | None = None,
        max_warm_sessions: int | None = None,
    ) -> None:
        from deltamem_agents.model.backbone import DEFAULT_BACKBONE, load_backbone

        if model is None:
            model, tokenizer = load_backbone(backbone, device=device, dtype=dtype, progress=progress)
            self.backbone_name = backbone or DEFAULT_BACKBONE
        elif tokenizer is None:
            raise ValueError("a model given to DeltaMemRuntime needs its tokenizer too")
        else:
            self.backbone_name = backbone or getattr(model.config, "_name_or_path", None) or "unnamed"
        self.model, self.tokenizer = model, tokenizer
        if adapter == "auto":
            adapter = find_shipped_adapter(self.backbone_name)
        self.adapter_path = Path(adapter) if adapter is not None else None
        self.handle = self._attach(config)
        # A folder, a redis:// URL (see `open_session_store`) or a store object.
        self.store = open_session_store(store)
        self.session_config = session_config or SessionConfig()
        # first come, first served: the server's batch thread locks it once per token step
        self.lock = FairRLock()
        self.fingerprint = Fingerprint(
            backbone=self.backbone_name,
            backbone_signature=_sha(BackboneSignature.of(model).model_dump_json(exclude={"name"})),
            adapter=adapter_fingerprint(self.adapter_path) if self.adapter_path else f"untrained-seed{UNTRAINED_SEED}",
            config=_sha(self.handle.config.model_dump_json(exclude={"target_layers"})),
        )
        # Warm sessions, least recently used first; evicted ones a caller may still hold and save.
        self._open: OrderedDict[SessionKey, _Warm] = OrderedDict()
        self._evicted: weakref.WeakKeyDictionary[MemorySession, tuple[SessionKey, SessionRecord]] = (
            weakref.WeakKeyDictionary()
        )
        self._warm_guard = threading.Lock()
        self._warm_bytes = 0  # the sum of the warm sessions' measured bytes
        self._counts = dict.fromkeys(("hits", "misses", "stale_reloads", "evictions", "busy_skips"), 0)
        self.warm_budget_bytes: int | None = None
        self.max_warm_sessions: int | None = None
        self.set_warm_budget(warm_budget_bytes, max_sessions=max_warm_sessions)

    @classmethod
    def shared(
        cls,
        backbone: str | None = None,
        *,
        adapter: str | Path | Literal["auto"] | None = "auto",
        store: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> DeltaMemRuntime:
        """One runtime per (backbone, adapter, store, device, dtype) in this process.

        Integrations create many model objects (a LangChain chat model per chain, a LlamaIndex
        LLM per agent); they must not each load the backbone and attach δ-mem again. The default
        store folder is resolved now, so a changed ``DELTAMEM_HOME`` gives another store instead
        of the first one the process saw; the default backbone named or not is one runtime."""
        from deltamem_agents.model.backbone import DEFAULT_BACKBONE

        backbone = None if backbone == DEFAULT_BACKBONE else backbone
        if is_store_url(store):
            root = store
        else:
            root = str(Path(store if store is not None else default_store_root()).expanduser().resolve())
        key = (backbone, str(adapter) if adapter is not None else None, root, device, dtype)
        with _SHARED_GUARD:
            runtime = _SHARED.get(key)
            if runtime is None:
                runtime = cls(backbone, adapter=adapter, store=root, device=device, dtype=dtype)
                _SHARED[key] = runtime
            return runtime

    def _attach(self, config: DeltaMemConfig | None) -> DeltaMemHandle:
        from deltamem_agents.model.adapters import load_adapter

        if self.adapter_path is not None:
            handle = load_adapter(self.model, self.adapter_path)
            logger.info("δ-mem adapter %s: %s", self.adapter_path, handle.summary())
            return handle
        if self.backbone_name not in _warned_untrained:
            _warned_untrained.add(self.backbone_name)
            warnings.warn(
                f"no trained δ-mem adapter matches backbone {self.backbone_name!r}: the memory is "
                "written and saved, but an untrained δ-mem does not change the model's answers. "
                "Pass adapter=PATH (CLI: --adapter PATH) to load a trained one.",
                UntrainedMemoryWarning,
                stacklevel=3,
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            return attach_delta_mem(self.model, config or DeltaMemConfig())

    # -- sessions ---------------------------------------------------------------------------------
    def session(self, session_id: str, *, user_id: str = "default", config: SessionConfig | None = None) -> MemorySession:
        """Open (or create) a session; a warm one is returned with its KV cache, unless the store
        holds another revision of it (another process committed, rewrote or recreated it)."""
        key = SessionKey(user_id=user_id, session_id=session_id)
        # Locks are always taken in this order (session store, then model): see `rebuild`.
        with self.store.lock(key), self.lock:
            warm = self._open.get(key)
            if warm is not None:
                latest = self.store.head(key)
                if latest is not None and _revision(latest) == _revision(warm.record.metadata):
                    self._put(key, warm, None if warm.served else "hits")
                    warm.served = True
                    self._trim(protect=key)
                    return warm.session
                # Another process committed, rewrote or recreated it meanwhile: reopen from the store.
                self._drop(key, "stale_reloads")
                logger.info("session %s changed in the store since it was opened here: reloading it", key)
            else:
                self._count("misses")
            self._forget_evicted(key)
            record = self.store.load_or_create(key, self.fingerprint)
            session = MemorySession(
                self.model, self.tokenizer, self.handle,
                config=config or self.session_config, state=record.state, messages=record.messages, lock=self.lock,
            )
            self._put(key, _Warm(session, record, served=True))
            self._trim(protect=key)
            return session

    def save(self, session: MemorySession) -> SessionMetadata:
        """Commit what the session did since it was opened or last saved (atomically)."""
        with self.lock:
            key = next((k for k, warm in self._open.items() if warm.session is session), None)
            if key is None and session in self._evicted:
                key = self._evicted[session][0]
        if key is None:
            raise ValueError("this session was not opened by this runtime")
        with self.store.lock(key), self.lock:
            warm = self._open.get(key)
            if warm is not None and warm.session is session:
                record = warm.record
            elif warm is None and session in self._evicted:
                # Evicted from the warm set while its holder kept it: commit it and take it back.
                record = self._evicted[session][1]
            else:
                raise ValueError(f"session {key} was closed or reopened before it was saved")
            committed = len(record.messages)
            new_messages = session.messages[committed:]
            record = self.store.commit(
                record, new_messages=new_messages, state=session.state, tokens_written=session.tokens_written
            )
            session.tokens_written = 0
            self._evicted.pop(session, None)
            self._put(key, _Warm(session, record))
            self._trim(own=key)
            return record.metadata

    # -- the warm-session LRU ---------------------------------------------------------------------
    def set_warm_budget(self, budget_bytes: int | None, *, max_sessions: int | None = None) -> None:
        """Bound the warm sessions: at most ``budget_bytes`` of KV caches and δ-states and at most
        ``max_sessions`` sessions (``None``: no bound; ``0`` bytes: keep none after its turn)."""
        for name, value in (("budget_bytes", budget_bytes), ("max_sessions", max_sessions)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")
        with self.lock:
            self.warm_budget_bytes, self.max_warm_sessions = budget_bytes, max_sessions
            self._trim()

    def warm_sessions(self) -> WarmSessionStats:
        """How many sessions are warm, their bytes, and the LRU's counters (never waits for the
        model: a server's health check calls it while turns run)."""
        with self._warm_guard:
            return WarmSessionStats(
                sessions=len(self._open), bytes=self._warm_bytes,
                budget_bytes=self.warm_budget_bytes, max_sessions=self.max_warm_sessions, **self._counts,
            )

    def is_warm(self, session_id: str, *, user_id: str = "default") -> bool:
        """Whether the session is open here (its next turn may reuse its KV cache)."""
        with self._warm_guard:
            return SessionKey(user_id=user_id, session_id=session_id) in self._open

    # Every change of ``_open`` and the counters happens with ``self.lock`` (so a thread holding it
    # reads them freely) and the ``_warm_guard`` leaf lock (so `warm_sessions` need not wait for the model).
    def _put(self, key: SessionKey, warm: _Warm, counter: str | None = None) -> None:
        """``warm`` is now the most recently used session; its bytes are measured now."""
        size = warm.session.resident_bytes
        with self._warm_guard:
            previous = self._open.get(key)
            self._warm_bytes += size - (previous.bytes if previous is not None else 0)
            warm.bytes = size
            self._open[key] = warm
            self._open.move_to_end(key)
            if counter is not None:
                self._counts[counter] += 1

    def _drop(self, key: SessionKey, counter: str | None = None) -> _Warm | None:
        with self._warm_guard:
            if counter is not None:
                self._counts[counter] += 1
            warm = self._open.pop(key, None)
            if warm is not None:
                self._warm_bytes -= warm.bytes
            return warm

    def _count(self, counter: str) -> None:
        with self._warm_guard:
            self._counts[counter] += 1

    def _over_budget(self) -> bool:
        budget, most = self.warm_budget_bytes, self.max_warm_sessions
        if most is not None and len(self._open) > most:
            return True
        if budget == 0:
            return bool(self._open)  # none kept, even a session measured before it held anything
        return budget is not None and self._warm_bytes > budget

    def _trim(self, *, protect: SessionKey | None = None, own: SessionKey | None = None) -> None:
        """Evict least recently used sessions while over the budget (called with ``self.lock``).
        ``protect`` is being handed out and stays; ``own`` is a session whose store lock this
        thread holds (its turn just committed), evicted last. Any other session is evicted only
        if its store lock is free right now: one a turn is using is skipped, never taken away."""
        if not self._over_budget():
            return
        for key in [k for k in self._open if k not in (protect, own)]:
            if not self._over_budget():
                return
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(self.store.lock(key, timeout=0))  # never waits
                except SessionLockTimeout:
                    self._count("busy_skips")
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. the Redis server is unreachable: keep it
                    logger.warning("could not check whether session %s is in use, keeping it warm: %s", key, exc)
                    continue
                self._evict(key)
        if own is not None and own != protect and own in self._open and self._over_budget():
            self._evict(own)

    def _evict(self, key: SessionKey) -> None:
        warm = self._drop(key, "evictions")
        assert warm is not None
        self._evicted[warm.session] = (key, warm.record)
        logger.debug("evicted warm session %s (%d bytes)", key, warm.bytes)

    def _forget_evicted(self, key: SessionKey) -> None:
        """Evicted sessions of ``key`` can no longer be saved (it was reopened, closed, rebuilt or deleted)."""
        for session in [s for s, (k, _) in self._evicted.items() if k == key]:
            self._evicted.pop(session, None)

    def rebuild(
        self,
        session_id: str,
        *,
        user_id: str = "default",
        keep: Callable[[ChatMessage], bool],
        edit: Callable[[ChatMessage], ChatMessage] | None = None,
        progress: ProgressLike = True,
    ) -> SessionMetadata:
        """Rebuild a session from the messages ``keep`` accepts (each passed through ``edit``,
        if given): a fresh state, written by replaying them in order, replaces log and state in
        one atomic commit.

        This is how memory forgets and corrects: an OSAM state cannot unlearn, so it is written anew."""
        key = SessionKey(user_id=user_id, session_id=session_id)
        # Store lock first, then the model lock: the order every turn takes them (HybridMemory).
        with self.store.lock(key), self.lock:
            record = self.store.require(key, expect=self.fingerprint)
            kept = [m if edit is None else edit(m) for m in record.messages if keep(m)]
            fresh = MemorySession(self.model, self.tokenizer, self.handle, config=self.session_config, lock=self.lock)
            with tracked(progress, "replaying the remaining log into a fresh state", total=len(kept)) as bar:
                for message in kept:
                    fresh.ingest(message)
                    bar.advance()
            total = len(record.messages)
            record = self.store.rewrite(record, messages=kept, state=fresh.state, tokens_written=fresh.tokens_written)
            self._drop(key)
            self._forget_evicted(key)
            logger.info("rebuilt session %s from %d of %d messages", key, len(kept), total)
            return record.metadata

    def close(self, session_id: str, *, user_id: str = "default") -> None:
        """Forget an open session's KV cache (its committed turns stay in the store)."""
        with self.lock:
            key = SessionKey(user_id=user_id, session_id=session_id)
            self._drop(key)
            self._forget_evicted(key)

    def delete(self, session_id: str, *, user_id: str = "default") -> bool:
        with self.lock:
            key = SessionKey(user_id=user_id, session_id=session_id)
            self._drop(key)
            self._forget_evicted(key)
            return self.store.delete(key)

    def sessions(self, user_id: str | None = None) -> list[SessionMetadata]:
        return self.store.list(user_id)
