"""When a log entry expires: the one metadata key (``expires_at``) every reader and `prune` agree on.

An entry added with a TTL carries ``expires_at`` (seconds since the epoch, UTC). From that moment
readers (`TextLog.search`, `TextLog.list`, the memory verbs) no longer see it, so an expired memory
never reaches a prompt, even before `HybridMemory.prune` takes it out of the log and rebuilds the
session's state without it. Entries without the key never expire by TTL (a user's retention policy
may still remove them, see `deltamem_agents.memory.retention`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol, TypeVar

EXPIRES_AT = "expires_at"


def now() -> float:
    """The clock every expiry is judged by (one function, so a test can move it)."""
    return time.time()


class _Entry(Protocol):
    @property
    def metadata(self) -> dict[str, Any]: ...


EntryT = TypeVar("EntryT", bound=_Entry)


def ttl_seconds(ttl: float | timedelta | None, what: str = "ttl") -> float | None:
    """``ttl`` as positive seconds (None: never expires); anything else is a `ValueError` naming it."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"{what} must be a number of seconds > 0 (or a timedelta, or None), got {ttl!r}")
    return float(ttl)


def expiry_time(ttl: float | timedelta | None, *, at_time: float | None = None) -> float | None:
    """The ``expires_at`` of an entry added now (or at ``at_time``) with ``ttl`` (None: no expiry)."""
    seconds = ttl_seconds(ttl)
    return None if seconds is None else (now() if at_time is None else at_time) + seconds


def is_expired(metadata: Mapping[str, Any], at_time: float | None = None) -> bool:
    """True once the entry's ``expires_at`` has passed (at ``at_time``, default now)."""
    at = metadata.get(EXPIRES_AT)
    return isinstance(at, int | float) and not isinstance(at, bool) and at <= (now() if at_time is None else at_time)


def live(entries: Iterable[EntryT], at_time: float | None = None) -> list[EntryT]:
    """The entries that have not expired (one clock reading for all of them)."""
    at_time = now() if at_time is None else at_time
    return [e for e in entries if not is_expired(e.metadata, at_time)]


__all__ = ["EXPIRES_AT", "expiry_time", "is_expired", "live", "now", "ttl_seconds"]
