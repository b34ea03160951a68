"""Benchmark: several sessions decoded in one batch vs one after another.

For each number of concurrent sessions, twin sets of sessions get the same short, different
histories (so their KV caches have different lengths and their states differ). One set answers
one after another (`MemorySession.reply`), the other in one batch (`reply_batch`); both decode
the same number of tokens per session (end-of-turn ignored). Aggregate throughput is decoded
tokens of all sessions over the wall time of the whole turn (prefill included). The replies of
the two sets are compared (greedy decoding: they should be the same text).

It also measures what merging the sessions' KV caches costs (``merge_ms``, stacking and
splitting) against what rebuilding them would cost (``rebuild_ms``: re-prefilling every
session's window, the alternative to merging).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.bench.conversation import SyntheticConversation
from deltamem_agents.bench.report import Progress
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

GOAL_SPEEDUP = 3.0


class BatchBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str | None = None
    adapter: str | None = None
    sessions: tuple[int, ...] = (1, 4, 16)
    decode_tokens: int = Field(64, ge=1)
    history_turns: int = Field(4, ge=1, description="session i holds 1 + i % history_turns turns of history")
    window: int = Field(1024, ge=16)
    repeats: int = Field(1, ge=1, description="rounds per size (median); sequential and batched alternate")
    device: str | None = None
    dtype: str | None = None
    seed: int = 0


def _sessions(runtime: Any, count: int, config: BatchBenchConfig, tag: str) -> dict[str, Any]:
    """``count`` sessions (by id) with short, different histories (deterministic: twins are equal)."""
    sessions = {}
    for i in range(count):
        conversation = SyntheticConversation(runtime.tokenizer, seed=config.seed + i)
        conversation.grow_to(1)
        while len(conversation.messages) < 2 * (1 + i % config.history_turns):
            conversation.grow_to(conversation.cumulative[-1] + 1)
        session = runtime.session(f"{tag}-{count}-{i}", user_id="bench")
        session.ingest(conversation.messages[: 2 * (1 + i % config.history_turns)])
        sessions[f"{tag}-{count}-{i}"] = session
    return sessions


def _question(i: int) -> str:
    return f"Please summarise note {1 + i % 3} in a few sentences, then suggest what to do next."


def _rebuild_ms(runtime: Any, sessions: list[Any]) -> float:
    """What re-prefilling every session's window (writing off) would take: the alternative to merging."""
    handle, model = runtime.handle, runtime.model
    started = time.perf_counter()
    with torch.inference_mode(), handle.writing(False):
        for session in sessions:
            handle.set_state(session.state)
            model(input_ids=torch.tensor([session.context_ids], device=session.device), use_cache=True, logits_to_keep=1)
    handle.reset_state()
    return (time.perf_counter() - started) * 1e3


def run_batch_bench(out_dir: Path, config: BatchBenchConfig | None = None, *, progress: bool = False) -> list[dict[str, Any]]:
    """Throughput of 1, 4, 16 ... sessions batched vs one after another; writes batch.json/md/png."""
    from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning
    from deltamem_agents.session import GenerationOptions, SessionBatch, SessionConfig

    config = config or BatchBenchConfig()
    started_all = time.perf_counter()
    options = {"max_new_tokens": config.decode_tokens, "ignore_eos": True}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deltamem-batch-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(
            config.backbone, adapter=config.adapter, store=Path(tmp) / "sessions", device=config.device,
            dtype=config.dtype, progress=False,
            session_config=SessionConfig(context_window=config.window, generation=GenerationOptions(**options)),
        )
        warm = _sessions(runtime, 2, config, "warm-up")
        SessionBatch([(s, _question(i)) for i, s in enumerate(warm.values())]).run()
        with Progress(progress, len(config.sessions) * config.repeats * 2, "batch") as bar:
            for count in config.sessions:
                seq_s, batch_s, same, stats, rebuild = [], [], 0, [], []
                for repeat in range(config.repeats):
                    alone_ids = _sessions(runtime, count, config, f"alone{repeat}")
                    batched_ids = _sessions(runtime, count, config, f"batched{repeat}")
                    alone, batched = list(alone_ids.values()), list(batched_ids.values())
                    rebuild.append(_rebuild_ms(runtime, batched))
                    order = ("alone", "batched") if repeat % 2 == 0 else ("batched", "alone")
                    for kind in order:
                        bar.step(f"{count} session(s), {kind}")
                        began = time.perf_counter()
                        if kind == "alone":
                            expected = [s.reply(_question(i)).text for i, s in enumerate(alone)]
                            seq_s.append(time.perf_counter() - began)
                        else:
                            batch = SessionBatch([(s, _question(i)) for i, s in enumerate(batched)])
                            got = [r.text for r in batch.run()]
                            batch_s.append(time.perf_counter() - began)
                            stats.append(batch.stats)
                        bar.advance()
                    same += sum(a == b for a, b in zip(expected, got))
                    for session_id in [*alone_ids, *batched_ids]:
                        runtime.close(session_id, user_id="bench")
                tokens = count * config.decode_tokens
                seq, bat = statistics.median(seq_s), statistics.median(batch_s)
                rows.append({
                    "sessions": count,
                    "sequential_tok_s": round(tokens / seq, 2),
                    "batched_tok_s": round(tokens / bat, 2),
                    "speedup": round(seq / bat, 2),
                    "same_text": f"{same}/{count * config.repeats}",
                    "prefill_ms": round(statistics.median(s.prefill_ms for s in stats), 1),
                    "merge_ms": round(statistics.median(s.merge_ms for s in stats), 1),
                    "decode_ms": round(statistics.median(s.decode_ms for s in stats), 1),
                    "rebuild_ms": round(statistics.median(rebuild), 1),
                })
    largest = max(rows, key=lambda r: r["sessions"])
    device = str(runtime.model.device if hasattr(runtime.model, "device") else config.device or "cpu")
    meta = {
        "benchmark": "batch",
        "params": config.model_dump(),
        "device": device,
        "machine": machine_info(device),
        "wall_s": round(time.perf_counter() - started_all, 1),
        "summary": {
            "goal": f">= {GOAL_SPEEDUP:g}x aggregate tokens/s at {largest['sessions']} sessions (batched vs one after another)",
            "speedup": largest["speedup"],
            "headline": "; ".join(
                f"{r['sessions']} session(s): {r['batched_tok_s']:g} tokens/s batched vs {r['sequential_tok_s']:g} "
                f"one after another ({r['speedup']:g}x)" for r in rows
            ),
            "checks": {"speedup": largest["speedup"] >= GOAL_SPEEDUP},
            "met": largest["speedup"] >= GOAL_SPEEDUP,
        },
        "plots": ["batch.png"],
    }
    write_report("batch", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("batch", {"meta": meta, "rows": rows}, Path(out_dir) / "batch.png")
    return rows

