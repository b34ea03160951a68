"""docs/benchmarks.md is rendered from the reports alone: sections in order, plots, eval, extras."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from deltamem_agents.bench.page import write_benchmarks_page
from deltamem_agents.bench.registry import BENCHMARKS
from deltamem_agents.cli import app
from deltamem_agents.reporting.files import write_report

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def _reports(folder: Path) -> None:
    for name in ("scan", "overhead"):
        shutil.copy(DOCS / f"{name}.json", folder / f"{name}.json")
    rows = [
        {"condition": c, "history_tokens": s, "status": "ok", "turn_ms": t, "peak_mem_mib": m, "context_tokens": k}
        for c, s, t, m, k in [("full", 1024, 900.0, 1000.0, 1100), ("full", 2048, 2000.0, 1100.0, 2100),
                              ("delta-mem", 1024, 700.0, 1200.0, 600), ("delta-mem", 2048, 710.0, 1201.0, 610)]
    ]
    meta = {"params": {"decode_tokens": 64}, "summary": {"goal": "a goal", "met": False, "headline": "the facts"}}
    write_report("growth", rows, folder, meta)
    write_report("batch", [{"sessions": 1, "sequential_tok_s": 10.0, "batched_tok_s": 10.0},
                           {"sessions": 4, "sequential_tok_s": 10.0, "batched_tok_s": 30.0}], folder, {})
    write_report("custom", [{"x": 1}], folder, {})


def test_the_page_has_every_benchmark_in_order_with_tables_and_plots(tmp_path):
    reports = tmp_path / "benchmarks"
    reports.mkdir()
    _reports(reports)
    text = write_benchmarks_page(reports, tmp_path / "benchmarks.md").read_text()
    headers = [line.split(":")[0] for line in text.splitlines() if line.startswith("## ")]
    assert headers == [f"## {name}" for name in BENCHMARKS] + ["## custom"]
    assert "- goal: a goal: **missed**" in text and "- result: the facts" in text
    for name in ("scan", "overhead", "growth", "batch"):
        assert f"![{name}](benchmarks/{name}.png)" in text
        assert (reports / f"{name}.png").stat().st_size > 0
    assert "_Not measured yet: run `deltamem bench retrieval" in text
    assert "| delta-mem | 2048 | ok |" in text


def test_the_eval_section_is_filled_from_the_evaluation_report(tmp_path):
    """The evaluation writes its report and chart in its own folder (docs/eval/), next to its answers."""
    reports, evaluation = tmp_path / "benchmarks", tmp_path / "eval"
    reports.mkdir()
    evaluation.mkdir()
    (evaluation / "synthetic-test.json").write_text(json.dumps({
        "command": "deltamem eval run", "hardware": {"platform": "Linux", "threads": 2},
        "summaries": [{"condition": "delta", "label": "δ-mem", "questions": 10, "f1": 0.5, "prompt_tokens": 300.0,
                       "latency_ms": 900.0}],
        "goals": [{"name": "F1 above full replay", "met": True, "detail": "0.5 vs 0.4"}],
        "wall_time_s": 120.0,
    }))
    (evaluation / "synthetic-test.png").write_bytes(b"png")
    text = write_benchmarks_page(reports, tmp_path / "benchmarks.md").read_text()
    section = text.split("## eval")[1]
    assert "`deltamem eval run`" in section and "| δ-mem | 10 | 0.5 |" in section
    assert "- goal: F1 above full replay: **met**" in section and "![eval](eval/synthetic-test.png)" in section


def test_bench_page_and_all_from_the_command_line(tmp_path):
    reports = tmp_path / "benchmarks"
    reports.mkdir()
    _reports(reports)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "page", "--out", str(reports), "--page", str(tmp_path / "a.md")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["bench", "all", "--out", str(reports), "--page", str(tmp_path / "b.md"),
                                 "--skip", "scan,recall,overhead,ingest,growth,batch,retrieval,compare,store"])
    assert result.exit_code == 0, result.output
    assert "eval: no runner registered" in result.output
    assert (tmp_path / "a.md").read_text() == (tmp_path / "b.md").read_text()
    result = runner.invoke(app, ["bench", "all", "--out", str(reports), "--skip", "scna"])
    assert result.exit_code == 2 and "unknown benchmarks" in result.output
