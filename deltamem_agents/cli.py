"""`deltamem`: the command line, a thin face over the library.

Errors the user can fix are printed as one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="δ-mem agent memory: benchmarks, adapters and (soon) sessions.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each writes <name>.json and <name>.md into --out.", no_args_is_help=True)
adapter_app = typer.Typer(help="Adapter files: convert the reference format, inspect.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(adapter_app, name="adapter")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

OutDir = Annotated[Path, typer.Option("--out", help="folder for the JSON and Markdown reports")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available)")]


def _user_errors(func: F) -> F:
    """Turn the library's validation errors into one clear line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from deltamem_agents.backbone import BackboneNotFoundError
        from deltamem_agents.core.state import StateFileError
        from deltamem_agents.model.adapters import AdapterError

        try:
            return func(*args, **kwargs)
        except (AdapterError, BackboneNotFoundError, StateFileError, ValidationError, FileNotFoundError) as exc:
            message = " ".join(line.strip() for line in str(exc).strip().splitlines())
            err_console.print("error:", style="bold red", end=" ")
            err_console.print(message, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@bench_app.command("scan")
@_user_errors
def bench_scan(
    out: OutDir = Path("bench-out"),
    lengths: Annotated[str, typer.Option(help="sequence lengths")] = "512,2048,8192,32768",
    max_naive_len: Annotated[int, typer.Option(help="skip the slow naive loop above this length")] = 32768,
    repeats: int = 3,
    chunk_size: Annotated[int | None, typer.Option(help="default: what delta_scan picks for the device")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (1 avoids stalls on small shared CPUs)")] = None,
    device: Device = None,
) -> None:
    """Chunked scan vs the naive per-token loop (goal: >= 20x faster at 8k tokens on CPU)."""
    import torch

    from deltamem_agents.bench.scan import run_scan_bench

    rows = run_scan_bench(
        out, _ints(lengths), repeats=repeats, chunk_size=chunk_size, max_naive_len=max_naive_len,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"), threads=threads,
    )
    _print_rows(rows, "δ-mem scan: chunked vs naive")
    console.print(f"wrote {out / 'scan.json'} and {out / 'scan.md'}")


@bench_app.command("overhead")
@_user_errors
def bench_overhead(
    out: OutDir = Path("bench-out"),
    backbone: Annotated[str | None, typer.Option(help="backbone name or path (default: embedded SmolLM2)")] = None,
    adapter: Annotated[str | None, typer.Option(help="adapter folder (default: a fresh default config)")] = None,
    prompt_tokens: int = 512,
    decode_tokens: int = 64,
    repeats: int = 5,
    device: Device = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16, ... (default: by device)")] = None,
    memory: Annotated[bool, typer.Option(help="also measure peak memory in child processes")] = True,
) -> None:
    """Prefill/decode tokens/s and peak memory with δ-mem attached vs the bare backbone."""
    from deltamem_agents.bench.overhead import run_overhead_bench

    rows = run_overhead_bench(
        out, backbone=backbone, adapter=adapter, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
        repeats=repeats, device=device, dtype=dtype, measure_memory=memory,
    )
    _print_rows(rows, "δ-mem overhead")
    console.print(f"wrote {out / 'overhead.json'} and {out / 'overhead.md'}")


@adapter_app.command("convert")
@_user_errors
def adapter_convert(
    source: Annotated[Path, typer.Argument(help="reference release folder (delta_mem_config.json + delta_mem_adapter.pt)")],
    destination: Annotated[Path, typer.Argument(help="output folder in our format")],
    backbone_name: Annotated[str | None, typer.Option(help="backbone the adapter belongs to, recorded in the config")] = None,
) -> None:
    """Convert a reference-format adapter into ours (safetensors + validated JSON)."""
    from deltamem_agents.model.adapters import convert_reference_adapter, write_adapter_folder

    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder")
    meta, tensors = convert_reference_adapter(source, backbone_name=backbone_name)
    write_adapter_folder(meta, tensors, destination)
    console.print(
        f"converted {source} -> {destination}: {meta.config.write_strategy.upper()} rank {meta.config.rank}, "
        f"{len(meta.backbone.projection_out)} layers, {sum(t.numel() for t in tensors.values()):,} parameters"
    )


@adapter_app.command("info")
@_user_errors
def adapter_info(path: Annotated[Path, typer.Argument(help="adapter folder (either format)")]) -> None:
    """Show an adapter's configuration and size."""
    from deltamem_agents.model.adapters import read_adapter

    meta, tensors = read_adapter(path)
    console.print_json(meta.model_dump_json())
    console.print(f"{sum(t.numel() for t in tensors.values()):,} parameters in {len(tensors)} tensors")


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
