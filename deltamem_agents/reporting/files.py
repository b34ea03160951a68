"""Report files: ``<name>.json`` for programs beside ``<name>.md`` for people, in one folder.

`write_report` is the rows format of the benchmarks and the server load test: the meta (how and
where it was measured) and one row per measurement, the Markdown a header line and the table.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from deltamem_agents.fileio import atomic_write_text
from deltamem_agents.reporting.machine import machine_info
from deltamem_agents.reporting.tables import markdown_table

__all__ = ["write_json_and_markdown", "write_report"]


def write_json_and_markdown(out_dir: str | Path, name: str, json_text: str, markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` in ``out_dir`` (created); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_text(json_path, json_text)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def write_report(name: str, rows: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<name>.json`` (meta + rows) and ``<name>.md`` (header line + table).

    ``meta`` should contain ``machine_info(...)`` output; ``command`` and
    ``created`` are filled in when missing. Returns ``(json_path, md_path)``.
    """
    meta = dict(meta)
    meta.setdefault("command", " ".join(shlex.quote(a) for a in sys.argv))
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if "machine" not in meta:
        meta["machine"] = machine_info(meta.get("device", "cpu"))
    m = meta["machine"]
    header = (
        f"`{meta['command']}` on {m.get('platform')} ({m.get('cpu_count')} CPUs, "
        f"torch {m.get('torch')}, device {m.get('device_name', m.get('device'))})"
    )
    json_text = json.dumps({"name": name, "meta": meta, "rows": rows}, indent=2, default=str) + "\n"
    return write_json_and_markdown(out_dir, name, json_text, f"# {name}\n\n{header}\n\n{markdown_table(rows)}")
