"""`deltamem export` and `deltamem import`: a user's memory as one portable archive.

`export` only reads the store (and the text log): it never loads the model. `import` verifies
the whole archive first, then loads the model, because a state is only valid for the backbone,
adapter and config it was written with (``--replay`` re-writes it from the messages instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltamem_agents.cli._common import Device, console, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ChromaOpt,
    DtypeOpt,
    HomeOpt,
    TextLogOpt,
    build_runtime,
    open_store,
    open_textlog,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.memory import TextLog

NoTextLogOpt = Annotated[bool, typer.Option("--no-textlog", help="leave the text log out (sessions and states only)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]


def _textlog(textlog: Path | None, chroma_url: str | None, *, skip: bool, create: bool) -> TextLog | None:
    """The text log the options name; ``None`` with ``--no-textlog``, or (when not ``create``)
    when no log was named and the default folder does not exist."""
    from deltamem_agents.memory import default_textlog_path

    if skip:
        return None
    if textlog is None and chroma_url is None and not create and not default_textlog_path().exists():
        return None
    return open_textlog(textlog, chroma_url)


@user_errors
def export_command(
    user: Annotated[str, typer.Option("--user", help="whose memory to export")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the archive file to write (a zip)")],
    session: Annotated[str | None, typer.Option("--session", "-s", help="only this session (default: all of the user's)")] = None,
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    no_textlog: NoTextLogOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a user's sessions (messages, metadata, δ-states) and text-log entries as one archive."""
    from deltamem_agents.memory.archive import export_archive

    log = _textlog(textlog, chroma_url, skip=no_textlog, create=False)
    try:
        report = export_archive(open_store(home), out, user_id=user, session_id=session, textlog=log)
    finally:
        if log is not None:
            log.close()
    if as_json:
        console.print_json(report.model_dump_json())
        return
    entries = f", {report.log_entries} text-log entries" if log is not None else " (no text log)"
    console.print(
        f"exported {len(report.sessions)} session(s), {report.messages} messages{entries} to {out} "
        f"(sha256 {report.sha256})", markup=False, highlight=False, soft_wrap=True,
    )


@user_errors
def import_command(
    archive: Annotated[Path, typer.Argument(help="an archive written by `deltamem export`")],
    replay: Annotated[
        bool, typer.Option("--replay", help="re-write each state from its messages with this model (for another backbone or adapter)")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="replace sessions that already exist")] = False,
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    no_textlog: NoTextLogOpt = False,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import an archive into the session store (a folder or Redis); damaged archives, another
    model's states (without --replay) and existing sessions (without --force) are refused."""
    from deltamem_agents.memory.archive import check_conflicts, import_archive, read_archive

    # Before the model loads: a damaged archive or an existing session fails fast.
    verified = read_archive(archive)
    check_conflicts(verified, open_store(home), force=force)
    runtime = build_runtime(home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, quiet=as_json)
    has_entries = any(content.log_entries for content in verified.sessions)
    log = _textlog(textlog, chroma_url, skip=no_textlog or not has_entries, create=True)
    try:
        report = import_archive(verified, runtime, textlog=log, replay=replay, force=force, progress=not as_json)
    finally:
        if log is not None:
            log.close()
    if as_json:
        console.print(json.dumps(report.model_dump(mode="json")), markup=False, highlight=False, soft_wrap=True)
        return
    how = "states re-written from the messages by this model" if report.replayed else "states as exported"
    skipped = f"; {report.log_entries_skipped} text-log entries left out" if report.log_entries_skipped else ""
    console.print(
        f"imported {len(report.sessions)} session(s), {report.messages} messages, {report.log_entries} text-log "
        f"entries into {report.store} ({how}){skipped}", markup=False, highlight=False, soft_wrap=True,
    )
