"""The `deltamem` command line, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from deltamem_agents.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def test_bench_scan_writes_json_and_markdown(tmp_path):
    result = runner.invoke(app, ["bench", "scan", "--out", str(tmp_path), "--lengths", "64,200", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "scan.json").read_text())
    assert [row["T"] for row in report["rows"]] == [64, 200]
    assert all(row["max_abs_diff"] < 1e-4 for row in report["rows"])
    assert "| T |" in (tmp_path / "scan.md").read_text()


def test_adapter_convert_then_info(tmp_path):
    result = runner.invoke(app, ["adapter", "convert", str(FIXTURES / "msw_h4"), str(tmp_path / "ours"), "--backbone-name", "tiny"])
    assert result.exit_code == 0, result.output
    assert "MSW rank 4" in result.output
    result = runner.invoke(app, ["adapter", "info", str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output
    assert '"write_strategy": "msw"' in result.output


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = runner.invoke(app, ["adapter", "info", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not an adapter folder" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["adapter", "convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not a folder" in result.output


def test_benchmarks_page_is_generated_from_reports(tmp_path):
    result = runner.invoke(app, ["bench", "scan", "--out", str(tmp_path), "--lengths", "64", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "benchmarks.md"
    result = runner.invoke(app, ["bench", "page", "--out", str(tmp_path), "--page", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    report = json.loads((tmp_path / "scan.json").read_text())
    assert "## scan" in text and str(report["rows"][0]["chunk_ms"]) in text.replace("|", " ")
    assert f"_Not measured yet: run `deltamem bench overhead --out {tmp_path}` (or `deltamem bench all`)._" in text
