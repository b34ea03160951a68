"""The loss curve of a run as a PNG (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deltamem_agents.reporting.plotting import pyplot, save_figure


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for i, value in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight**i))
    return out


def plot_loss(steps: Sequence[int], losses: Sequence[float], path: str | Path, *,
              dev: Sequence[tuple[int, float, float, float | None]] = (), title: str = "δ-mem training") -> Path:
    """Training loss (raw and smoothed) and dev answer loss with and without the state."""
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="train loss (per step)")
    ax.plot(steps, smooth(losses), color="#08519c", linewidth=1.6, label="train loss (smoothed)")
    if dev:
        ax.plot([d[0] for d in dev], [d[1] for d in dev], "o-", color="#d95f02", label="dev: state + window")
        ax.plot([d[0] for d in dev], [d[2] for d in dev], "s--", color="#7570b3", label="dev: window only (no state)")
        control = [(d[0], d[3]) for d in dev if d[3] is not None]
        if control:
            ax.plot(*zip(*control, strict=True), "^:", color="#e7298a", label="dev: another conversation's state")
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
