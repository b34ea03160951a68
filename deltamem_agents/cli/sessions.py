"""`deltamem chat | ingest | ask | sessions ...`: talking to persistent sessions from the shell.

The commands that run the model share their options (backbone, adapter, store, user, device,
dtype, context window) through the ``*Opt`` aliases and `build_runtime` below. The ``sessions``
group only reads the store: it never loads the model.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from deltamem_agents.cli._common import Device, console, err_console, fail, user_errors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.core.state import DeltaMemState
    from deltamem_agents.runtime import DeltaMemRuntime
    from deltamem_agents.session import SessionKey, SessionStore, TurnStats

# -- shared options -----------------------------------------------------------------------------
BackboneOpt = Annotated[
    str | None, typer.Option("--backbone", help="backbone name, .gguf file, folder or HF id (default: embedded SmolLM2)")
]
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
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16, ... (default: by device)")]
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
RouterOpt = Annotated[
    str | None,
    typer.Option("--router", help="policies, e.g. 'cues+retrieval=0.5+state', or a calibration JSON file (default: cues+retrieval+state)"),
]

LOCK_TIMEOUT_S = 120.0  # how long a command waits for another process's turn on the same session


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

    from deltamem_agents.model.backbone import resolve_dtype
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
            resolve_dtype(dtype, torch.device("cpu"))
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


def _generation(max_new_tokens: int | None) -> dict[str, Any]:
    return {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}


def _echo(piece: str) -> None:
    console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)


# -- chat ---------------------------------------------------------------------------------------
CHAT_HELP = "/exit (or Ctrl-D) ends · /stats shows the last turn's stats · /probe TEXT asks without writing · /why explains the last route (--hybrid)"


@user_errors
def chat(
    session: SessionOpt = "chat",
    user: UserOpt = "default",
    home: HomeOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    context_window: ContextOpt = None,
    system_prompt: SystemOpt = None,
    max_new_tokens: MaxTokensOpt = None,
    hybrid: HybridOpt = False,
    textlog: TextLogOpt = None,
    router: RouterOpt = None,
) -> None:
    """Chat with a session (created if new); every turn is saved, so the next run resumes it."""
    key = session_key(session, user)
    runtime = build_runtime(
        home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, context_window=context_window,
        system_prompt=system_prompt,
    )
    memory = None
    if hybrid:
        from deltamem_agents.cli.memory import build_hybrid

        memory = build_hybrid(runtime, textlog=textlog, router=router)
    last_decision = None
    store = runtime.store
    existed = store.exists(key)
    with store.lock(key):
        current = runtime.session(key.session_id, user_id=key.user_id)
    where = f"resumed, {len(current.messages)} messages" if existed else "new session"
    console.print(f"{key} ({where}) in {store.location}", style="bold", markup=False, highlight=False)
    console.print(CHAT_HELP, style="dim", markup=False, highlight=False)
    generation = _generation(max_new_tokens)
    last_stats = None
    while True:
        try:
            line = console.input("[bold cyan]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/stats":
            console.print(format_stats(last_stats) if last_stats else "no turn yet", style="dim", markup=False)
            continue
        if text == "/help":
            console.print(CHAT_HELP, style="dim", markup=False, highlight=False)
            continue
        if text == "/why":
            why = last_decision.explain() if last_decision else "no routed turn yet (routing needs --hybrid)"
            console.print(why, style="dim", markup=False, highlight=False)
            continue
        probe = text.startswith("/probe")
        if probe:
            text = text.removeprefix("/probe").strip()
            if not text:
                console.print("usage: /probe TEXT", style="dim", markup=False)
                continue
        elif text.startswith("/"):
            console.print(f"unknown command {text.split()[0]}; {CHAT_HELP}", style="dim", markup=False, highlight=False)
            continue
        console.print("[bold green]δ>[/] " if not probe else "[bold yellow]probe>[/] ", end="")
        try:
            if memory is not None and not probe:
                for chunk in memory.stream_chat(text, session_id=key.session_id, user_id=key.user_id, **generation):
                    _echo(chunk.text)
                    if chunk.reply is not None:
                        last_stats, last_decision = chunk.reply.stats, chunk.reply.decision
                console.print()
                continue
            with store.lock(key):
                current = runtime.session(key.session_id, user_id=key.user_id)
                for piece in current.stream(text, write=not probe, **generation):
                    _echo(piece)
                console.print()
                if not probe:
                    runtime.save(current)
            last_stats = current.last_stats
        except KeyboardInterrupt:
            console.print("\n[interrupted: this turn was not saved]", style="dim", markup=False)


# -- ingest -------------------------------------------------------------------------------------
class Role(str, Enum):
    user = "user"
    assistant = "assistant"
    system = "system"


READ_BLOCK = 1 << 16  # bytes read at a time: memory stays flat whatever the file size
SPOOL_MAX = 16 << 20  # stdin is spooled (to disk past this size) so it can be checked first


class TextSource:
    """A file, or stdin spooled to a temporary file, readable several times."""

    def __init__(self, path: Path) -> None:
        self._spool: IO[bytes] | None = None
        if str(path) == "-":
            self.label = "<stdin>"
            self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115 - closed in close()
            shutil.copyfileobj(sys.stdin.buffer, self._spool, READ_BLOCK)
            self.size = self._spool.tell()
            self.path = None
            return
        if not path.exists():
            raise fail(f"no such file: {path}")
        if path.is_dir():
            raise fail(f"{path} is a directory, not a text file")
        self.label = str(path)
        self.path = path.resolve()
        self.size = path.stat().st_size

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self._spool is not None:
            self._spool.seek(0)
            yield self._spool
            return
        assert self.path is not None
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise fail(f"cannot read {self.label}: {exc.strerror or exc}") from None
        with handle:
            yield handle

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def decoded_blocks(stream: IO[bytes], label: str) -> Iterator[str]:
    """UTF-8 text of a byte stream, block by block; NUL bytes or invalid UTF-8 -> one-line error."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    started = False
    while True:
        block = stream.read(READ_BLOCK)
        nul = block.find(b"\0")
        if nul != -1:
            raise fail(
                f"{label} looks like a binary file (NUL byte at byte offset {offset + nul}); "
                "ingest reads UTF-8 text (a UTF-16 file must be converted to UTF-8 first)"
            )
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start]
            raise fail(
                f"{label} is not UTF-8 text: byte 0x{bad:02x} at byte offset {offset - pending + exc.start} "
                f"({exc.reason}); convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`"
            ) from None
        offset += len(block)
        if text and not started:
            started = True
            text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not content
        if text:
            yield text
        if not block:
            return


def _cut(buffer: str, limit: int) -> int:
    """Where to end a chunk of at most ``limit`` characters: a paragraph, line, sentence or word
    boundary in its second half if there is one, else exactly ``limit``."""
    window = buffer[:limit]
    low = limit // 2
    for separator in ("\n\n", "\n"):
        index = window.rfind(separator, low)
        if index != -1:
            return index + len(separator)
    index = max(window.rfind(end, low) for end in (". ", "! ", "? ", "; "))
    if index != -1:
        return index + 2
    for index in range(len(window) - 1, low - 1, -1):
        if window[index].isspace():
            return index + 1
    return limit


def text_chunks(blocks: Iterator[str], limit: int) -> Iterator[tuple[str, int]]:
    """``(chunk, bytes consumed)`` pairs; chunks hold at most ``limit`` characters (stripped,
    never empty), and the bytes count the whitespace dropped around them too."""
    buffer = ""

    def emit(piece: str) -> Iterator[tuple[str, int]]:
        size = len(piece.encode("utf-8"))
        content = piece.strip()
        if content:
            yield content, size
        elif size:
            yield "", size  # only whitespace: advances the progress bar, nothing to ingest

    for block in blocks:
        buffer += block
        while len(buffer) > limit:
            cut = _cut(buffer, limit)
            piece, buffer = buffer[:cut], buffer[cut:]
            yield from emit(piece)
    while buffer:
        cut = _cut(buffer, limit) if len(buffer) > limit else len(buffer)
        piece, buffer = buffer[:cut], buffer[cut:]
        yield from emit(piece)


def check_text(source: TextSource) -> int:
    """Validate the whole input before anything is written; returns its character count."""
    characters = 0
    blank = True
    with source.open() as stream:
        for text in decoded_blocks(stream, source.label):
            characters += len(text)
            blank = blank and not text.strip()
    if characters == 0:
        raise fail(f"{source.label} is empty: nothing to ingest")
    if blank:
        raise fail(f"{source.label} holds only whitespace: nothing to ingest")
    return characters


@user_errors
def ingest(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file (a transcript or a document); - reads stdin")],
    session: SessionOpt,
    role: Annotated[Role, typer.Option(help="role of the ingested messages")] = Role.user,
    chunk_chars: Annotated[int, typer.Option(min=50, help="characters per message (split at paragraph/line/word boundaries)")] = 4000,
    user: UserOpt = "default",
    home: HomeOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    context_window: ContextOpt = None,
    system_prompt: SystemOpt = None,
) -> None:
    """Write a text file into a session's memory (created if new), one message per chunk.

    The file is read in blocks, never whole; each chunk is committed as it is written, so an
    interrupted ingest keeps the chunks done so far.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from deltamem_agents.store.records import ChatMessage

    key = session_key(session, user)
    source = TextSource(file)
    try:
        check_text(source)
        runtime = build_runtime(
            home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, context_window=context_window,
            system_prompt=system_prompt,
        )
        store = runtime.store
        parts = tokens = 0
        started = time.perf_counter()
        progress = Progress(
            TextColumn("[bold]ingest[/] {task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[parts]} parts"),
            TimeRemainingColumn(), console=err_console,
        )
        # The session is locked for the whole ingest: another process's turn waits rather than
        # interleaving with the document.
        with progress, store.lock(key), source.open() as stream:
            task = progress.add_task(escape(source.label), total=source.size or None, parts=0)
            current = runtime.session(key.session_id, user_id=key.user_id)
            metadata = None
            try:
                for chunk, size in text_chunks(decoded_blocks(stream, source.label), chunk_chars):
                    if chunk:
                        message = ChatMessage(
                            role=role.value, content=chunk, metadata={"source": str(source.path or source.label), "part": parts}
                        )
                        tokens += current.ingest(message).tokens_written
                        metadata = runtime.save(current)
                        parts += 1
                    progress.update(task, advance=size, parts=parts)
                progress.update(task, completed=source.size)
            except KeyboardInterrupt:
                progress.stop()
                err_console.print(
                    f"interrupted: {parts} part(s) of {source.label} were committed to {key}; the rest was not ingested",
                    style="yellow", markup=False, highlight=False,
                )
                raise typer.Exit(130) from None
    finally:
        source.close()
    assert metadata is not None
    console.print(
        f"ingested {source.label} into {key}: {parts} message(s), {tokens:,} tokens written in "
        f"{time.perf_counter() - started:.1f} s; the session now has {metadata.message_count} messages "
        f"(turn {metadata.turn_count})",
        markup=False, highlight=False,
    )


# -- ask ----------------------------------------------------------------------------------------
@user_errors
def ask(
    question: Annotated[str, typer.Argument(help="the question; - reads it from stdin")],
    session: SessionOpt,
    write: Annotated[bool, typer.Option("--write/--no-write", help="--no-write: a probe, nothing is saved")] = True,
    create: Annotated[bool, typer.Option("--create", help="start the session if it does not exist")] = False,
    max_new_tokens: MaxTokensOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (reply, stats, state norms)")] = False,
    stats: Annotated[bool, typer.Option("--stats/--no-stats", help="print the turn's stats on stderr")] = True,
    user: UserOpt = "default",
    home: HomeOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    context_window: ContextOpt = None,
    system_prompt: SystemOpt = None,
    hybrid: HybridOpt = False,
    textlog: TextLogOpt = None,
    router: RouterOpt = None,
) -> None:
    """Ask a session one question; the turn is saved unless --no-write."""
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise fail("the question is empty")
    if hybrid and not write:
        raise fail("--hybrid logs the turn in the text log, so it cannot be a probe: drop --no-write or --hybrid")
    key = session_key(session, user)
    store = open_store(home)
    if not create:
        require_session(store, key)
    notes: list[str] = []
    runtime = build_runtime(
        home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, context_window=context_window,
        system_prompt=system_prompt, notes=notes, quiet=as_json,
    )
    store = runtime.store
    with store.lock(key):
        existed = store.exists(key)
        current = runtime.session(key.session_id, user_id=key.user_id)
        loaded = norms_of(current.state)
        loaded_digest = state_digest(current.state)
        messages_before = len(current.messages)
        pieces = []
        decision = None
        if hybrid:
            from deltamem_agents.cli.memory import build_hybrid

            memory = build_hybrid(runtime, textlog=textlog, router=router)
            for chunk in memory.stream_chat(question, session_id=key.session_id, user_id=key.user_id, **_generation(max_new_tokens)):
                if chunk.reply is not None:
                    decision, turn = chunk.reply.decision, chunk.reply.stats
                    current = runtime.session(key.session_id, user_id=key.user_id)
                    metadata = store.head(key)
                pieces.append(chunk.text)
                if not as_json:
                    _echo(chunk.text)
        else:
            for piece in current.stream(question, write=write, **_generation(max_new_tokens)):
                pieces.append(piece)
                if not as_json:
                    _echo(piece)
            turn = current.last_stats
            metadata = runtime.save(current) if write else None
    assert turn is not None
    if as_json:
        typer.echo(json.dumps({
            "session": str(key),
            "store": store.location,
            "created": not existed,
            "question": question,
            "reply": "".join(pieces),
            "stats": turn.model_dump(),
            "messages_loaded": messages_before,
            "state_norms_loaded": loaded,
            "state_norms_saved": norms_of(current.state) if write else None,
            "state_digest_loaded": loaded_digest,
            "state_digest_saved": state_digest(current.state) if write else None,
            "turn_count": metadata.turn_count if metadata else None,
            "message_count": metadata.message_count if metadata else None,
            "route": None if decision is None else decision.model_dump(mode="json", exclude={"snippets"}),
            "notes": notes,
        }))
        return
    console.print()
    if stats:
        saved = f"saved as turn {metadata.turn_count}" if metadata else "not saved (--no-write)"
        err_console.print(f"[{format_stats(turn)} · {saved}]", style="dim", markup=False, highlight=False)
        if decision is not None:
            err_console.print(f"[route {decision.route}: {decision.reason}]", style="dim", markup=False, highlight=False)


# -- sessions list | show | delete ----------------------------------------------------------------
sessions_app = typer.Typer(help="List, show and delete stored sessions (never loads the model).", no_args_is_help=True)


def _when(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@sessions_app.command("list")
@user_errors
def sessions_list(
    user: Annotated[str | None, typer.Option("--user", help="only this user's sessions (default: all users)")] = None,
    home: HomeOpt = None,
) -> None:
    """Every stored session: turns, messages, tokens written, last update."""
    store = open_store(home)
    found = store.list(user)
    if not found:
        console.print(f"no sessions in {store.location}", markup=False, highlight=False)
        return
    table = Table(title=f"sessions in {store.location}")
    for column in ("user", "session", "turns", "messages", "tokens written", "updated"):
        table.add_column(column, justify="right" if column in ("turns", "messages", "tokens written") else "left")
    for meta in found:
        table.add_row(
            meta.key.user_id, meta.key.session_id, str(meta.turn_count), str(meta.message_count),
            f"{meta.tokens_written:,}", _when(meta.updated_at),
        )
    console.print(table)


@sessions_app.command("show")
@user_errors
def sessions_show(
    session: Annotated[str, typer.Argument(help="session id (or USER/SESSION)")],
    user: UserOpt = "default",
    home: HomeOpt = None,
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="how many of the latest messages to print")] = 10,
    full: Annotated[bool, typer.Option("--full", help="print whole messages, not their first 300 characters")] = False,
) -> None:
    """A session's metadata, its memory's size and its latest messages."""
    key = session_key(session, user)
    store = open_store(home)
    require_session(store, key)
    record = store.load(key)
    assert record is not None
    meta = record.metadata
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    rows = [
        ("session", str(key)),
        ("folder", str(store.session_dir(key))) if hasattr(store, "session_dir") else ("store", store.location),
        ("created", _when(meta.created_at)),
        ("updated", _when(meta.updated_at)),
        ("turns", str(meta.turn_count)),
        ("messages", str(meta.message_count)),
        ("tokens written", f"{meta.tokens_written:,}"),
        ("backbone", meta.fingerprint.backbone),
        ("adapter", meta.fingerprint.adapter),
    ]
    state = record.state
    if state is None or not len(state):
        rows.append(("δ-mem state", "none yet (nothing written)"))
    else:
        total = sum(v * v for v in state.norms().values()) ** 0.5
        rows.append((
            "δ-mem state",
            f"{len(state)} layers x {state.num_heads} head(s), rank {state.rank}; norm {total:.4g} "
            f"(`deltamem inspect --session {key}` for details)",
        ))
    for extra_key, value in meta.extra.items():
        rows.append((f"extra.{extra_key}", json.dumps(value, ensure_ascii=False)[:200]))
    for name, value in rows:
        info.add_row(name, value)
    console.print(info, markup=False, highlight=False)
    shown = record.messages[-last:] if last else []
    if shown:
        console.print(f"\nlast {len(shown)} of {len(record.messages)} messages:", style="bold")
    for offset, message in enumerate(shown, start=len(record.messages) - len(shown)):
        content = message.content
        if not full and len(content) > 300:
            content = f"{content[:300]}… ({len(content):,} characters)"
        origin = ""
        if message.metadata:
            origin = " " + json.dumps(message.metadata, ensure_ascii=False)
        console.print(f"[{offset}] {message.role} · {_when(message.created_at)}{origin}", style="dim", markup=False, highlight=False)
        console.print(content, markup=False, highlight=False)


@sessions_app.command("delete")
@user_errors
def sessions_delete(
    session: Annotated[str, typer.Argument(help="session id (or USER/SESSION)")],
    user: UserOpt = "default",
    home: HomeOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a session: its messages and its memory."""
    key = session_key(session, user)
    store = open_store(home)
    require_session(store, key)
    if not yes and not typer.confirm(f"delete session {key} (its messages and memory)?", default=False):
        console.print("nothing deleted", markup=False)
        raise typer.Exit(1)
    store.delete(key)
    console.print(f"deleted session {key} from {store.location}", markup=False, highlight=False)
