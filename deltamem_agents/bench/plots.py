"""Plots of benchmark reports, drawn from their JSON alone (so the page can redraw them).

One function per benchmark; `plot_report` picks it. matplotlib is an optional dependency
(``pip install deltamem-agents[plot]``): without it no plot is drawn and `plot_report` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Report = dict[str, Any]

COLOURS = {
    "full": "#c0392b", "full-cached": "#e67e22", "delta-mem": "#2471a3", "hybrid": "#17a589", "rag": "#7d3c98",
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def _token_ticks(ax: Any, values: list[int]) -> None:
    """Log-2 x axis labelled 1k, 2k, ... at the measured sizes."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v / 1024:g}k" if v >= 1024 else str(v) for v in values])
    ax.minorticks_off()


def _growth(plt: Any, report: Report) -> Any:
    rows = _ok(report["rows"])
    panels = [("turn_ms", "latency per turn (ms)"), ("peak_mem_mib", "peak memory (MiB)"), ("context_tokens", "tokens in context")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.6))
    for ax, (key, label) in zip(axes, panels):
        for condition, colour in COLOURS.items():
            points = sorted((r["history_tokens"], r[key]) for r in rows if r["condition"] == condition and r.get(key))
            if points:
                ax.plot(*zip(*points), marker="o", label=condition, color=colour)
        _token_ticks(ax, sorted({r["history_tokens"] for r in report["rows"]}))
        ax.set_yscale("log")
        ax.set_xlabel("history (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    _legend(axes[0])
    fig.suptitle(f"one turn ({report['meta']['params']['decode_tokens']} tokens decoded) as the conversation grows")
    return fig


def _batch(plt: Any, report: Report) -> Any:
    rows = [r for r in report["rows"] if isinstance(r.get("sessions"), int)]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for key, label, colour in (("sequential_tok_s", "one after another", "#c0392b"), ("batched_tok_s", "batched", "#2471a3")):
        points = sorted((r["sessions"], r[key]) for r in rows if r.get(key))
        if points:
            ax.plot(*zip(*points), marker="o", label=label, color=colour)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["sessions"] for r in rows}))
    ax.set_xticklabels([str(v) for v in sorted({r["sessions"] for r in rows})])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("aggregate decoded tokens/s")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return fig


def _retrieval(plt: Any, report: Report) -> Any:
    rows = report["rows"]
    operations = list(dict.fromkeys(r["operation"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for operation in operations:
        points = sorted((r["entries"], r["p50_ms"], r["p95_ms"]) for r in rows if r["operation"] == operation)
        if points:
            x, p50, p95 = zip(*points)
            line = ax.plot(x, p50, marker="o", label=f"{operation} (p50)")[0]
            ax.plot(x, p95, linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entries in the text log")
    ax.set_ylabel("latency (ms); dashed: p95")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize=7)
    return fig


def _scan(plt: Any, report: Report) -> Any:
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for key, label in (("naive_ms", "naive token loop"), ("chunk_ms", "chunked (WY/UT)")):
        points = sorted((r["T"], r[key]) for r in rows if r.get(key))
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    _token_ticks(ax, sorted({r["T"] for r in rows}))
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("ms")
    ax.grid(True, which="both", alpha=0.3)
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


PLOTTERS: dict[str, Callable[[Any, Report], Any]] = {
    "growth": _growth, "batch": _batch, "retrieval": _retrieval, "scan": _scan, "overhead": _overhead,
}


def plot_report(name: str, report: Report, path: Path) -> Path | None:
    """Draw ``report`` into ``path`` (PNG); ``None`` when there is no plotter or no matplotlib."""
    plotter, plt = PLOTTERS.get(name), _pyplot()
    if plotter is None or plt is None:
        return None
    fig = plotter(plt, report)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
