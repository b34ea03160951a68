"""`deltamem bench ...`: benchmarks; each writes <name>.json and <name>.md into --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltamem_agents.cli._common import Device, OutDir, console, parse_ints, print_rows, user_errors

bench_app = typer.Typer(help="Benchmarks; each writes <name>.json and <name>.md into --out.", no_args_is_help=True)


@bench_app.command("scan")
@user_errors
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
        out, parse_ints(lengths), repeats=repeats, chunk_size=chunk_size, max_naive_len=max_naive_len,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"), threads=threads,
    )
    print_rows(rows, "δ-mem scan: chunked vs naive")
    console.print(f"wrote {out / 'scan.json'} and {out / 'scan.md'}")


@bench_app.command("overhead")
@user_errors
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
    print_rows(rows, "δ-mem overhead")
    console.print(f"wrote {out / 'overhead.json'} and {out / 'overhead.md'}")


@bench_app.command("all")
@user_errors
def bench_all(
    out: OutDir = Path("docs/benchmarks"),
    page: Annotated[Path, typer.Option(help="the Markdown page generated from the reports")] = Path("docs/benchmarks.md"),
    device: Device = None,
    skip: Annotated[str, typer.Option(help="comma-separated benchmarks not to re-run (their old reports stay)")] = "",
) -> None:
    """Run every benchmark into --out and regenerate the benchmarks page from the reports."""
    import torch

    from deltamem_agents.bench.overhead import run_overhead_bench
    from deltamem_agents.bench.page import write_benchmarks_page
    from deltamem_agents.bench.scan import run_scan_bench

    skipped = {name.strip() for name in skip.split(",") if name.strip()}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if "scan" not in skipped:
        print_rows(run_scan_bench(out, device=device, threads=1, max_naive_len=None), "scan")
    if "overhead" not in skipped:
        print_rows(run_overhead_bench(out, device=device, repeats=7), "overhead")
    console.print(f"wrote {write_benchmarks_page(out, page)}")


@bench_app.command("page")
@user_errors
def bench_page(
    out: OutDir = Path("docs/benchmarks"),
    page: Annotated[Path, typer.Option(help="the Markdown page to write")] = Path("docs/benchmarks.md"),
) -> None:
    """Regenerate the benchmarks page from existing reports (no measuring)."""
    from deltamem_agents.bench.page import write_benchmarks_page

    console.print(f"wrote {write_benchmarks_page(out, page)}")
