"""`deltamem bench growth` on a tiny backbone: every condition reported at every size, sizes that
do not fit reported as such, reports and plot written. Counts and structure only, never timings."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.bench.conversation import SyntheticConversation
from deltamem_agents.bench.growth import (
    CONDITIONS,
    GrowthConfig,
    run_growth_bench,
    summarize,
)
from deltamem_agents.bench.growth_processes import ChildProcess as _ChildProcess
from deltamem_agents.bench.growth_workers import WORKER_CLASSES


def test_every_condition_is_measured_at_every_size(tiny_backbone, tmp_path):
    config = GrowthConfig(backbone=tiny_backbone, sizes=(96, 192), window=48, decode_tokens=3, turns=2, isolate=False)
    rows = run_growth_bench(tmp_path, config)
    assert [(r["condition"], r["history_tokens"]) for r in rows] == [(c, s) for c in CONDITIONS for s in (96, 192)]
    assert all(r["status"] == "ok" for r in rows)
    by = {(r["condition"], r["history_tokens"]): r for r in rows}
    # full replay prefills everything; the windowed conditions keep a bounded context
    for size in (96, 192):
        full = by[("full", size)]
        assert full["context_tokens"] == full["prefill_tokens"] > size
        assert by[("full-cached", size)]["prefill_tokens"] < full["prefill_tokens"]
        assert by[("delta-mem", size)]["context_tokens"] < 48 + 40
        assert by[("delta-mem", size)]["turns"] == 2 and full["turns"] == 1
        assert by[("hybrid", size)]["note"].startswith("route ")
        assert by[("rag", size)]["note"].endswith("snippets")
    assert by[("full", 96)]["vs_full"] == 1.0
    report = json.loads((tmp_path / "growth.json").read_text())
    assert report["meta"]["summary"]["checks"].keys() == {"speedup", "flat_memory", "full_grows"}
    assert report["meta"]["memory_method"] and report["meta"]["plots"] == ["growth.png"]
    assert (tmp_path / "growth.png").stat().st_size > 0
    assert "| delta-mem | 192 | ok |" in (tmp_path / "growth.md").read_text()


def test_sizes_that_do_not_fit_are_reported_not_run(tiny_backbone, tmp_path):
    config = GrowthConfig(
        backbone=tiny_backbone, sizes=(64, 4096), conditions=("full", "full-cached", "delta-mem"), window=48,
        decode_tokens=2, turns=1, isolate=False, memory_limit_mib=1.0,
    )
    rows = {(r["condition"], r["history_tokens"]): r for r in run_growth_bench(tmp_path, config)}
    assert rows[("full", 64)]["status"] == rows[("full-cached", 64)]["status"] == "ok"
    for condition in ("full", "full-cached"):
        assert rows[(condition, 4096)]["status"] == "does not fit"
        assert "MiB allowed" in rows[(condition, 4096)]["note"]
    assert rows[("delta-mem", 4096)]["status"] == "ok"  # its memory does not grow with the history
    summary = json.loads((tmp_path / "growth.json").read_text())["meta"]["summary"]
    assert summary["met"] is None and "speedup" not in summary


def test_workers_run_in_child_processes(tiny_backbone, tmp_path):
    config = GrowthConfig(backbone=tiny_backbone, sizes=(64,), conditions=("delta-mem",), window=48, decode_tokens=2, turns=1)
    rows = run_growth_bench(tmp_path, config)
    assert [(r["condition"], r["status"]) for r in rows] == [("delta-mem", "ok")]


def test_a_worker_that_fails_for_another_reason_raises(tmp_path):
    config = GrowthConfig(backbone=str(tmp_path / "no-such-backbone"), sizes=(64,), conditions=("rag",))
    with pytest.raises(RuntimeError, match="growth worker 'rag' failed"):
        run_growth_bench(tmp_path, config)
    rows = json.loads((tmp_path / "growth.json").read_text())["rows"]  # written before raising
    assert [(r["condition"], r["status"]) for r in rows] == [("rag", "failed")]


def _rows(full_ms, delta_ms, delta_peaks, full_peaks):
    rows = []
    for size, f, d, dp, fp in zip((1024, 32768), full_ms, delta_ms, delta_peaks, full_peaks):
        rows.append({"condition": "full", "history_tokens": size, "status": "ok", "turn_ms": f, "peak_mem_mib": fp})
        rows.append({"condition": "delta-mem", "history_tokens": size, "status": "ok", "turn_ms": d, "peak_mem_mib": dp})
    return rows


def test_the_goal_is_checked_from_the_rows():
    met = summarize(_rows((1000, 50000), (400, 420), (1000, 1030), (1000, 3000)), (1024, 32768))
    assert met["speedup"] == pytest.approx(50000 / 420, rel=1e-2) and met["met"] is True
    slow = summarize(_rows((1000, 3000), (400, 420), (1000, 1030), (1000, 3000)), (1024, 32768))
    assert slow["checks"]["speedup"] is False and slow["met"] is False
    growing = summarize(_rows((1000, 50000), (400, 420), (1000, 1100), (1000, 3000)), (1024, 32768))
    assert growing["checks"]["flat_memory"] is False


def test_the_synthetic_conversation_is_counted_in_template_tokens(chat_tokenizer):
    conversation = SyntheticConversation(chat_tokenizer)
    history, tokens = conversation.prefix(500)
    assert tokens >= 500 and len(history) % 2 == 0 and history[-1].role == "assistant"
    rendered = chat_tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in history], tokenize=False)
    assert len(chat_tokenizer(rendered, add_special_tokens=False)["input_ids"]) == pytest.approx(tokens, abs=len(history))
    recent = conversation.recent(len(history), 100)
    assert recent and recent[-1] is history[-1] and conversation.tokens(len(history) - len(recent), len(history)) <= 100
    assert "note" in conversation.question(0, len(history))



def test_windowed_workers_are_measured_in_a_fresh_process_on_their_stored_memory(tiny_backbone):
    """With ``reopen`` a size is grown in one process and measured in another that opens the
    stored session: the fresh process finds every message already there and adds none."""
    config = GrowthConfig(backbone=tiny_backbone, sizes=(160,), conditions=("delta-mem",), window=48, decode_tokens=2)
    host = _ChildProcess("delta-mem", config)
    try:
        assert host.reopens and host.receive()[0] == "ready"
        host.send(("prepare", 160))
        grown = host.receive()
        assert grown[0] == "prepared" and grown[2] > 0
        first = host._process.pid
        host.reopen()
        assert host.receive()[0] == "ready" and host._process.pid != first
        host.send(("prepare", 160))
        assert host.receive() == ("prepared", grown[1], 0)  # nothing re-ingested: the memory was on disk
        host.send(("turn", 0))
        reply = host.receive()
        assert reply[0] == "measured" and reply[1]["delta-mem"]["context_tokens"] > 0
    finally:
        host.close()
    assert not WORKER_CLASSES["full"].persistent  # full replay keeps nothing between turns: no reopen
