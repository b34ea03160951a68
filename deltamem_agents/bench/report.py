"""Generic helpers shared by all benchmarks: machine info + JSON/Markdown report."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Union

import torch

__all__ = ["machine_info", "write_report", "markdown_table"]


def machine_info(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Describe where numbers were measured, so reports stay comparable."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        # 1/5/15-minute load averages: a machine shared with other work shows it here
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:  # NaN
            return "nan"
        if x == 0 or 1e-3 <= abs(x) < 1e6:
            return f"{x:.3f}".rstrip("0").rstrip(".") if abs(x) >= 1 else f"{x:.4g}"
        return f"{x:.3e}"
    return str(x).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render rows (union of keys, first-seen order) as a Markdown table."""
    if not rows:
        return "_no rows_\n"
    cols: list[str] = []
    for row in rows:
        cols.extend(c for c in row if c not in cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(name: str, rows: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<name>.json`` (meta + rows) and ``<name>.md`` (header line + table).

    ``meta`` should contain ``machine_info(...)`` output; ``command`` and
    ``created`` are filled in when missing. Returns ``(json_path, md_path)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta.setdefault("command", " ".join(shlex.quote(a) for a in sys.argv))
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if "machine" not in meta:
        meta["machine"] = machine_info(meta.get("device", "cpu"))
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    json_path.write_text(json.dumps({"name": name, "meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    m = meta["machine"]
    header = (
        f"`{meta['command']}` on {m.get('platform')} ({m.get('cpu_count')} CPUs, "
        f"torch {m.get('torch')}, device {m.get('device_name', m.get('device'))})"
    )
    md_path.write_text(f"# {name}\n\n{header}\n\n{markdown_table(rows)}")
    return json_path, md_path


class Progress:
    """A progress bar on a terminal; one timestamped line per step in a log file."""

    def __init__(self, enabled: bool, total: int, description: str = "") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), disable=not enabled)
        self._task = self._bar.add_task(description, total=total)
        self._log = enabled and not self._bar.console.is_terminal

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def step(self, text: str) -> None:
        self._bar.update(self._task, description=text)
        self.note(text)

    def note(self, text: str) -> None:
        if self._log:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def advance(self, count: int = 1) -> None:
        self._bar.advance(self._task, count)

    def reset(self, total: int, description: str) -> None:
        self._bar.update(self._task, total=total, completed=0, description=description)
        self.note(description)
