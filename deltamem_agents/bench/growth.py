"""Benchmark: what one turn costs as a conversation grows, δ-mem vs stuffing the context.

The conversation (`SyntheticConversation`) grows to each size (1k ... 32k tokens of history) and
at each size one new user turn is answered with ``decode_tokens`` tokens (end-of-turn ignored, so
every condition decodes the same number). Measured per turn: latency (prefill of the turn +
decoding), peak memory (see `PeakMemory`) and the prompt (tokens in context when the answer
starts, and tokens computed this turn). Conditions, all on the same backbone:

- ``full``: full-history replay. Every turn sends the whole history and prefills it, as a chat
  app on a stateless model server does.
- ``full-cached``: the whole history stays in a KV cache between turns (prefix caching, the best
  case for stuffing the context): only the new turn is prefilled, but every token attends to the
  whole history and the cache grows with it. Measured in the same process as ``full``.
- ``delta-mem``: a `MemorySession`: a fixed recent window (KV reuse) plus the OSAM state.
- ``hybrid``: `HybridMemory`: the session plus the Chroma text log and the router (search, state
  probe, routing, retrieved notes, logging and the atomic commit are all in the turn).
- ``rag``: the bare backbone with retrieved snippets and the recent window, prompt rebuilt and
  prefilled every turn (a typical RAG app).

Each worker runs in its own child process (``isolate=True``), grows its history once through
the sizes (history is reused, not rebuilt per size), and resets its peak-memory counter before
each measured turn. The windowed workers keep their memory on disk (session store, text log), so
with ``reopen=True`` each size is grown in one process and measured in a fresh one that opens
the stored session, as a server does after a restart: the measured peak is then what answering
costs at that history length, not what the allocator kept from ingesting 32k tokens earlier in
the same process (the ingest is a one-time cost, measured by nothing here).

A size whose estimated memory exceeds the budget is reported as ``does not fit`` and larger
sizes are skipped; an out-of-memory error or a killed process is reported too, never crashed on.

This module is the measurement loop; `growth_config` holds what is measured, `growth_workers`
the conditions, `growth_processes` where a worker runs, `growth_summary` the goal check.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from deltamem_agents.bench.growth_config import (
    CONDITIONS,
    Condition,
    GrowthConfig,
    Status,
    TurnMeasure,
)
from deltamem_agents.bench.growth_processes import ChildProcess, Host, InProcess
from deltamem_agents.bench.growth_summary import summarize, with_speedups
from deltamem_agents.bench.report import Progress
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

__all__ = ["CONDITIONS", "GrowthConfig", "run_growth_bench", "summarize"]


# -- rows -------------------------------------------------------------------------------------------
def _row(condition: Condition, size: int, status: Status, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"condition": condition, "history_tokens": size, "status": status}
    row.update(fields)
    return row


def _aggregate(condition: Condition, size: int, actual: int, measures: list[TurnMeasure]) -> dict[str, Any]:
    median = lambda name: statistics.median(getattr(m, name) for m in measures)  # noqa: E731
    notes = sorted({m.note for m in measures if m.note})
    return _row(
        condition, size, "ok",
        history_actual=actual,
        turn_ms=round(median("turn_ms"), 1),
        prefill_ms=round(median("prefill_ms"), 1),
        decode_ms=round(median("decode_ms"), 1),
        context_tokens=int(median("context_tokens")),
        prefill_tokens=int(median("prefill_tokens")),
        peak_mem_mib=round(max(m.peak_mem_mib for m in measures), 1),
        turns=len(measures),
        note="; ".join(notes),
    )


# -- the benchmark ----------------------------------------------------------------------------------
def run_growth_bench(out_dir: Path, config: GrowthConfig | None = None, *, progress: bool = False) -> list[dict[str, Any]]:
    """Measure every condition at every size; writes ``growth.json``, ``growth.md`` and ``growth.png``.

    All workers live at once. For each size they grow their histories at the same time (untimed),
    then their turns are measured one worker at a time, the order rotating from turn to turn, so
    that every condition of a size is measured in the same minutes and alone on the machine."""
    config = config or GrowthConfig()
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    names = config.workers()
    turns = {name: config.full_turns if name == "full" else config.turns for name in names}
    steps = len(config.sizes) * (len(names) + sum(turns.values()))
    rows: list[dict[str, Any]] = []
    meta_info: dict[str, Any] = {}
    hosts: list[Host] = []
    with Progress(progress, steps, "growth: starting the workers") as bar:
        try:
            for name in names:
                host = (ChildProcess if config.isolate else InProcess)(name, config)
                hosts.append(host)
            for host in hosts:
                reply = host.receive()
                if reply[0] == "ready":
                    meta_info.update(reply[1])
                else:
                    host.stopped = (reply[1], reply[2])
            for size in config.sizes:
                rows += _measure_size(hosts, size, turns, bar)
        finally:
            for host in hosts:
                host.close()
    rows = with_speedups(rows)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = {
        "benchmark": "growth",
        "params": config.model_dump(),
        "device": device,
        "machine": machine_info(device),
        "load_average": {"before": load_before, "after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "wall_s": round(time.perf_counter() - started, 1),
        "protocol": "all workers alive at once; per size: histories grown in parallel (untimed), "
        + ("the windowed workers (delta-mem, hybrid, rag) restarted on their stored memory, " if config.reopen and config.isolate else "")
        + "then turns measured one worker at a time, the order rotating each turn",
        **meta_info,
        "summary": summarize(rows, config.sizes),
        "plots": ["growth.png"],
    }
    write_report("growth", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("growth", {"meta": meta, "rows": rows}, Path(out_dir) / "growth.png")
    failures = [host.failure for host in hosts if host.failure]
    if failures:  # the report is written first: hours of measurements are not lost to one worker
        raise RuntimeError("; ".join(failures))
    return rows


def _reopen(hosts: list[Host], size: int, bar: Progress) -> None:
    """Restart these workers on their stored memory (in parallel), at ``size`` again: nothing
    is grown, the fresh process only learns the history it will be asked about."""
    if not hosts:
        return
    bar.note(f"{size:,} tokens: reopening {', '.join(h.name for h in hosts)} on the stored memory")
    for host in hosts:
        host.reopen()
    for host in hosts:
        if (reply := host.receive())[0] != "ready":
            host.stopped = (reply[1], reply[2])
            continue
        host.send(("prepare", size))
    for host in hosts:
        if host.stopped is None and (reply := host.receive())[0] != "prepared":
            host.stopped = (reply[1], reply[2])


def _measure_size(hosts: list[Host], size: int, turns: dict[str, int], bar: Progress) -> list[dict[str, Any]]:
    """Grow every live worker to ``size``, then measure their turns interleaved; the rows."""
    rows: list[dict[str, Any]] = []
    live = [h for h in hosts if h.stopped is None]
    bar.step(f"{size:,} tokens: growing {len(live)} histories")
    for host in live:
        host.send(("prepare", size))
    actual: dict[str, int] = {}
    for host in live:
        reply = host.receive()
        bar.advance()
        if reply[0] == "prepared":
            actual[host.name] = reply[1]
        else:
            host.stopped = (reply[1], reply[2])
    _reopen([h for h in live if h.stopped is None and h.reopens], size, bar)
    measures: dict[str, dict[str, list[TurnMeasure]]] = {h.name: {c: [] for c in h.conditions} for h in hosts}
    for turn in range(max(turns.values())):
        order = [h for h in live if h.stopped is None and turn < turns[h.name]]
        order = order[turn % len(order) :] + order[: turn % len(order)] if order else []
        for host in order:
            bar.step(f"{size:,} tokens: {host.name} turn {turn + 1}/{turns[host.name]}")
            host.send(("turn", turn))
            reply = host.receive()
            bar.advance()
            if reply[0] == "measured":
                for condition, measure in reply[1].items():
                    measures[host.name][condition].append(TurnMeasure.model_validate(measure))
            else:
                host.stopped = (reply[1], reply[2])
    for host in hosts:
        for condition in host.conditions:
            done = measures[host.name][condition]
            if host.stopped is None and done:
                row = _aggregate(condition, size, actual[host.name], done)
            else:
                status, note = host.stopped or ("failed", "no turn was measured")
                row = _row(condition, size, status, note=note)
            rows.append(row)
            bar.note(f"  {condition} at {size:,} tokens: {row['status']}, {row.get('turn_ms', '-')} ms, "
                     f"peak {row.get('peak_mem_mib', '-')} MiB")
    return rows
