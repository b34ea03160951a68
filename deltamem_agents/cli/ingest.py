"""`deltamem ingest`: a text file (or stdin) written into a session, one message per chunk.

The input is read in blocks and checked whole (UTF-8, no NUL bytes, not blank) before anything
is written; the chunks come from `memory.chunking.chunk_stream`, without overlap, so every
character is ingested once, and the bytes each chunk consumed drive the progress bar.
"""

from __future__ import annotations

import codecs
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from deltamem_agents.cli._common import Device, console, err_console, fail, user_errors
from deltamem_agents.cli._progress import byte_progress
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ContextOpt,
    DtypeOpt,
    HomeOpt,
    SessionOpt,
    SystemOpt,
    UserOpt,
    build_runtime,
    session_key,
)
from deltamem_agents.progress import NullProgress


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


class _Tape:
    """The blocks of a stream, passed on unchanged, keeping the text not yet accounted for."""

    def __init__(self, blocks: Iterable[str]) -> None:
        self._blocks = blocks
        self._pending = ""  # stream text from offset ``self._offset`` on
        self._offset = 0

    def __iter__(self) -> Iterator[str]:
        for block in self._blocks:
            self._pending += block
            yield block

    @property
    def end(self) -> int:
        return self._offset + len(self._pending)

    def take(self, upto: int) -> int:
        """UTF-8 bytes of the stream from the last `take` up to character offset ``upto``."""
        piece, self._pending = self._pending[: upto - self._offset], self._pending[upto - self._offset :]
        self._offset = upto
        return len(piece.encode("utf-8"))


def text_chunks(blocks: Iterable[str], limit: int) -> Iterator[tuple[str, int]]:
    """``(chunk, bytes consumed)`` pairs; chunks hold at most ``limit`` characters (stripped,
    never empty), and the bytes count the whitespace dropped around them too (a final
    whitespace-only tail comes as ``("", bytes)``), so they add up to the decoded input."""
    from deltamem_agents.memory.chunking import chunk_stream

    tape = _Tape(blocks)
    for chunk in chunk_stream(tape, max_chars=limit, overlap_chars=0):
        yield chunk.text, tape.take(chunk.end)
    rest = tape.take(tape.end)
    if rest:
        yield "", rest  # only whitespace: advances the progress bar, nothing to ingest


class ChunkProgress(NullProgress):
    """A `ProgressReporter` for one message's ingest: the tokens fed move the byte bar across
    that message's bytes, so a long message (a large ``--chunk-chars``) shows progress too."""

    def __init__(self, progress: Any, task: Any, size: int) -> None:
        self._progress, self._task, self._size = progress, task, size
        self._total = 0.0
        self.moved = 0.0

    def start(self, description: str, total: float | None = None, *, completed: float = 0) -> None:
        self._total = float(total or 0)

    def advance(self, amount: float = 1) -> None:
        if self._total:
            step = min(self._size * amount / self._total, self._size - self.moved)
            self.moved += step
            self._progress.update(self._task, advance=step)


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
        progress = byte_progress(err_console)
        # The session is locked for the whole ingest: another process's turn waits rather than
        # interleaving with the document.
        with progress, store.lock(key), source.open() as stream:
            task = progress.add_task(escape(source.label), total=source.size or None, parts=0)
            current = runtime.session(key.session_id, user_id=key.user_id)
            metadata = None
            try:
                for chunk, size in text_chunks(decoded_blocks(stream, source.label), chunk_chars):
                    within = ChunkProgress(progress, task, size)
                    if chunk:
                        message = ChatMessage(
                            role=role.value, content=chunk, metadata={"source": str(source.path or source.label), "part": parts}
                        )
                        tokens += current.ingest(message, progress=within).tokens_written
                        metadata = runtime.save(current)
                        parts += 1
                    progress.update(task, advance=size - within.moved, parts=parts)
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
