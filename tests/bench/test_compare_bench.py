"""`deltamem bench compare` with tiny sizes: each system really stores and finds the memories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltamem_agents.bench.compare import CompareBenchConfig, run_compare_bench

MEM0_PYTHON = Path(__file__).resolve().parents[2] / ".venv-compare" / "bin" / "python"


def test_every_system_is_measured_with_exact_recall_at_small_sizes(tmp_path):
    config = CompareBenchConfig(sizes=(30, 90), samples=4, k=5, systems=("deltamem", "langgraph", "llamaindex"))
    rows = run_compare_bench(tmp_path, config)
    assert [(r["system"], r["entries"], r["operation"]) for r in rows] == [
        (system, entries, op) for system in config.systems for entries in (34, 98) for op in ("add", "search")]
    searches = [r for r in rows if r["operation"] == "search"]
    assert all(r["recall_at_k"] == 1.0 for r in searches)  # the ids found are the exact nearest ones
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["meta"]["versions"]["langgraph"] != "not installed"
    assert "deltamem" in report["meta"]["summary"]["headline"]


@pytest.mark.skipif(not MEM0_PYTHON.exists(), reason="no .venv-compare (bash scripts/setup-compare.sh)")
def test_mem0_is_measured_in_its_own_venv(tmp_path):
    config = CompareBenchConfig(sizes=(30,), samples=3, k=5, systems=("mem0",), mem0_python=MEM0_PYTHON)
    rows = run_compare_bench(tmp_path, config)
    assert [(r["system"], r["operation"]) for r in rows] == [("mem0", "add"), ("mem0", "search")]
    assert rows[1]["recall_at_k"] == 1.0
