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


def fail(message: str) -> typer.Exit:
    """Print one error line; ``raise fail(...)`` exits with status 2."""
    err_console.print("error:", style="bold red", end=" ")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def user_errors(func: F) -> F:
    """Turn the library's validation errors into one clear line (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from deltamem_agents.model.backbone import BackboneNotFoundError
        from deltamem_agents.core.state import StateFileError
        from deltamem_agents.memory.routing import RouterError
        from deltamem_agents.memory.textlog import TextLogError
        from deltamem_agents.model.adapters import AdapterError
        from deltamem_agents.store.records import InvalidSessionIdError
        from deltamem_agents.session.session import SessionError
        from deltamem_agents.store.directory import SessionStoreError

        try:
            return func(*args, **kwargs)
        except (
            AdapterError, BackboneNotFoundError, StateFileError, ValidationError, FileNotFoundError,
            InvalidSessionIdError, SessionError, SessionStoreError, TextLogError, RouterError,
        ) as exc:
            raise fail(" ".join(line.strip() for line in str(exc).strip().splitlines())) from None

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
