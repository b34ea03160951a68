"""`open_session_store`: one string picks the session store, so a deployment switches from a
folder to Redis by configuration (``--home``, ``$DELTAMEM_STORE``, the server's ``store``
setting, ``DeltaMemRuntime(store=...)``) without code.

- a path (or ``file://`` URL) -> `DirectorySessionStore` (one machine);
- ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL -> `RedisSessionStore` (many machines).
  The query string may carry the store's options: ``?prefix=app:&lease_ttl=10&lock_timeout=60``;
  every other query parameter is the Redis client's (``db``, ``socket_timeout`` ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from deltamem_agents.errors import UserError
from deltamem_agents.store.base import SessionStore, SessionStoreError
from deltamem_agents.store.directory import DirectorySessionStore

#: Environment variable naming the store when no folder is given (CLI and `deltamem serve`).
STORE_ENV = "DELTAMEM_STORE"
REDIS_SCHEMES = ("redis", "rediss", "unix")
_STORE_QUERY = ("prefix", "lease_ttl", "lock_timeout")


class UnknownStoreError(SessionStoreError, UserError, ValueError):
    """A store URL whose scheme names no backend."""


def check_store_spec(text: str) -> str:
    """``text`` if it names a folder or a known store URL, else `UnknownStoreError`."""
    scheme = urlsplit(text).scheme.lower()
    if len(scheme) > 1 and "://" in text and scheme not in (*REDIS_SCHEMES, "file"):  # not a Windows drive
        raise UnknownStoreError(f"unknown session store {text!r}: give a folder, or a redis://, rediss:// or unix:// URL")
    return text


def is_store_url(spec: object) -> bool:
    """Whether ``spec`` is a URL naming a Redis store (not a folder)."""
    return isinstance(spec, str) and urlsplit(spec).scheme.lower() in REDIS_SCHEMES


def open_session_store(
    spec: str | os.PathLike[str] | SessionStore | None = None,
    *,
    lock_timeout: float | None = None,
    lease_ttl: float | None = None,
    prefix: str | None = None,
) -> SessionStore:
    """The store ``spec`` names (``None``: the default folder). Keyword options given here win
    over the same options in a URL's query string; ``lease_ttl``/``prefix`` only apply to Redis."""
    if isinstance(spec, SessionStore):
        return spec
    if spec is None:
        return DirectorySessionStore(None, lock_timeout=lock_timeout)
    text = os.fspath(spec)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if isinstance(spec, str) and scheme in REDIS_SCHEMES:
        from deltamem_agents.store.redis_store import (
            RedisSessionStore,
            RedisStoreConfig,
        )

        query = parse_qsl(parts.query, keep_blank_values=True)
        options = {name: value for name, value in query if name in _STORE_QUERY}
        rest = [(name, value) for name, value in query if name not in _STORE_QUERY]
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
        given = {"prefix": prefix, "lease_ttl": lease_ttl, "lock_timeout": lock_timeout}
        options.update({name: value for name, value in given.items() if value is not None})
        return RedisSessionStore.from_config(RedisStoreConfig(url=url, **options))
    if isinstance(spec, str) and scheme == "file":
        return DirectorySessionStore(Path(unquote(parts.path)), lock_timeout=lock_timeout)
    return DirectorySessionStore(check_store_spec(text), lock_timeout=lock_timeout)


def store_from_env(home: str | os.PathLike[str] | None = None, **options: float | str | None) -> SessionStore:
    """``home`` if given, else ``$DELTAMEM_STORE`` if set, else the default folder."""
    spec = home if home is not None else (os.environ.get(STORE_ENV) or None)
    return open_session_store(spec, **options)  # type: ignore[arg-type]


__all__ = [
    "REDIS_SCHEMES",
    "STORE_ENV",
    "UnknownStoreError",
    "check_store_spec",
    "is_store_url",
    "open_session_store",
    "store_from_env",
]
