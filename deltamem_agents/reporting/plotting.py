"""Headless matplotlib for the PNGs the SDK writes: loss curves, evaluation charts, benchmark
plots and state heatmaps. They are written on servers and in CI, so no display is ever needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError as exc:  # a core dependency, but an environment may still lack it
        raise ImportError("drawing PNGs needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int | None = None) -> Path:
    """Lay ``fig`` out, write it to ``path`` (folders created) and free it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
