"""Load test of the server over loopback: many clients, shared sessions, every turn checked.

``clients`` clients each send ``turns`` turns; client ``c`` talks to session ``c mod sessions``,
so several clients share each session and their turns must be serialised by the server. Every
user message is unique (run id, client, turn), so afterwards each session's log can be checked
against what the clients were told:

- **lost**: a turn answered with 200 whose user message is not in the session's log;
- **corrupted**: a logged answer that differs from the one the client received, a turn logged
  twice, a client's turns out of order, a log that is not user/assistant pairs, or a message no
  client sent;
- **committed unacknowledged**: a turn the client saw fail (or time out) but that was committed
  (not an error: the server finished it after the client gave up).

Latency is per turn, request to last byte (p50/p95/max); throughput is answered turns and
completion tokens per second of wall time. `deltamem serve-loadtest` runs it and writes
``serve.json`` + ``serve.md`` (the format of `deltamem_agents.reporting.files.write_report`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

PROMPTS = (
    "I moved to Porto last spring and I work as a nurse. Remember that.",
    "My sister's name is Ines and she visits every August.",
    "What do you think I should cook for dinner tonight?",
    "Summarise what you know about me in one sentence.",
    "I prefer trains over planes for trips under five hours.",
    "Remind me what my sister's name is.",
    "Give me one tip for sleeping better after night shifts.",
    "Which city do I live in?",
)


class LoadTestConfig(BaseModel):
    """What to run, and against which server."""

    url: str | None = Field(None, description="base URL of the server, e.g. http://127.0.0.1:8000")
    api_key: str | None = Field(None, exclude=True, description="bearer key (never written to reports)")
    model: str = "deltamem"
    clients: int = Field(32, ge=1)
    turns: int = Field(20, ge=1, description="turns per client")
    sessions: int = Field(16, ge=1)
    max_tokens: int = Field(16, ge=1)
    stream_share: float = Field(0.5, ge=0.0, le=1.0, description="share of clients that stream their answers")
    deadline_s: float = Field(1800.0, gt=0.0, description="the whole run; turns not done by then are abandoned")
    request_timeout_s: float = Field(600.0, gt=0.0)
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:8])

    def session_id(self, client: int) -> str:
        return f"load-{self.run_id}-{client % self.sessions:03d}"

    def streams(self, client: int) -> bool:
        """Spread streaming clients evenly: client c streams when the share's count steps up at c."""
        return int((client + 1) * self.stream_share) > int(client * self.stream_share)

    def user_text(self, client: int, turn: int) -> str:
        return f"[{self.run_id} c{client:03d} t{turn:03d}] {PROMPTS[(client + turn) % len(PROMPTS)]}"


class TurnRecord(BaseModel):
    client: int
    turn: int
    session_id: str
    stream: bool
    user_text: str
    ok: bool = False
    status: int | None = None
    reply: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = Field(None, description="time to the first text event (streaming only)")
    completion_tokens: int = 0
    error: str | None = None


class LoadTestResults(BaseModel):
    clients: int
    sessions: int
    turns_per_client: int
    turns_attempted: int
    turns_ok: int
    errors: int
    abandoned: int = Field(description="not started or not finished by the deadline")
    lost: int
    corrupted: int
    committed_unacknowledged: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    ttft_p50_ms: float | None
    turns_per_s: float
    completion_tokens: int
    tokens_per_s: float
    wall_s: float
    batches: int | None = Field(None, description="batched decode steps")
    mean_batch_rows: float | None = Field(None, description="turns per batched decode step, on average")
    max_batch_rows: int | None = None
    prefill_tokens_per_turn: float | None = Field(None, description="new tokens each finished turn prefilled, on average")
    rebuild_tokens_per_turn: float | None = Field(None, description="context tokens re-fed per finished turn (cold sessions, full windows)")
    problems: list[str] = Field(default_factory=list, description="the first problems found, for reading")


class LoadTestReport(BaseModel):
    config: LoadTestConfig
    server: dict[str, Any] = Field(default_factory=dict, description="GET /health after the run")
    results: LoadTestResults
    role: str = Field("load", description="'single': the one-client baseline run on the same server first")
    vs_single: float | None = Field(None, description="completion tokens/s over the single-client baseline's, same server")

    def row(self) -> dict[str, Any]:
        r = self.results
        return {
            "run": self.role,
            "batching": self.server.get("batching"),
            "textlog": self.server.get("textlog"),
            "backbone": self.server.get("backbone"),
            "max_tokens": self.config.max_tokens,
            "clients": r.clients,
            "sessions": r.sessions,
            "turns": r.turns_attempted,
            "ok": r.turns_ok,
            "errors": r.errors,
            "lost": r.lost,
            "corrupted": r.corrupted,
            "p50_ms": r.p50_ms,
            "p95_ms": r.p95_ms,
            "max_ms": r.max_ms,
            "turns_per_s": r.turns_per_s,
            "tokens_per_s": r.tokens_per_s,
            "vs_single": self.vs_single,
            "mean_batch_rows": r.mean_batch_rows,
            "prefill_tokens_per_turn": r.prefill_tokens_per_turn,
            "rebuild_tokens_per_turn": r.rebuild_tokens_per_turn,
            "wall_s": r.wall_s,
        }

    def summary(self) -> str:
        r = self.results
        batching = {True: "batching on", False: "batching off"}.get(self.server.get("batching"), "batching ?")
        return (
            f"{batching}: {r.clients} clients x {r.turns_per_client} turns over {r.sessions} sessions: "
            f"{r.turns_ok}/{r.turns_attempted} ok, {r.errors} errors, {r.abandoned} abandoned, lost {r.lost}, "
            f"corrupted {r.corrupted}; p50 {r.p50_ms} ms, p95 {r.p95_ms} ms; {r.turns_per_s:.2f} turns/s, "
            f"{r.tokens_per_s:.1f} tokens/s"
            + (f" ({self.vs_single:.2f}x the single client)" if self.vs_single is not None else "")
            + f"; mean batch {r.mean_batch_rows}; prefill {r.prefill_tokens_per_turn} tokens/turn"
        )


# -- running ---------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 1)


async def _turn(http: httpx.AsyncClient, config: LoadTestConfig, record: TurnRecord) -> None:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [{"role": "user", "content": record.user_text}],
        "max_tokens": config.max_tokens,
        "stream": record.stream,
    }
    if record.stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Session-Id": record.session_id}
    started = time.perf_counter()
    try:
        if not record.stream:
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            record.status = response.status_code
            data = response.json()
            if response.status_code != 200:
                record.error = str(data.get("error", {}).get("message", data))[:300]
                return
            record.reply = data["choices"][0]["message"]["content"] or ""
            record.completion_tokens = data["usage"]["completion_tokens"]
        else:
            pieces: list[str] = []
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                record.status = response.status_code
                if response.status_code != 200:
                    data = json.loads(await response.aread())
                    record.error = str(data.get("error", {}).get("message", data))[:300]
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[len("data: ") :]
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        record.error = str(event["error"].get("message"))[:300]
                        return
                    for choice in event.get("choices", []):
                        text = choice.get("delta", {}).get("content")
                        if text:
                            if record.ttft_ms is None:
                                record.ttft_ms = (time.perf_counter() - started) * 1e3
                            pieces.append(text)
                    if event.get("usage"):
                        record.completion_tokens = event["usage"]["completion_tokens"]
                else:
                    record.error = "the stream ended without [DONE]"
                    return
            record.reply = "".join(pieces)
        record.latency_ms = (time.perf_counter() - started) * 1e3
        record.ok = True
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]


async def _client(http: httpx.AsyncClient, config: LoadTestConfig, client: int, records: list[TurnRecord]) -> None:
    for turn in range(config.turns):
        record = TurnRecord(
            client=client, turn=turn, session_id=config.session_id(client), stream=config.streams(client),
            user_text=config.user_text(client, turn),
        )
        records.append(record)
        await _turn(http, config, record)


def check_sessions(config: LoadTestConfig, records: list[TurnRecord], logs: dict[str, list[dict[str, Any]]]) -> tuple[int, int, int, list[str]]:
    """Compare every session's log with what the clients were told: (lost, corrupted,
    committed_unacknowledged, problems)."""
    lost = corrupted = unacknowledged = 0
    problems: list[str] = []
    by_text = {r.user_text: r for r in records}
    logged: dict[str, list[str | None]] = {}  # user text -> answers logged for it
    position: dict[str, int] = {}
    for session_id, messages in logs.items():
        said = [m for m in messages if m["role"] != "system"]
        for i in range(0, len(said), 2):
            user = said[i]
            answer = said[i + 1] if i + 1 < len(said) else None
            if user["role"] != "user" or answer is None or answer["role"] != "assistant":
                corrupted += 1
                problems.append(f"{session_id}: message {user.get('index')} does not start a user/assistant pair")
                continue
            record = by_text.get(user["content"])
            if record is None or record.session_id != session_id:
                corrupted += 1
                problems.append(f"{session_id}: logged a user message no client sent there: {user['content'][:60]!r}")
                continue
            logged.setdefault(user["content"], []).append(answer["content"])
            position[user["content"]] = user["index"]
    for record in records:
        answers = logged.get(record.user_text, [])
        if len(answers) > 1:
            corrupted += 1
            problems.append(f"client {record.client} turn {record.turn}: logged {len(answers)} times")
        if record.ok:
            if not answers:
                lost += 1
                problems.append(f"client {record.client} turn {record.turn}: answered but not in the log")
            elif answers[0] != record.reply:
                corrupted += 1
                problems.append(
                    f"client {record.client} turn {record.turn}: logged answer {answers[0]!r:.60} differs from the "
                    f"one sent {record.reply!r:.60}"
                )
        elif answers:
            unacknowledged += 1
    for client in range(config.clients):
        mine = [position[r.user_text] for r in records if r.client == client and r.user_text in position]
        if mine != sorted(mine):
            corrupted += 1
            problems.append(f"client {client}: turns logged out of order")
    return lost, corrupted, unacknowledged, problems


async def run_loadtest(config: LoadTestConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> LoadTestReport:
    """Run the load test against ``config.url`` (or an in-process ``transport``)."""
    if config.url is None and transport is None:
        raise ValueError("give the server's url (or an httpx transport)")
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=config.clients + 8, max_keepalive_connections=config.clients + 8)
    async with httpx.AsyncClient(
        base_url=config.url or "http://loadtest", transport=transport, headers=headers, limits=limits,
        timeout=httpx.Timeout(config.request_timeout_s, connect=30.0),
    ) as http:
        before = (await http.get("/health")).json()
        records: list[TurnRecord] = []
        started = time.perf_counter()
        tasks = [asyncio.create_task(_client(http, config, c, records)) for c in range(config.clients)]
        try:
            await asyncio.wait(tasks, timeout=config.deadline_s)
        finally:  # at the deadline, or when interrupted: stop every client before the connection pool closes
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome  # a bug in the client code itself must not pass silently
        wall = time.perf_counter() - started
        after = (await http.get("/health")).json()
        logs: dict[str, list[dict[str, Any]]] = {}
        for session_id in sorted({config.session_id(c) for c in range(config.clients)}):
            response = await http.get(f"/v1/sessions/{session_id}", params={"limit": 10_000})
            logs[session_id] = response.json()["messages"] if response.status_code == 200 else []
    finished = [r for r in records if r.ok or r.error is not None]
    abandoned = config.clients * config.turns - len(finished)
    lost, corrupted, unacknowledged, problems = check_sessions(config, records, logs)
    ok = [r for r in records if r.ok]
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    tokens = sum(r.completion_tokens for r in ok)
    errors = [r for r in records if not r.ok and r.error is not None]
    problems += [f"client {r.client} turn {r.turn}: HTTP {r.status}: {r.error}" for r in errors[:5]]
    b0, b1 = before.get("scheduler", {}), after.get("scheduler", {})
    batches = b1.get("batches", 0) - b0.get("batches", 0)
    rows = b1.get("batched_rows", 0) - b0.get("batched_rows", 0)
    finished = b1.get("turns_finished", 0) - b0.get("turns_finished", 0)

    def per_turn(name: str) -> float | None:
        if name not in b1 or not finished:
            return None
        return round((b1[name] - b0.get(name, 0)) / finished, 1)

    results = LoadTestResults(
        clients=config.clients, sessions=min(config.sessions, config.clients), turns_per_client=config.turns,
        turns_attempted=config.clients * config.turns, turns_ok=len(ok), errors=len(errors), abandoned=abandoned,
        lost=lost, corrupted=corrupted, committed_unacknowledged=unacknowledged,
        p50_ms=_percentile(latencies, 0.5), p95_ms=_percentile(latencies, 0.95), max_ms=_percentile(latencies, 1.0),
        ttft_p50_ms=_percentile(ttfts, 0.5), turns_per_s=round(len(ok) / wall, 3), completion_tokens=tokens,
        tokens_per_s=round(tokens / wall, 2), wall_s=round(wall, 2), batches=batches if after.get("batching") else None,
        mean_batch_rows=round(rows / batches, 2) if batches else None,
        max_batch_rows=b1.get("max_batch_rows") if after.get("batching") else None,
        prefill_tokens_per_turn=per_turn("prefill_tokens"), rebuild_tokens_per_turn=per_turn("rebuild_tokens"),
        problems=problems[:20],
    )
    return LoadTestReport(config=config, server=after, results=results)


def run_loadtest_sync(config: LoadTestConfig) -> LoadTestReport:
    return asyncio.run(run_loadtest(config))


def run_against_server(config: LoadTestConfig, *, baseline_turns: int = 0, log: Callable[[str], Any] = print) -> list[LoadTestReport]:
    """Load-test ``config.url``; with ``baseline_turns``, one client alone first on the same
    server, and the load run's throughput as a ratio over it (``vs_single``)."""
    reports = []
    if baseline_turns:
        log(f"baseline: 1 client x {baseline_turns} turns ...")
        single = config.model_copy(update={"clients": 1, "sessions": 1, "turns": baseline_turns, "run_id": uuid.uuid4().hex[:8]})
        reports.append(run_loadtest_sync(single).model_copy(update={"role": "single"}))
    log(f"running {config.clients} clients x {config.turns} turns over {config.sessions} sessions ...")
    load = run_loadtest_sync(config)
    if reports and reports[0].results.tokens_per_s:
        load = load.model_copy(update={"vs_single": round(load.results.tokens_per_s / reports[0].results.tokens_per_s, 2)})
    return [*reports, load]


# -- a server of its own -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    """Poll ``url``/health until it answers; fail with the server's log if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready:\n{tail}")
        try:
            response = httpx.get(f"{url}/health", timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} was not ready within {timeout_s:.0f}s (log: {log_path})")


def stop_server(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def serve_command(port: int, home: Path, *extra: str) -> list[str]:
    """The command line of a `deltamem serve` child process on loopback."""
    return [sys.executable, "-m", "deltamem_agents.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--home", str(home), "--log-level", "warning", *extra]


def run_against_new_server(
    config: LoadTestConfig,
    *,
    backbone: str | None = None,
    batching: bool = True,
    state_only: bool = False,
    threads: int | None = None,
    dtype: str | None = None,
    baseline_turns: int = 0,
    log: Callable[[str], Any] = print,
) -> list[LoadTestReport]:
    """Start `deltamem serve` on a free loopback port with a fresh store, load-test it, stop it.

    ``baseline_turns``: first run one client for that many turns on the same server (warmed up
    the same way), so the load run's throughput is given as a ratio measured side by side."""
    work = Path(tempfile.mkdtemp(prefix="deltamem-loadtest-"))
    port = _free_port()
    extra = ["--batching" if batching else "--no-batching", "--max-tokens", str(max(config.max_tokens, 1024))]
    extra += ["--state-only"] if state_only else ["--textlog", str(work / "textlog")]
    if backbone:
        extra += ["--backbone", backbone]
    if threads:
        extra += ["--threads", str(threads)]
    if dtype:
        extra += ["--dtype", dtype]
    log_path = work / "server.log"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as server_log:
        process = subprocess.Popen(serve_command(port, work / "sessions", *extra), stdout=server_log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        log(f"started a server on {url} (batching {'on' if batching else 'off'}; log {log_path}); waiting for it ...")
        wait_for_health(url, process, log_path)
        return run_against_server(config.model_copy(update={"url": url}), baseline_turns=baseline_turns, log=log)
    finally:
        stop_server(process)
        shutil.rmtree(work, ignore_errors=True)


# -- reports -------------------------------------------------------------------------------------------------
def write_reports(reports: list[LoadTestReport], out: Path) -> tuple[Path, Path]:
    """``serve.json`` and ``serve.md`` in ``out``: one row per run, config and server in the meta."""
    from deltamem_agents.reporting.files import write_report
    from deltamem_agents.reporting.machine import machine_info

    meta = {
        "benchmark": "serve",
        "params": reports[0].config.model_dump(exclude={"url", "run_id"}),
        "server": [report.server for report in reports],
        "problems": [report.results.problems for report in reports],
        "machine": machine_info("cpu"),
        "note": "client and server on one machine, over loopback; latency is request to last byte",
    }
    json_path, md_path = write_report("serve", [report.row() for report in reports], Path(out), meta)
    with open(md_path, "a", encoding="utf-8") as handle:
        handle.write(
            "\nlost: answered turns missing from the session's log; corrupted: logged answers that differ from "
            "the one sent, duplicated or reordered turns, broken user/assistant pairs (goal: 0 for both). "
            "Client and server share the machine's CPUs.\n"
        )
    return json_path, md_path


__all__ = [
    "LoadTestConfig",
    "LoadTestReport",
    "LoadTestResults",
    "TurnRecord",
    "check_sessions",
    "run_against_new_server",
    "run_against_server",
    "run_loadtest",
    "run_loadtest_sync",
    "serve_command",
    "stop_server",
    "wait_for_health",
    "write_reports",
]
