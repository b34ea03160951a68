"""docs/benchmarks.md, generated from the JSON reports: numbers are never typed by hand.

One section per benchmark of the registry (in its order), then any other report found: what it
measures, the command that produced the report, the machine, the goal and whether it was met
(computed by the benchmark and stored in the report), the table, and the plots, redrawn from
the JSON. A benchmark without a report yet says how to produce it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deltamem_agents.bench.plots import PLOTTERS, plot_report
from deltamem_agents.bench.registry import BENCHMARKS
from deltamem_agents.reporting.tables import markdown_table

Report = dict[str, Any]


def _from_eval_report(data: Report, path: Path) -> Report:
    """The evaluation's own report (`deltamem_agents.eval.report.EvalReport`) in the shape of
    the others: one row per condition, its goals as the summary, its chart as the plot."""
    if "rows" in data and "meta" in data:
        return data
    rows = []
    for s in data.get("summaries", []):
        rows.append({
            "condition": s.get("label", s.get("condition")), "questions": s.get("questions"),
            "F1": s.get("f1"), "EM": s.get("exact"), "recall": s.get("recall"),
            "F1 pref+instr+task": s.get("f1_memory_kinds"), "rules followed": s.get("rules_followed"),
            "prompt_tokens": s.get("prompt_tokens"), "latency_ms": s.get("latency_ms"),
        })
    goals = data.get("goals", [])
    hardware = data.get("hardware", {})
    meta = {
        "command": data.get("command"),
        "machine": {"platform": hardware.get("platform"), "cpu_count": hardware.get("cpu_count"),
                    "torch": hardware.get("torch"), "torch_threads": hardware.get("threads"),
                    "device": hardware.get("device")},
        "wall_s": data.get("wall_time_s"),
        "summary": {
            "goal": "; ".join(g.get("name", "") for g in goals) or None,
            "headline": "; ".join(f"{g.get('name')}: {g.get('detail')}" for g in goals) or None,
            "met": all(g.get("met") for g in goals) if goals and all(g.get("met") is not None for g in goals) else None,
        },
        "plots": [f"{path.stem}.png"],  # the evaluation draws its chart next to its report
    }
    return {"name": "eval", "meta": meta, "rows": rows}


NORMALIZERS = {"eval": _from_eval_report}


def load_report(path: Path, name: str | None = None) -> Report:
    data = json.loads(Path(path).read_text())
    normalize = NORMALIZERS.get(name or Path(path).stem)
    return normalize(data, Path(path)) if normalize else data


def _machine_line(meta: Report) -> str:
    m = meta.get("machine") or {}
    load = m.get("load_average")
    parts = [
        f"{m.get('platform')}, {m.get('cpu_count')} CPUs",
        f"torch {m.get('torch')} ({m.get('torch_threads')} threads)",
        f"device {m.get('device_name', m.get('device'))}",
    ]
    if load:
        parts.append(f"load average {load[0]} when it started" + (" (shared machine)" if load[0] > 1.5 else ""))
    return ", ".join(parts)


def _summary_lines(summary: Report) -> list[str]:
    if not summary:
        return []
    verdict = {True: "**met**", False: "**missed**", None: "not decided (not everything it needs was measured)"}[summary.get("met")]
    lines = []
    if summary.get("goal"):
        lines.append(f"- goal: {summary['goal']}: {verdict}")
    if summary.get("headline"):
        lines.append(f"- result: {summary['headline']}")
    return lines


def _section(name: str, report_dir: Path, page_dir: Path, redraw: bool) -> list[str]:
    spec = BENCHMARKS.get(name)
    title = f"## {name}: {spec.title}" if spec else f"## {name}"
    parts = ["", title, ""]
    if spec:
        parts += [spec.about, ""]
    path = spec.report_path(report_dir) if spec else report_dir / f"{name}.json"
    if not path.is_file():
        command = spec.command if spec else f"deltamem bench {name}"
        return parts + [f"_Not measured yet: run `{command} --out {path.parent}` (or `deltamem bench all`)._"]
    report = load_report(path, name)
    meta = report.get("meta", {})
    wall = f" ({meta['wall_s'] / 60:.0f} min)" if isinstance(meta.get("wall_s"), int | float) and meta["wall_s"] >= 60 else ""
    parts += [
        f"- command: `{meta.get('command')}`",
        f"- machine: {_machine_line(meta)}",
        f"- measured: {meta.get('created', '-')}{wall}",
    ]
    if meta.get("memory_method"):
        parts.append(f"- memory: {meta['memory_method']}")
    parts += _summary_lines(meta.get("summary") or {})
    parts += ["", markdown_table(report.get("rows", [])).rstrip()]
    for plot in _plots(name, report, path.parent, redraw):
        rel = Path(os.path.relpath(plot, page_dir)).as_posix()
        parts += ["", f"![{name}]({rel})"]
    return parts


def _plots(name: str, report: Report, report_dir: Path, redraw: bool) -> list[Path]:
    """The report's plots; benchmarks with a plotter get theirs redrawn from the JSON."""
    names = list(report.get("meta", {}).get("plots") or [])
    if name in PLOTTERS:
        target = report_dir / f"{name}.png"
        if redraw or not target.is_file():
            plot_report(name, report, target)
        names = names or [target.name]
    return [report_dir / n for n in dict.fromkeys(names) if (report_dir / n).is_file()]


def write_benchmarks_page(report_dir: Path, page: Path, *, redraw: bool = True) -> Path:
    """Render every report in ``report_dir`` into one Markdown page at ``page``."""
    report_dir, page = Path(report_dir), Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `deltamem bench all --out {report_dir}` (or `deltamem bench page` without measuring) "
        "from the JSON reports in that folder; regenerate rather than edit. Ratios are measured side by "
        "side in one run. Each section says which command produced its report and on which machine; a "
        "load average above the CPU count means the machine was shared with other work while it ran.",
    ]
    others = sorted(p.stem for p in report_dir.glob("*.json") if p.stem not in BENCHMARKS)
    for name in [*BENCHMARKS, *others]:
        parts += _section(name, report_dir, page.parent, redraw)
    page.write_text("\n".join(parts) + "\n")
    return page
