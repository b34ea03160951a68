"""`deltamem_agents.reporting`: the report files and Markdown tables that bench, eval, train and the
server's load test all write, byte for byte as before they shared them."""

from __future__ import annotations

import json

from deltamem_agents.bench import report as bench_report
from deltamem_agents.reporting.files import write_json_and_markdown, write_report
from deltamem_agents.reporting.machine import machine_info
from deltamem_agents.reporting.tables import (
    format_cell,
    markdown_header,
    markdown_row,
    markdown_table,
    percent,
)


def test_cells_are_short_and_escaped():
    assert [format_cell(v) for v in (None, 0.0, 1.5, 12.3456, 0.012345, 1e-5, 2e6, float("nan"), 7, "a|b")] == [
        "-", "0", "1.5", "12.346", "0.01235", "1.000e-05", "2.000e+06", "nan", "7", "a\\|b",
    ]


def test_a_table_has_the_union_of_the_row_keys_as_columns():
    table = markdown_table([{"a": 1, "b": 2.5}, {"a": 3, "c": None}])
    assert table == "| a | b | c |\n|---|---|---|\n| 1 | 2.5 | - |\n| 3 | - | - |\n"
    assert markdown_table([]) == "_no rows_\n"


def test_header_rows_and_percentages():
    assert markdown_header(["goal", "met"]) == ["| goal | met |", "|---|---|"]
    assert markdown_row(["x", "yes"]) == "| x | yes |"
    assert (percent(0.1234), percent(None)) == ("12.3", "-")


def test_machine_info_says_where_it_ran():
    info = machine_info("cpu")
    assert info["device"] == "cpu" and info["cpu_count"] and info["torch"] and "device_name" not in info


def test_the_rows_report_is_meta_plus_rows_and_a_table(tmp_path):
    rows = [{"size": 1, "ms": 2.0}]
    json_path, md_path = write_report("demo", rows, tmp_path / "out", {"device": "cpu", "command": "deltamem bench demo"})
    data = json.loads(json_path.read_text())
    assert data["name"] == "demo" and data["rows"] == rows
    assert data["meta"]["machine"]["device"] == "cpu" and data["meta"]["created"]
    md = md_path.read_text()
    assert md.startswith("# demo\n\n`deltamem bench demo` on ") and md.endswith("| 1 | 2 |\n")


def test_the_pair_is_written_as_given(tmp_path):
    paths = write_json_and_markdown(tmp_path / "new", "x", "{}\n", "# x\n")
    assert [p.name for p in paths] == ["x.json", "x.md"] and paths[0].read_text() == "{}\n" and paths[1].read_text() == "# x\n"


def test_the_bench_report_module_keeps_its_names():
    assert (bench_report.write_report, bench_report.machine_info, bench_report.markdown_table) == (
        write_report, machine_info, markdown_table,
    )
