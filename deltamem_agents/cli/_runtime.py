"""What the commands that work on sessions share: their options, and the builders behind them.

The options (backbone, adapter, store, user, session, device, dtype, context window, text log,
router ...) are defined once here as ``Annotated`` aliases, so every command spells them the
same; `build_runtime` and `build_hybrid` turn them into a loaded `DeltaMemRuntime` and a
`HybridMemory`. Nothing heavy is imported until a builder runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltamem_agents.cli._common import console, err_console, fail

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.core.state import DeltaMemState
    from deltamem_agents.memory import HybridMemory, TextLog
    from deltamem_agents.runtime import DeltaMemRuntime
    from deltamem_agents.session import SessionKey, SessionStore, TurnStats

# -- options ------------------------------------------------------------------------------------
BackboneOpt = Annotated[
    str | None, typer.Option("--backbone", help="backbone name, .gguf file, folder or HF id (default: embedded SmolLM2)")
]
#: the backbone option of the commands that measure or train (bench, train, eval)
BackbonePathOpt = Annotated[str | None, typer.Option(help="backbone name or path (default: embedded SmolLM2)")]
AdapterOpt = Annotated[
    str, typer.Option("--adapter", help="adapter folder, 'auto' (shipped for the backbone) or 'none' (untrained)")
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="session store folder (default: $DELTAMEM_STORE, a folder or a redis:// URL, else "
        "$DELTAMEM_HOME/sessions or ~/.local/share/deltamem/sessions)",
    ),
]
UserOpt = Annotated[str, typer.Option("--user", help="user id the sessions belong to")]
SessionOpt = Annotated[str, typer.Option("--session", "-s", help="session id (or USER/SESSION)")]
SessionArg = Annotated[str, typer.Argument(help="session id (or USER/SESSION)")]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="float32, bfloat16, ...; bfloat16+int8: int8 weights, fastest on CPU (default: by device)"),
]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads")]
ContextOpt = Annotated[
    int | None, typer.Option("--context-window", min=16, help="tokens of recent conversation kept in attention")
]
SystemOpt = Annotated[
    str | None, typer.Option("--system-prompt", help="system message put first in a NEW session (ignored when resuming)")
]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-new-tokens", min=1, help="reply length limit (default 256)")]
HybridOpt = Annotated[
    bool, typer.Option("--hybrid/--state-only", help="--hybrid: also log turns in the text log and let the router retrieve from it")
]
TextLogOpt = Annotated[
    Path | None, typer.Option("--textlog", help="text log folder (default: $DELTAMEM_HOME/textlog or ~/.local/share/deltamem/textlog)")
]
ChromaOpt = Annotated[str | None, typer.Option("--chroma-url", help="http://HOST:PORT of a `chroma run` server (instead of --textlog)")]
RouterOpt = Annotated[
    str | None,
    typer.Option("--router", help="policies, e.g. 'cues+retrieval=0.5+state', or a calibration JSON file (default: cues+retrieval+state)"),
]

LOCK_TIMEOUT_S = 120.0  # how long a command waits for another process's turn on the same session


# -- the store and its keys ---------------------------------------------------------------------
def open_store(home: Path | None) -> SessionStore:
    """The folder ``--home`` names, else the store ``$DELTAMEM_STORE`` names (a folder or a
    ``redis://`` URL, so every command can share sessions with servers), else the default folder."""
    from deltamem_agents.store.url import store_from_env

    return store_from_env(home, lock_timeout=LOCK_TIMEOUT_S)


def session_key(session: str, user: str = "default") -> SessionKey:
    """``--session ID --user U`` or ``--session U/ID`` -> a key (ids are validated)."""
    from deltamem_agents.store.records import SessionKey

    if "/" in session:
        key = SessionKey.parse(session)
        if user not in ("default", key.user_id):
            raise fail(f"--session {session!r} names user {key.user_id!r} but --user is {user!r}")
        return key
    return SessionKey(user_id=user, session_id=session)


def require_session(store: SessionStore, key: SessionKey) -> None:
    """A clear error for a session that does not exist (checked before loading any model)."""
    if not store.exists(key):
        raise fail(
            f"no session {key} in {store.location} (see `deltamem sessions list`); start one with "
            f"`deltamem chat --session {key.session_id}` or `deltamem ingest FILE --session {key.session_id}`"
        )


# -- the model and the memory -------------------------------------------------------------------
def build_runtime(
    *,
    home: Path | None,
    backbone: str | None = None,
    adapter: str = "auto",
    device: str | None = None,
    dtype: str | None = None,
    context_window: int | None = None,
    system_prompt: str | None = None,
    notes: list[str] | None = None,
    quiet: bool = False,
) -> DeltaMemRuntime:
    """Load the backbone and adapter once, with the session store at ``home``.

    The runtime's warning that no trained adapter exists is turned into one ``note:`` line
    (and appended to ``notes``) instead of a Python warning with a source location.
    """
    import torch

    from deltamem_agents.model.backbone import resolve_dtype, split_weight_spec
    from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning
    from deltamem_agents.session import SessionConfig

    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise fail(f"unknown device {device!r}: use cpu, cuda, cuda:1, mps ...") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise fail(f"--device {device}: CUDA is not available on this machine")
    if dtype is not None:
        try:
            resolve_dtype(split_weight_spec(dtype)[0], torch.device("cpu"))
        except ValueError as exc:
            raise fail(str(exc)) from None
    adapter_arg: str | None = adapter
    if adapter.lower() == "none":
        adapter_arg = None
    elif adapter != "auto" and not Path(adapter).expanduser().exists():
        raise fail(f"adapter {adapter!r} does not exist (give an adapter folder, 'auto' or 'none')")
    settings: dict[str, Any] = {"context_window": context_window, "system_prompt": system_prompt}
    settings = {name: value for name, value in settings.items() if value is not None}
    session_config = SessionConfig(**settings) if settings else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrainedMemoryWarning)
        status = (
            contextlib.nullcontext() if quiet
            else err_console.status(f"loading {backbone or 'the embedded backbone'} ...", spinner="dots")
        )
        with status:
            runtime = DeltaMemRuntime(
                backbone, adapter=adapter_arg, store=open_store(home), session_config=session_config,
                device=device, dtype=dtype,
            )
    for warning in caught:
        if issubclass(warning.category, UntrainedMemoryWarning):
            text = str(warning.message)
            if notes is not None:
                notes.append(text)
            if not quiet:
                err_console.print(f"note: {text}", style="yellow", markup=False, highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return runtime


def open_textlog(textlog: Path | None = None, chroma_url: str | None = None) -> TextLog:
    """The text log ``--textlog`` / ``--chroma-url`` name (default: the embedded one)."""
    from deltamem_agents.memory import TextLog, TextLogConfig

    settings: dict[str, Any] = {}
    if textlog is not None:
        settings["path"] = textlog
    if chroma_url is not None:
        settings["server_url"] = chroma_url
    return TextLog(TextLogConfig(**settings))


def build_hybrid(
    runtime: DeltaMemRuntime, *, textlog: Path | None = None, chroma_url: str | None = None, router: str | None = None
) -> HybridMemory:
    """A `HybridMemory` over ``runtime`` with the log and router the options name."""
    from deltamem_agents.memory import HybridMemory
    from deltamem_agents.memory.routing import MemoryRouter, router_from_spec

    if router is None:
        chosen = MemoryRouter()
    elif router.endswith(".json") or Path(router).expanduser().is_file():
        chosen = MemoryRouter.from_calibration(router)
    else:
        chosen = router_from_spec(router)
    return HybridMemory(runtime, open_textlog(textlog, chroma_url), chosen)


def generation(max_new_tokens: int | None) -> dict[str, Any]:
    """The generation keywords ``--max-new-tokens`` stands for (none: the session's default)."""
    return {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}


# -- what a turn did ----------------------------------------------------------------------------
def echo(piece: str) -> None:
    """Print a streamed piece of a reply as it comes (no markup, no line break)."""
    console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)


def format_stats(stats: TurnStats) -> str:
    parts = [f"{stats.tokens_written} tokens written" if stats.wrote else "probe: nothing written"]
    parts.append(f"context {stats.context_tokens} tokens")
    if stats.prefill_tokens:
        parts.append(f"prefill {stats.prefill_tokens} tok in {stats.prefill_ms:.0f} ms")
    if stats.decode_tokens:
        rate = stats.decode_tokens / max(stats.decode_ms / 1e3, 1e-9)
        parts.append(f"decode {stats.decode_tokens} tok in {stats.decode_ms:.0f} ms ({rate:.1f} tok/s)")
    if stats.window_rebuilt:
        parts.append("context rebuilt")
    return " · ".join(parts)


def norms_of(state: DeltaMemState | None) -> dict[str, float]:
    return {} if state is None else {str(layer): value for layer, value in state.norms().items()}


def state_digest(state: DeltaMemState | None) -> str | None:
    """sha256 of the state's tensors (layer ids, dtypes, shapes and values): equal digests are equal states."""
    import hashlib

    import torch

    if state is None:
        return None
    digest = hashlib.sha256()
    for layer, tensor in state.layers.items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{layer}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())  # bytes of any dtype, bfloat16 too
    return digest.hexdigest()
