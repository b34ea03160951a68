"""`DeltaMemRuntime`: one loaded backbone + adapter, many persistent sessions.

It loads the backbone and the adapter once, opens sessions from a `SessionStore` (checking
that their saved state was written by this very backbone, adapter and config), keeps open
sessions in memory so their KV cache is reused between turns, and commits each turn.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.model.adapters import (
    BackboneSignature,
    adapter_fingerprint,
    read_adapter,
)
from deltamem_agents.model.attach import DeltaMemHandle, attach_delta_mem
from deltamem_agents.progress import ProgressLike, tracked
from deltamem_agents.session.session import MemorySession, SessionConfig
from deltamem_agents.store.base import SessionStore, default_store_root
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
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


class DeltaMemRuntime:
    """Backbone + δ-mem + session store; the entry point of applications and the CLI.

    ``adapter``: ``"auto"`` (the adapter shipped for this backbone, else an untrained one, with a
    warning), a folder of either adapter format, or ``None`` (untrained, ``config`` applies).
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
        self.lock = threading.RLock()
        self.fingerprint = Fingerprint(
            backbone=self.backbone_name,
            backbone_signature=_sha(BackboneSignature.of(model).model_dump_json(exclude={"name"})),
            adapter=adapter_fingerprint(self.adapter_path) if self.adapter_path else f"untrained-seed{UNTRAINED_SEED}",
            config=_sha(self.handle.config.model_dump_json(exclude={"target_layers"})),
        )
        self._open: dict[SessionKey, tuple[MemorySession, Any]] = {}

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
        """Open (or create) a session; an already open one is returned with its KV cache."""
        key = SessionKey(user_id=user_id, session_id=session_id)
        # Locks are always taken in this order (session store, then model): see `rebuild`.
        with self.store.lock(key), self.lock:
            if key in self._open:
                session, record = self._open[key]
                latest = self.store.head(key)
                if latest is not None and latest.turn_count == record.metadata.turn_count:
                    return session
                # Another process committed meanwhile: reopen from the store.
            record = self.store.load_or_create(key, self.fingerprint)
            session = MemorySession(
                self.model, self.tokenizer, self.handle,
                config=config or self.session_config, state=record.state, messages=record.messages, lock=self.lock,
            )
            self._open[key] = (session, record)
            return session

    def save(self, session: MemorySession) -> SessionMetadata:
        """Commit what the session did since it was opened or last saved (atomically)."""
        with self.lock:
            key = next((k for k, (open_session, _) in self._open.items() if open_session is session), None)
        if key is None:
            raise ValueError("this session was not opened by this runtime")
        with self.store.lock(key), self.lock:
            if key not in self._open or self._open[key][0] is not session:
                raise ValueError(f"session {key} was closed or reopened before it was saved")
            record = self._open[key][1]
            committed = len(record.messages)
            new_messages = session.messages[committed:]
            record = self.store.commit(
                record, new_messages=new_messages, state=session.state, tokens_written=session.tokens_written
            )
            session.tokens_written = 0
            self._open[key] = (session, record)
            return record.metadata

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
            self._open.pop(key, None)
            logger.info("rebuilt session %s from %d of %d messages", key, len(kept), total)
            return record.metadata

    def close(self, session_id: str, *, user_id: str = "default") -> None:
        """Forget an open session's KV cache (its committed turns stay in the store)."""
        with self.lock:
            self._open.pop(SessionKey(user_id=user_id, session_id=session_id), None)

    def delete(self, session_id: str, *, user_id: str = "default") -> bool:
        with self.lock:
            key = SessionKey(user_id=user_id, session_id=session_id)
            self._open.pop(key, None)
            return self.store.delete(key)

    def sessions(self, user_id: str | None = None) -> list[SessionMetadata]:
        return self.store.list(user_id)
