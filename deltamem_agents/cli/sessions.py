"""`deltamem sessions list | show | delete | retention | prune` and `deltamem forget`: the stored
sessions themselves.

``list``, ``show``, ``delete`` and ``retention`` only read (or change) the store and the log: they
never load the model. `prune` and `forget` do, because removing log entries rebuilds the
session's state by replaying the messages that remain.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from deltamem_agents.cli._common import Device, console, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ChromaOpt,
    DtypeOpt,
    HomeOpt,
    SessionArg,
    SessionOpt,
    TextLogOpt,
    UserOpt,
    build_hybrid,
    build_runtime,
    open_store,
    open_textlog,
    require_session,
    session_key,
)

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
    session: SessionArg,
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
    session: SessionArg,
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


@user_errors
def forget(
    session: SessionOpt,
    entry: Annotated[
        list[str] | None, typer.Option("--entry", help="a text log entry id to forget (repeatable); none: the whole session")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before forgetting a whole session")] = False,
    user: UserOpt = "default",
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Forget log entries, or a whole session. The δ-mem state cannot unlearn: forgetting an
    entry rebuilds the session's state by replaying the messages that remain."""
    key = session_key(session, user)
    require_session(open_store(home), key)
    if not entry and not yes and not typer.confirm(f"forget the whole session {key} (state, messages and log)?"):
        raise typer.Exit(1)
    runtime = build_runtime(home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype)
    memory = build_hybrid(runtime, textlog=textlog, chroma_url=chroma_url)
    report = memory.forget(session_id=key.session_id, user_id=key.user_id, ids=list(entry) if entry else None)
    if report.state_rebuilt:
        console.print(
            f"forgot {report.messages_removed} message(s) and {report.log_entries_removed} log entries; "
            "the state was rebuilt by replaying the remaining messages",
            markup=False,
        )
    else:
        console.print(f"forgot session {key}: {report.log_entries_removed} log entries removed", markup=False)


@sessions_app.command("prune")
@user_errors
def sessions_prune(
    user: Annotated[str | None, typer.Option("--user", help="prune one user (default: every user)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be removed")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Remove expired memories: entries past their TTL or their user's retention policy
    (`deltamem sessions retention`). Each affected session's state is rebuilt by replaying the
    messages that remain, so this loads the model; run it from cron or a scheduler."""
    runtime = build_runtime(home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype)
    memory = build_hybrid(runtime, textlog=textlog, chroma_url=chroma_url)
    report = memory.prune(user_id=user, dry_run=dry_run, progress=not as_json)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    table = Table("user", "session", "memory id", "reason", "logged at")
    for entry in report.entries:
        table.add_row(entry.user_id, entry.session_id, entry.memory_id, entry.reason, _when(entry.logged_at))
    if report.entries:
        console.print(table)
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {len(report.entries)} expired memories of {len(report.users_checked)} user(s); "
        f"{len(report.sessions_rebuilt)} session state(s) rebuilt",
        markup=False,
    )


@sessions_app.command("retention")
@user_errors
def sessions_retention(
    user: UserOpt = "default",
    max_age: Annotated[str | None, typer.Option("--max-age", help="keep entries this long: 30d, 12h, 90m, or seconds")] = None,
    max_entries: Annotated[int | None, typer.Option("--max-entries", help="keep only the newest N entries")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the user's policy (the default applies)")] = False,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
) -> None:
    """Show or set a user's retention policy (kept beside the text log). Setting one removes
    nothing by itself: `deltamem sessions prune` does. Never loads the model."""
    from deltamem_agents.memory.retention import RetentionPolicies, RetentionPolicy

    if clear and (max_age is not None or max_entries is not None):
        raise typer.BadParameter("--clear cannot be combined with --max-age or --max-entries")
    policies = RetentionPolicies(open_textlog(textlog, chroma_url))
    if clear:
        policies.set(user, None)
    elif max_age is not None or max_entries is not None:
        policies.set(user, RetentionPolicy(max_age=max_age, max_entries=max_entries))
    policy = policies.get(user)
    shown = "none (entries are kept until deleted)" if policy is None else policy.model_dump_json()
    console.print(f"retention policy of user {user!r}: {shown}", markup=False, highlight=False)
