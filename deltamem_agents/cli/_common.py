"""Shared pieces of the command line: consoles, one-line user errors, table printing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

OutDir = Annotated[Path, typer.Option("--out", help="folder for the JSON and Markdown reports")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line; ``raise fail(...)`` exits with ``code`` (2: a usage error)."""
    err_console.print("error:", style="bold red", end=" ")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn the library's errors (every `DeltaMemError`, plus pydantic's validation errors and a
    missing file) into one clear line, no traceback; the exit code is the error's ``exit_code``
    (2 for the caller's errors, 1 for the environment's)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from deltamem_agents.errors import DeltaMemError, exit_code_of

        try:
            return func(*args, **kwargs)
        except (DeltaMemError, ValidationError, FileNotFoundError) as exc:
            code = exit_code_of(exc) if isinstance(exc, DeltaMemError) else 2
            raise fail(" ".join(line.strip() for line in str(exc).strip().splitlines()), code) from None

    return wrapper  # type: ignore[return-value]


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
