"""`deltamem demo`: what the context window cannot hold, answered three ways side by side.

Process 1 (a child process) writes a scripted conversation into a session: a fact (the user's
pet ferret is called *Quillon*, a made-up word), an instruction (*call me Captain*), then small
talk, into the δ-mem state and into the Chroma text log, saves it and exits. This process loads
the session and answers the same questions on the same last ``--window`` tokens of the
conversation (which no longer hold the fact) three ways: (a) the bare backbone, (b) with the δ-mem
state, (c) the hybrid: state + the log snippets the router placed. For each answer it says which
part answered: the window, the retrieved note, or (the value in the reply, in no text shown) the
state. It exits 1 when its check fails: the hybrid answers the fact question with the value and the
bare backbone does not. The logic lives in `deltamem_agents.cli._demo_logic`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from deltamem_agents.cli._common import Device, console, fail, user_errors
from deltamem_agents.cli._demo_logic import (
    CONVERSATION,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_WINDOW,
    FACT_VALUE,
    INPUTS,
    LABELS,
    NICKNAME,
    QUESTIONS,
    SYSTEM,
    USER_ID,
    Answer,
    DemoResult,
)
from deltamem_agents.cli._runtime import BackboneOpt, DtypeOpt

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.cli._demo_logic import Check

#: The two turns of the previous demo, kept because tests/session/test_session_smollm2.py holds the
#: shipped adapter to them (replies stay fluent and use what the user said).
FIRST = "Hi! My name is Ada and my favourite drink is cardamom tea. Please remember that."
SECOND = "What is my favourite drink?"

__all__ = ["FIRST", "SECOND", "SYSTEM", "demo"]


def _free_session_id(home: Path) -> str:
    from deltamem_agents.cli._runtime import open_store
    from deltamem_agents.store.records import SessionKey

    store = open_store(home)
    for n in range(1, 1000):
        session_id = "demo" if n == 1 else f"demo-{n}"
        if not store.exists(SessionKey(session_id=session_id)):
            return session_id
    raise fail(f"{home} already holds demo sessions demo .. demo-999: pass another --home")


def _print(text: str, **style: Any) -> None:
    console.print(text, markup=False, highlight=False, **style)


def _run_writer(args: list[str]) -> dict[str, Any]:
    """Process 1: `_demo_logic` as a child process; returns its JSON line."""
    command = [sys.executable, "-m", "deltamem_agents.cli._demo_logic", *args]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with console.status("process 1: a new Python process writes the conversation ...", spinner="dots"):
        child = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if child.returncode != 0:
        lines = [line for line in child.stderr.strip().splitlines() if line.strip()]
        raise fail(f"process 1 failed with exit code {child.returncode}: {lines[-1] if lines else 'no output'}", 1)
    try:
        payload = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise fail(f"process 1 printed no JSON result: {child.stdout.strip()[:200]!r}", 1) from None
    payload["wall_s"] = time.perf_counter() - started
    return payload


def _messages_table(result: DemoResult) -> Table:
    table = Table(title=f"The conversation ({result.history_tokens} tokens); the window holds its last {result.window_tokens}",
                  title_justify="left")
    table.add_column("window", justify="center")
    table.add_column("role")
    table.add_column("message")
    table.add_column("tokens", justify="right")
    marks = {"out": "out", "partly": "partly", "in": "in"}
    for message in result.messages:
        table.add_row(marks[message.place], message.role, message.content, str(message.tokens),
                      style="dim" if message.place == "out" else None)
    return table


def _input_of(answer: Answer) -> str:
    if answer.answerer != "hybrid":
        return INPUTS[answer.answerer]
    n = len(answer.notes)
    text = f"window + state + {n} note{'s' if n != 1 else ''}"
    return text + (f" ({answer.expected} in a note)" if answer.in_notes else "")


def _question_table(index: int, answers: list[Answer], about: str) -> Table:
    first = answers[0]
    table = Table(title=f"Q{index}  {first.question!r}   expected: {first.expected} ({about})", title_justify="left")
    table.add_column("answerer")
    table.add_column("its input")
    table.add_column("reply")
    table.add_column(f"has {first.expected}", justify="center")
    table.add_column("which part answered")
    table.add_column("router")
    for a in answers:
        table.add_row(
            LABELS[a.answerer], _input_of(a), Text(a.reply.strip() or "(empty reply)"), "yes" if a.in_reply else "no",
            a.source, a.route or "-", style="green" if a.in_reply else None,
        )
    return table


def _print_check(check: Check, result: DemoResult) -> None:
    for ok, text in check.items:
        _print(f"{'✓' if ok else '✗'} {text}", style="green" if ok else "red")
    state = result.answer("fact", "state")
    if state.in_reply:
        said = f"(b) the δ-mem state alone answered {state.expected!r}: not in its window, no note, so the state carried it."
    else:
        said = (f"(b) the δ-mem state alone did not answer {state.expected!r} (it replied {state.reply.strip()!r}). "
                "Not asserted: the adapter shipped for the embedded backbone is known to carry little of a conversation "
                "in its state (mostly the user's instructions, not facts such as this one; see its MODEL_CARD.md and "
                "docs/evaluation.md). Facts come from the text log, which is what the hybrid adds.")
    instructed = [a for a in result.answers if a.expected == NICKNAME and a.answerer == "state"]
    followed = sum(a.in_reply for a in instructed)
    said += f" On the instruction, (b) said {NICKNAME!r} in {followed} of {len(instructed)} replies."
    console.print(Panel(said, title="the state alone, reported as it is", title_align="left", border_style="yellow"))
    if check.passed:
        _print("✓ check passed: the hybrid recalled what the window no longer held, the bare backbone did not.", style="bold green")
    else:
        _print("✗ check failed (exit code 1): see the ✗ lines above.", style="bold red")


@user_errors
def demo(
    home: Annotated[Path | None, typer.Option("--home", help="session store folder (default: a new temporary folder)")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="reply length limit")] = DEFAULT_MAX_NEW_TOKENS,
    window: Annotated[int, typer.Option("--window", min=8, help="tokens of recent conversation every answer sees")] = DEFAULT_WINDOW,
    backbone: BackboneOpt = None,
    device: Device = None,
    dtype: DtypeOpt = None,
    textlog: Annotated[Path | None, typer.Option("--textlog", help="text log folder (default: HOME/textlog)")] = None,
    one_process: Annotated[
        bool, typer.Option("--one-process", help="write the conversation in this process too (quicker; no second process)")
    ] = False,
    report: Annotated[Path | None, typer.Option("--report", help="also write the whole result as JSON here")] = None,
    expect: Annotated[str | None, typer.Option("--expect", hidden=True, help="the value the check looks for (tests)")] = None,
) -> None:
    """The main demo: a fact and an instruction leave the context window; the bare backbone, the
    δ-mem state and the hybrid answer side by side (~25 s on 2 CPU cores). Exits 1 if its check fails."""
    from deltamem_agents.cli._demo_logic import (
        answer_side_by_side,
        check,
        write_conversation,
    )
    from deltamem_agents.cli._runtime import (
        build_hybrid,
        build_runtime,
        open_store,
        state_digest,
    )
    from deltamem_agents.store.records import SessionKey

    started = time.perf_counter()
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="deltamem-demo-"))
    textlog = textlog or home / "textlog"
    session_id = _free_session_id(home)

    console.rule("[bold]δ-mem demo: what the context window cannot hold")
    _print(f"session store: {home}   text log: {textlog}   session: {USER_ID}/{session_id}")
    _print(f"The conversation tells a fact ({FACT_VALUE!r}, a made-up name) and an instruction ({NICKNAME!r}), "
           f"then {len(CONVERSATION) - 2} exchanges of small talk. Every answer below sees only the last {window} "
           "tokens of it; greedy decoding, probes (nothing is written).\n")

    saved: dict[str, Any] | None = None
    if not one_process:
        args = ["--home", str(home), "--textlog", str(textlog), "--session", session_id]
        for name, value in (("--backbone", backbone), ("--device", device), ("--dtype", dtype)):
            if value is not None:
                args += [name, value]
        saved = _run_writer(args)
        _print(f"process 1 (pid {saved['pid']}, {saved['wall_s']:.1f} s including model load) wrote "
               f"{len(CONVERSATION)} exchanges ({saved['tokens_written']} tokens) into the δ-mem state and "
               f"{saved['log_entries']} entries into the text log, saved turn {saved['turn_count']} and exited.")
    notes: list[str] = []
    runtime = build_runtime(home=home, backbone=backbone, device=device, dtype=dtype, system_prompt=SYSTEM, notes=notes,
                            quiet=saved is not None)
    memory = build_hybrid(runtime, textlog=textlog)
    if saved is None:
        with console.status("writing the conversation ...", spinner="dots"):
            write_conversation(memory, session_id)
        _print(f"--one-process: this process (pid {os.getpid()}) wrote the conversation and answers below.")
    else:
        loaded = runtime.session(session_id).state
        on_disk = open_store(home).load(SessionKey(session_id=session_id))
        digests = (saved["state_digest_saved"], state_digest(on_disk.state if on_disk else None), state_digest(loaded))
        same = digests[0] is not None and len(set(digests)) == 1
        _print(f"process 2 (pid {os.getpid()}, this one) loaded the session from the store and answers below.")
        _print(f"{'✓' if same else '✗'} the state process 2 loaded {'is' if same else 'is NOT'} the one process 1 saved: "
               "sha256 of its tensors " + (f"{digests[0][:16]}… saved, on disk and loaded" if same
                                           else " / ".join(str(d)[:16] for d in digests)),
               style="green" if same else "red")
        if not same:
            raise fail("the loaded state differs from the saved one", 1)

    total = len(QUESTIONS) * 3
    done: list[Answer] = []
    with console.status(f"answering {len(QUESTIONS)} questions three ways ...", spinner="dots") as status:
        def progress(answer: Answer) -> None:
            done.append(answer)
            status.update(f"answered {len(done)}/{total} ({LABELS[answer.answerer]}, {answer.seconds:.1f} s) ...")

        result = answer_side_by_side(runtime, memory, session_id, window=window, max_new_tokens=max_new_tokens,
                                     on_answer=progress)
    result.check = check(result, expect=expect)

    console.print()
    console.print(_messages_table(result))
    has = {v: v.lower() in result.window_text.lower() for v in (FACT_VALUE, NICKNAME)}
    console.print(Panel(Text(result.window_text), title=f"the window: the last {result.window_tokens} tokens, shared by all "
                        "three answerers", title_align="left"))
    _print("In the window: " + " · ".join(f"{v!r} {'yes' if h else 'no'}" for v, h in has.items()) + "\n")

    for index, question in enumerate(result.questions, 1):
        answers = [a for a in result.answers if a.question == question.text]
        console.print(_question_table(index, answers, question.about))
        hybrid = next(a for a in answers if a.answerer == "hybrid")
        _print(f"  router for (c): route {hybrid.route}: {hybrid.route_reason}" if hybrid.route else "  router for (c): no decision",
               style="dim")
        for text in hybrid.notes:
            _print(f"  note shown to (c): - {text}", style="dim")
        console.print()
    if any(a.window_matches is False for a in result.answers):
        _print("✗ some answer's input did not begin with the shared window (see --report)", style="red")

    _print_check(result.check, result)
    if report is not None:
        from deltamem_agents.fileio import atomic_write_text

        report.parent.mkdir(parents=True, exist_ok=True)
        payload = {"process_1": saved, **result.model_dump(mode="json")}
        atomic_write_text(report, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        _print(f"report: {report}", style="dim")
    for note in notes:
        _print(f"note: {note}", style="yellow")
    _print(f"{time.perf_counter() - started:.1f} s in all. Look around: deltamem sessions show {session_id} --home {home}",
           style="dim")
    if not result.check.passed:
        raise typer.Exit(1)
