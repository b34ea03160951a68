"""Markdown tables, written one way in every report (benchmarks, evaluation, model cards)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["format_cell", "markdown_header", "markdown_row", "markdown_table", "percent"]


def markdown_row(cells: Iterable[str]) -> str:
    """``| a | b |``: cells as they are (escape ``|`` first where a cell may hold one)."""
    return "| " + " | ".join(cells) + " |"


def markdown_header(columns: Sequence[str]) -> list[str]:
    """The header row and the rule below it."""
    return [markdown_row(columns), "|" + "---|" * len(columns)]


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal; ``-`` when not measured."""
    return "-" if value is None else f"{100 * value:.1f}"


def format_cell(value: Any) -> str:
    """A table cell: ``-`` for None, short floats (scientific when very large or small), ``|`` escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.4g}"
        return f"{value:.3e}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table: the union of their keys (first-seen order) as columns."""
    if not rows:
        return "_no rows_\n"
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lines = markdown_header(columns) + [markdown_row(format_cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"
