"""Benchmark: naive token loop vs chunked scan (forward, inference mode)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F

from deltamem_agents.ops import chunk_delta_scan, naive_delta_scan
from deltamem_agents.ops.dispatch import chunk_size_for
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

__all__ = ["run_scan_bench", "make_scan_inputs"]


def make_scan_inputs(
    batch: int, heads: int, T: int, rank: int, *, device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32, seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random realistic inputs: unit q/k, sigmoid gates biased towards keeping."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    shape = (batch, heads, T, rank)
    x = {
        "q": F.normalize(rnd(*shape), dim=-1),
        "k": F.normalize(rnd(*shape), dim=-1),
        "v": rnd(*shape),
        "keep": torch.sigmoid(rnd(*shape) + 3.0),
        "erase": torch.sigmoid(rnd(*shape)),
        "write": torch.sigmoid(rnd(*shape)),
    }
    return {n: t.to(device=device, dtype=dtype) for n, t in x.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def run_scan_bench(
    out_dir: Path,
    lengths: tuple[int, ...] = (512, 2048, 8192, 32768),
    *,
    batch: int = 1,
    heads: int = 1,
    rank: int = 8,
    chunk_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    max_naive_len: Optional[int] = 8192,
    threads: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Time naive vs chunk per length (median of ``repeats`` after a warm-up).

    ``chunk_size=None`` uses what :func:`~deltamem_agents.ops.delta_scan` picks
    for ``device`` (16 on CPU, 64 on accelerators), i.e. what callers get.

    Naive is skipped (``naive_ms=None``, ``naive_skipped=True``) above
    ``max_naive_len`` because its Python token loop gets slow. Writes
    ``scan.json`` / ``scan.md`` under ``out_dir`` and returns the rows.
    ``threads`` temporarily sets ``torch.set_num_threads`` (on a shared or
    small CPU, 1 thread avoids OpenMP barrier stalls on tiny ops).
    """
    device = torch.device(device)
    if chunk_size is None:
        chunk_size = chunk_size_for(device)
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows = _bench_rows(lengths, batch, heads, rank, chunk_size, device, dtype, repeats, max_naive_len)
        machine = machine_info(device)
    finally:
        torch.set_num_threads(prev_threads)
    meta = {
        "benchmark": "scan",
        "params": {"lengths": list(lengths), "batch": batch, "heads": heads, "rank": rank,
                   "chunk_size": chunk_size, "dtype": str(dtype), "repeats": repeats,
                   "max_naive_len": max_naive_len, "threads": threads},
        "device": str(device),
        "machine": machine,
    }
    write_report("scan", rows, Path(out_dir), meta)
    return rows


def _bench_rows(
    lengths: tuple[int, ...], batch: int, heads: int, rank: int, chunk_size: int,
    device: torch.device, dtype: torch.dtype, repeats: int, max_naive_len: Optional[int],
) -> list[dict[str, Any]]:
    """One row per length: timings, speedup and max |chunk - naive| over reads and state."""
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for T in lengths:
            x = make_scan_inputs(batch, heads, T, rank, device=device, dtype=dtype)
            chunk_ms, (r_c, s_c) = _time_ms(lambda: chunk_delta_scan(**x, chunk_size=chunk_size), device, repeats)
            row: dict[str, Any] = {"T": T, "naive_ms": None, "chunk_ms": round(chunk_ms, 3), "speedup": None,
                                   "max_abs_diff": None, "naive_skipped": True}
            if max_naive_len is None or T <= max_naive_len:
                naive_ms, (r_n, s_n) = _time_ms(lambda: naive_delta_scan(**x), device, repeats)
                diff = max((r_c - r_n).abs().max().item(), (s_c - s_n).abs().max().item())
                row.update(naive_ms=round(naive_ms, 3), speedup=round(naive_ms / chunk_ms, 2),
                           max_abs_diff=diff, naive_skipped=False)
            rows.append(row)
    return rows
