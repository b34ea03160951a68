"""`deltamem demo`: a fact told to one process is used by another, through the session store.

Two separate processes of the CLI run `deltamem ask` on the same session: the first tells the
model a preference, the second asks about it. The demo shows both replies, their stats, and the
δ-mem state saved by the first process next to the state loaded by the second.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from deltamem_agents.cli._common import Device, console, fail, user_errors
from deltamem_agents.cli._runtime import (
    BackboneOpt,
    DtypeOpt,
    HomeOpt,
    format_stats,
    norms_of,
    open_store,
    state_digest,
)

FIRST = "Hi! My name is Ada and my favourite drink is cardamom tea. Please remember that."
SECOND = "What is my favourite drink?"
FACT = "cardamom"
SYSTEM = "You are a friendly assistant with a good memory. Use what the user told you earlier in the conversation."


def _free_session_id(home: Path) -> str:
    from deltamem_agents.store.records import SessionKey

    store = open_store(home)
    for n in range(1, 1000):
        session_id = "demo" if n == 1 else f"demo-{n}"
        if not store.exists(SessionKey(session_id=session_id)):
            return session_id
    raise fail(f"{home} already holds demo sessions demo .. demo-999: pass another --home")


def _run_ask(label: str, question: str, args: list[str]) -> tuple[dict[str, Any], int, float]:
    """One `deltamem ask --json` in a child process; returns its JSON, its pid and its wall time."""
    command = [sys.executable, "-m", "deltamem_agents.cli", "ask", question, "--json", *args]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with console.status(f"{label}: starting a new Python process ...", spinner="dots"):
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = child.communicate()
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        raise fail(f"{label} (pid {child.pid}) failed with exit code {child.returncode}: {lines[-1] if lines else 'no output'}")
    try:
        payload = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise fail(f"{label} (pid {child.pid}) printed no JSON result: {out.strip()[:200]!r}") from None
    return payload, child.pid, elapsed


def _total(norms: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in norms.values()))


def _norm_table(saved: dict[str, float], loaded: dict[str, float], on_disk: dict[str, float]) -> Table:
    table = Table(title="δ-mem state: Frobenius norm per layer", title_justify="left")
    table.add_column("layer", justify="right")
    table.add_column("saved by process 1", justify="right")
    table.add_column("in the store file", justify="right")
    table.add_column("loaded by process 2", justify="right")
    layers = sorted(saved, key=int)
    shown = layers if len(layers) <= 8 else [layers[round(i * (len(layers) - 1) / 5)] for i in range(6)]
    for layer in shown:
        table.add_row(layer, *(f"{d.get(layer, float('nan')):.6g}" for d in (saved, on_disk, loaded)))
    if len(shown) < len(layers):
        table.add_row("…", "…", "…", "…")
    table.add_row("all", *(f"{_total(d):.6g}" for d in (saved, on_disk, loaded)), style="bold")
    return table


@user_errors
def demo(
    home: HomeOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="reply length limit")] = 40,
    backbone: BackboneOpt = None,
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """The main demo: a fact told to one process is used by a second one (greedy, ~1 min on CPU)."""
    from deltamem_agents.session.session import TurnStats
    from deltamem_agents.store.records import SessionKey

    if home is None:
        home = Path(tempfile.mkdtemp(prefix="deltamem-demo-"))
    session_id = _free_session_id(home)
    args = ["--session", session_id, "--home", str(home), "--max-new-tokens", str(max_new_tokens)]
    for name, value in (("--backbone", backbone), ("--device", device), ("--dtype", dtype)):
        if value is not None:
            args += [name, value]

    console.rule("[bold]δ-mem demo: memory that outlives the process")
    console.print(f"session store: {home}   session: default/{session_id}", markup=False, highlight=False)
    console.print(f"system prompt of the new session: {SYSTEM}", markup=False, highlight=False)
    console.print(
        "Two separate processes run `deltamem ask` on the same session; greedy decoding, "
        f"at most {max_new_tokens} new tokens per reply.\n",
        markup=False, highlight=False,
    )

    first, pid1, time1 = _run_ask("process 1", FIRST, [*args, "--create", "--system-prompt", SYSTEM])
    console.print(f"[bold]process 1[/] (pid {pid1}, {time1:.1f} s including model load)", highlight=False)
    console.print(f"  you: {FIRST}", markup=False, highlight=False)
    console.print(Panel(Text(first["reply"].strip() or "(empty reply)"), title="reply", title_align="left"))
    console.print(f"  turn stats: {format_stats(TurnStats.model_validate(first['stats']))}", style="dim", markup=False)
    console.print(
        f"  saved: turn {first['turn_count']}, {first['message_count']} messages, δ-mem state norm "
        f"{_total(first['state_norms_saved']):.6g}; process 1 has exited\n",
        style="dim", markup=False, highlight=False,
    )

    record = open_store(home).load(SessionKey(session_id=session_id))
    on_disk = norms_of(record.state if record else None)
    disk_digest = state_digest(record.state if record else None)

    second, pid2, time2 = _run_ask("process 2", SECOND, args)
    stats2 = TurnStats.model_validate(second["stats"])
    console.print(f"[bold]process 2[/] (pid {pid2}, {time2:.1f} s including model load)", highlight=False)
    console.print(
        f"  loaded from the store: {second['messages_loaded']} messages and the δ-mem state "
        f"(norm {_total(second['state_norms_loaded']):.6g})",
        style="dim", markup=False, highlight=False,
    )
    console.print(f"  you: {SECOND}", markup=False, highlight=False)
    console.print(Panel(Text(second["reply"].strip() or "(empty reply)"), title="reply", title_align="left"))
    console.print(f"  turn stats: {format_stats(stats2)}\n", style="dim", markup=False)

    saved, loaded = first["state_norms_saved"], second["state_norms_loaded"]
    console.print(_norm_table(saved, loaded, on_disk))
    digests = (first.get("state_digest_saved"), disk_digest, second.get("state_digest_loaded"))
    same = bool(saved) and saved == loaded == on_disk and digests[0] is not None and len(set(digests)) == 1
    console.print(
        f"{'✓' if same else '✗'} the state process 2 loaded {'is' if same else 'is NOT'} the one process 1 saved: "
        "sha256 of its tensors " + (f"{digests[0][:16]}… in all three" if same else " / ".join(str(d)[:16] for d in digests)),
        style="green" if same else "red", markup=False, highlight=False,
    )
    uses = FACT in second["reply"].lower()
    console.print(
        f"{'✓' if uses else '✗'} process 2's reply {'mentions' if uses else 'does not mention'} {FACT} tea, "
        "which only process 1 was told",
        style="green" if uses else "yellow", markup=False, highlight=False,
    )

    notes = first.get("notes") or second.get("notes")
    restored = stats2.context_tokens - stats2.prefill_tokens - stats2.decode_tokens
    if notes:
        if uses:
            how = (
                "How the fact got there: no trained δ-mem adapter ships for this backbone yet, so the memory "
                "is written and saved but does not change the model's answers. Process 2 knew the fact because "
                f"it restored the conversation from the saved log and re-read its recent part ({restored} tokens) "
                "into its attention context. "
            )
        else:
            how = (
                "No trained δ-mem adapter ships for this backbone yet, so the memory is written and saved but "
                "does not change the model's answers; process 2 had the conversation restored from the saved log "
                f"({restored} tokens re-read into its attention context), and this small model did not use it. "
            )
        how += (
            "The δ-mem state was persisted and restored as well (table above); with a trained adapter it is "
            "what carries facts once they have left the context window."
        )
        console.print(Panel(how, title="honest note", title_align="left", border_style="yellow"))
    else:
        how = (
            f"Process 2 read the δ-mem state written by process 1 and re-read the recent conversation ({restored} "
            "tokens) restored from the saved log into its attention context. The fact is still inside that "
            "context here, so this demo cannot tell which of the two carried it. In its evaluation the adapter "
            "shipped for the embedded backbone carries the user's instructions and the task's state beyond the "
            "context window, but mostly not facts and preferences such as this one: those come from retrieval "
            "(`--hybrid`); see its MODEL_CARD.md and docs/evaluation.md."
        )
        console.print(Panel(how, title="honest note", title_align="left", border_style="yellow"))
    console.print(
        f"Look around: deltamem sessions show {session_id} --home {home}\n"
        f"             deltamem inspect --session {session_id} --home {home} --plot state.png",
        style="dim", markup=False, highlight=False,
    )
