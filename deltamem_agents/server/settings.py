"""`ServerSettings`: everything `deltamem serve` can be told, in one pydantic model.

The command-line flags are derived from these fields (`deltamem_agents.cli.serve`), so a flag,
its default and its help text are defined exactly once. API keys never come from a flag (a
flag is visible in ``ps``): they come from ``--api-keys-file`` or ``DELTAMEM_API_KEYS``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Environment variable with API keys: ``KEY:USER_ID`` pairs separated by commas.
API_KEYS_ENV = "DELTAMEM_API_KEYS"
#: Shortest API key accepted: shorter secrets are guessable.
MIN_KEY_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _valid_user(user_id: str) -> str:
    # Imported here: the session package loads torch, and the CLI reads these settings at start.
    from deltamem_agents.store.records import validate_id

    return validate_id("user_id", user_id)


def parse_api_keys(text: str, *, source: str) -> dict[str, str]:
    """API keys from text: a JSON object ``{"KEY": "USER_ID"}``, or one ``KEY USER_ID`` (or
    ``KEY:USER_ID``) per line or comma-separated item; blank lines and ``#`` comments are skipped."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f'{source}: the JSON must be an object of strings, {{"KEY": "USER_ID"}}')
        return dict(data)
    keys: dict[str, str] = {}
    for number, raw in enumerate(stripped.replace(",", "\n").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, user = line.replace(":", " ", 1).partition(" ")
        if not user.strip():
            raise ValueError(f"{source}, item {number}: expected 'KEY USER_ID' or 'KEY:USER_ID', got {line[:8]!r}...")
        keys[key.strip()] = user.strip()
    return keys


class ServerSettings(BaseModel):
    """How the OpenAI-compatible server runs: binding, model, memory, auth, limits, scheduling."""

    model_config = ConfigDict(extra="forbid")

    # -- binding ------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback requires API keys")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")

    # -- model and memory -----------------------------------------------------------------------
    model_name: str = Field(
        "deltamem", min_length=1, max_length=128, description="the model id clients send and /v1/models lists"
    )
    backbone: str | None = Field(None, description="backbone name, .gguf file, folder or HF id (default: embedded SmolLM2)")
    adapter: str = Field("auto", description="adapter folder, 'auto' (shipped for the backbone) or 'none' (untrained)")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda if available)")
    dtype: str | None = Field(
        None, description="float32, bfloat16, ...; bfloat16+int8 for int8 weights (default: by device)"
    )
    context_window: int | None = Field(None, ge=16, description="tokens of recent conversation kept in attention")
    system_prompt: str | None = Field(None, description="system message put first in every NEW session")
    home: Path | None = Field(
        None, description="session store root, shared by every server process (default: $DELTAMEM_HOME/sessions)"
    )
    store: str | None = Field(
        None,
        description="session store shared by every server: a folder, or redis://HOST:6379/0 (rediss://, unix://) "
        "for servers on several machines (default: --home, else $DELTAMEM_STORE, else the default folder)",
    )
    lock_lease_s: float = Field(
        30.0, gt=0.0, le=3600.0,
        description="Redis store: how long a session stays locked after its server died (renewed while a turn runs)",
    )
    textlog: Path | None = Field(None, description="embedded text log folder (one process only; default: $DELTAMEM_HOME/textlog)")
    chroma_url: str | None = Field(None, description="http://HOST:PORT of a `chroma run` server (for several processes)")
    state_only: bool = Field(False, description="no text log and no retrieval: the δ-mem state alone")
    router: str | None = Field(None, description="router policies, e.g. 'cues+retrieval=0.5+state', or a calibration JSON")
    warm_sessions_mb: int = Field(
        1024, ge=0,
        description="MiB of KV caches and δ-states of recently used sessions kept between turns, so a next turn "
        "prefills only its new messages (least recently used dropped first; 0: none kept)",
    )

    # -- authentication -----------------------------------------------------------------------
    api_keys_file: Path | None = Field(
        None, description=f"API keys: JSON {{KEY: USER_ID}} or 'KEY USER_ID' lines (also: ${API_KEYS_ENV}=KEY:USER,...)"
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict, description="API key -> user id (set from the file or the environment, never a flag)",
        json_schema_extra={"flag": False},
    )
    anonymous_user: str = Field("default", description="user id of requests when no API keys are configured")

    # -- limits -------------------------------------------------------------------------------------
    max_request_bytes: int = Field(1_048_576, ge=1024, description="largest request body accepted (413 above)")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a request may ask for (400 above)")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens of a request that gives none")
    max_ingest_chars: int = Field(
        200_000, ge=1, description="most characters of history one request may add to a session (413 above)"
    )

    # -- scheduling ---------------------------------------------------------------------------------
    batching: bool = Field(True, description="decode concurrent turns of different sessions in one batch")
    batch_wait_ms: float = Field(
        5000.0, ge=0.0, le=60_000.0,
        description="longest an idle batcher waits for announced turns still being prepared, to start them together "
        "(once a batch runs, a turn joins it at the next token step)",
    )
    max_batch_rows: int = Field(16, ge=1, le=256, description="most turns decoded in one batch step")
    max_workers: int = Field(64, ge=1, le=1024, description="turns that may run (or wait for the model) at once")
    threads: int | None = Field(
        None, ge=1, description="torch threads for the model (default: torch's choice; 1-2 on a small shared CPU)"
    )
    max_queued_turns: int = Field(512, ge=1, description="turns accepted at once, running or queued (503 above)")
    lock_timeout_s: float = Field(
        120.0, gt=0.0, description="how long a turn waits for its session (another request or process) before 503"
    )

    # -- HTTP ----------------------------------------------------------------------------------------
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed (CORS); never '*'")
    log_level: str = Field("info", description="uvicorn log level: critical, error, warning, info, debug")

    @field_validator("anonymous_user")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return _valid_user(value)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from deltamem_agents.store.url import check_store_spec

        return check_store_spec(value)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if any(origin.strip() == "*" for origin in value):
            raise ValueError("cors_origins may not contain '*': list the exact origins (https://app.example.com)")
        return [origin.strip().rstrip("/") for origin in value]

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug", "trace")
        if value.lower() not in levels:
            raise ValueError(f"log_level must be one of {', '.join(levels)}, got {value!r}")
        return value.lower()

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: Mapping[str, str]) -> dict[str, str]:
        for key, user in value.items():
            if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise ValueError(
                    f"an API key for user {user!r} is too short or has spaces: use at least {MIN_KEY_LENGTH} "
                    "characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
            _valid_user(user)
        return dict(value)

    @model_validator(mode="after")
    def _resolve_keys_and_check_exposure(self) -> ServerSettings:
        if self.api_keys_file is not None:
            path = Path(self.api_keys_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read api_keys_file {path}: {exc.strerror}") from None
            merged = {**parse_api_keys(text, source=str(path)), **self.api_keys}
            self.api_keys = self._keys(merged)  # validated like the field
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) is larger than max_tokens ({self.max_tokens})"
            )
        if self.store is not None and self.home is not None:
            raise ValueError("give the session store once: home (a folder) or store (a folder or a redis:// URL)")
        if self.state_only and (self.textlog is not None or self.chroma_url is not None):
            raise ValueError("state_only turns the text log off; do not also give textlog or chroma_url")
        if not is_loopback(self.host) and not self.api_keys:
            raise ValueError(
                f"binding to {self.host!r} exposes the server beyond this machine, so API keys are required: "
                f"give --api-keys-file FILE or {API_KEYS_ENV}=KEY:USER_ID, or bind to 127.0.0.1"
            )
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

    @classmethod
    def with_env_keys(cls, environ: Mapping[str, str] | None = None, **fields: object) -> ServerSettings:
        """Settings from ``fields`` plus the API keys in ``$DELTAMEM_API_KEYS`` (if set)."""
        text = (environ if environ is not None else os.environ).get(API_KEYS_ENV, "")
        if text.strip():
            keys = dict(fields.pop("api_keys", None) or {})  # type: ignore[arg-type]
            fields["api_keys"] = {**parse_api_keys(text, source=f"${API_KEYS_ENV}"), **keys}
        return cls.model_validate(fields)


__all__ = ["API_KEYS_ENV", "MIN_KEY_LENGTH", "ServerSettings", "is_loopback", "parse_api_keys"]
