"""Plots of benchmark reports, drawn from their JSON alone (so the page can redraw them).

One function per benchmark; `plot_report` picks it. Without matplotlib no plot is drawn and
`plot_report` says so (returns ``None``): a benchmark's numbers never depend on a figure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltamem_agents.reporting.plotting import pyplot, save_figure

Report = dict[str, Any]

COLOURS = {
    "full": "#c0392b", "full-cached": "#e67e22", "delta-mem": "#2471a3", "hybrid": "#17a589", "rag": "#7d3c98",
}


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def _tokens(value: int) -> str:
    return f"{value / 1024:g}k" if value >= 1024 else str(value)


def _log2_ticks(ax: Any, values: list[int], label: Callable[[int], str] = str) -> None:
    """Log-2 x axis with a tick at each measured value (token counts read 1k, 2k, ...: ``_tokens``)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([label(v) for v in values])
    ax.minorticks_off()


def _line(ax: Any, points: list[tuple[Any, Any]], **style: Any) -> None:
    """One measured series, in x order; nothing when nothing was measured."""
    if points:
        ax.plot(*zip(*sorted(points)), marker="o", **style)


def _log_y(ax: Any, xlabel: str, ylabel: str) -> None:
    """Log y axis, both labels and a grid: every line plot here spans orders of magnitude."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _growth(plt: Any, report: Report) -> Any:
    rows = _ok(report["rows"])
    panels = [("turn_ms", "latency per turn (ms)"), ("peak_mem_mib", "peak memory (MiB)"), ("context_tokens", "tokens in context")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.6))
    for ax, (key, label) in zip(axes, panels):
        for condition, colour in COLOURS.items():
            points = [(r["history_tokens"], r[key]) for r in rows if r["condition"] == condition and r.get(key)]
            _line(ax, points, label=condition, color=colour)
        _log2_ticks(ax, sorted({r["history_tokens"] for r in report["rows"]}), _tokens)
        _log_y(ax, "history (tokens)", label)
    _legend(axes[0])
    fig.suptitle(f"one turn ({report['meta']['params']['decode_tokens']} tokens decoded) as the conversation grows")
    return fig


def _batch(plt: Any, report: Report) -> Any:
    rows = [r for r in report["rows"] if isinstance(r.get("sessions"), int)]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for key, label, colour in (("sequential_tok_s", "one after another", "#c0392b"), ("batched_tok_s", "batched", "#2471a3")):
        _line(ax, [(r["sessions"], r[key]) for r in rows if r.get(key)], label=label, color=colour)
    _log2_ticks(ax, sorted({r["sessions"] for r in rows}))
    _log_y(ax, "concurrent sessions", "aggregate decoded tokens/s")
    _legend(ax)
    return fig


def _retrieval(plt: Any, report: Report) -> Any:
    rows = report["rows"]
    series = list(dict.fromkeys((r.get("layout"), r["operation"]) for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for layout, operation in series:
        points = sorted((r["entries"], r["p50_ms"], r["p95_ms"]) for r in rows
                        if r["operation"] == operation and r.get("layout") == layout)
        if points:
            x, p50, p95 = zip(*points)
            name = operation if layout is None else f"{layout}: {operation}"
            line = ax.plot(x, p50, marker="o", label=f"{name} (p50)")[0]
            ax.plot(x, p95, linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log")
    _log_y(ax, "entries in the text log", "latency (ms); dashed: p95")
    _legend(ax, fontsize=7)
    return fig


def _scan(plt: Any, report: Report) -> Any:
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for key, label in (("naive_ms", "naive token loop"), ("chunk_ms", "chunked (WY/UT)")):
        _line(ax, [(r["T"], r[key]) for r in rows if r.get(key)], label=label)
    _log2_ticks(ax, sorted({r["T"] for r in rows}), _tokens)
    _log_y(ax, "tokens", "ms")
    _legend(ax)
    return fig


def _overhead(plt: Any, report: Report) -> Any:
    rows = [r for r in report["rows"] if r["variant"] in ("bare", "delta-mem")]
    metrics = [("prefill_tok_s", "prefill tokens/s"), ("decode_tok_s", "decode tokens/s"), ("peak_mem_mib", "peak MiB")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 3.6))
    for ax, (key, label) in zip(axes, metrics):
        ax.bar([r["variant"] for r in rows], [r.get(key) or 0 for r in rows], color=["#7f8c8d", "#2471a3"][: len(rows)])
        ax.set_title(label)
    return fig


def _recall(plt: Any, report: Report) -> Any:
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for pool, colour in (("unseen", "#2471a3"), ("seen", "#7f8c8d")):
        for key, style, label in (("recall_own_state", "-", "own state"), ("recall_other_state", "--", "another's state")):
            points = [(r["distractor_tokens"], r[key]) for r in rows if r["pool"] == pool]
            _line(ax, points, label=f"{pool} values, {label}", color=colour, linestyle=style)
    lengths = sorted({r["distractor_tokens"] for r in rows})
    if lengths and lengths[0] > 0:  # a log axis has no place for 0 distractor tokens
        _log2_ticks(ax, lengths, _tokens)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("distractor tokens after the fact")
    ax.set_ylabel("answer recall (%), state only")
    ax.grid(True, alpha=0.3)
    _legend(ax, fontsize=8)
    return fig


PLOTTERS: dict[str, Callable[[Any, Report], Any]] = {
    "growth": _growth, "batch": _batch, "retrieval": _retrieval, "scan": _scan, "overhead": _overhead,
    "recall": _recall,
}


def plot_report(name: str, report: Report, path: Path) -> Path | None:
    """Draw ``report`` into ``path`` (PNG); ``None`` when there is no plotter or no matplotlib."""
    plotter = PLOTTERS.get(name)
    if plotter is None:
        return None
    try:
        plt = pyplot()
    except ImportError:
        return None
    return save_figure(plotter(plt, report), path, dpi=110)
