"""`deltamem chat` and `deltamem ask`: talking to a persistent session, interactively or once.

Both run the model (options and builders from `_runtime`); with ``--hybrid`` the turn goes
through a `HybridMemory`, so it is also logged and the router may retrieve from the log.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from deltamem_agents.cli._common import Device, console, err_console, fail, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ContextOpt,
    DtypeOpt,
    HomeOpt,
    HybridOpt,
    MaxTokensOpt,
    RouterOpt,
    SessionOpt,
    SystemOpt,
    TextLogOpt,
    UserOpt,
    build_hybrid,
    build_runtime,
    echo,
    format_stats,
    generation,
    norms_of,
    open_store,
    require_session,
    session_key,
    state_digest,
)

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
    memory = build_hybrid(runtime, textlog=textlog, router=router) if hybrid else None
    last_decision = None
    store = runtime.store
    existed = store.exists(key)
    with store.lock(key):
        current = runtime.session(key.session_id, user_id=key.user_id)
    where = f"resumed, {len(current.messages)} messages" if existed else "new session"
    console.print(f"{key} ({where}) in {store.location}", style="bold", markup=False, highlight=False)
    console.print(CHAT_HELP, style="dim", markup=False, highlight=False)
    options = generation(max_new_tokens)
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
                for chunk in memory.stream_chat(text, session_id=key.session_id, user_id=key.user_id, **options):
                    echo(chunk.text)
                    if chunk.reply is not None:
                        last_stats, last_decision = chunk.reply.stats, chunk.reply.decision
                console.print()
                continue
            with store.lock(key):
                current = runtime.session(key.session_id, user_id=key.user_id)
                for piece in current.stream(text, write=not probe, **options):
                    echo(piece)
                console.print()
                if not probe:
                    runtime.save(current)
            last_stats = current.last_stats
        except KeyboardInterrupt:
            console.print("\n[interrupted: this turn was not saved]", style="dim", markup=False)


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
            memory = build_hybrid(runtime, textlog=textlog, router=router)
            for chunk in memory.stream_chat(question, session_id=key.session_id, user_id=key.user_id, **generation(max_new_tokens)):
                if chunk.reply is not None:
                    decision, turn = chunk.reply.decision, chunk.reply.stats
                    current = runtime.session(key.session_id, user_id=key.user_id)
                    metadata = store.head(key)
                pieces.append(chunk.text)
                if not as_json:
                    echo(chunk.text)
        else:
            for piece in current.stream(question, write=write, **generation(max_new_tokens)):
                pieces.append(piece)
                if not as_json:
                    echo(piece)
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
