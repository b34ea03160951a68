"""Where the SDK keeps things on disk, and the environment variables that move them.

Read at call time, never at import: a test or a long-lived process that changes
``DELTAMEM_HOME`` gets the new folders on its next call.

- data (sessions, the text log): ``$DELTAMEM_HOME``, else ``$XDG_DATA_HOME/deltamem``, else
  ``~/.local/share/deltamem``;
- cache (converted backbones, built kernels): ``$DELTAMEM_CACHE``, else
  ``$XDG_CACHE_HOME/deltamem``, else ``~/.cache/deltamem``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "HOME_ENV",
    "backbone_cache_root",
    "cache_home",
    "data_home",
    "store_root",
    "textlog_root",
]

#: the data folder (sessions, text log)
HOME_ENV = "DELTAMEM_HOME"
#: the cache folder (converted backbones)
CACHE_ENV = "DELTAMEM_CACHE"


def data_home() -> Path:
    """The folder for what users keep: sessions and the text log."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "deltamem"


def cache_home(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder for what can be rebuilt (``cache_dir``, when given, wins)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache").expanduser() / "deltamem"


def store_root() -> Path:
    """The default session store folder."""
    return data_home() / "sessions"


def textlog_root() -> Path:
    """The default embedded text log folder."""
    return data_home() / "textlog"


def backbone_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Converted backbones, under the cache folder."""
    return cache_home(cache_dir) / "backbones"
