"""Benchmark: what attaching δ-mem costs a real backbone (prefill, decode, peak memory).

Bare and attached runs are interleaved in one process (attach, measure, detach, measure...)
so both see the same machine state; peak memory is measured in one fresh child process per
variant (CPU: peak RSS; CUDA: peak allocated), because a process's peak RSS never goes down.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.ops.fused import fused_decode_status
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

VARIANTS = ("bare", "delta-mem")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _attach(model: torch.nn.Module, adapter: str | None, config: DeltaMemConfig):
    from deltamem_agents import attach_delta_mem, load_adapter

    return load_adapter(model, adapter) if adapter else attach_delta_mem(model, config)


def _prompt(model: torch.nn.Module, tokens: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    return torch.randint(0, vocab, (1, tokens), generator=generator).to(device)


def _prefill_and_decode(model: torch.nn.Module, ids: torch.Tensor, decode_tokens: int) -> tuple[float, float]:
    """Seconds for one prefill of ``ids`` and for ``decode_tokens`` greedy steps after it."""
    device = ids.device
    _sync(device)
    start = time.perf_counter()
    out = model(ids, use_cache=True)
    _sync(device)
    prefill = time.perf_counter() - start
    token = out.logits[:, -1:].argmax(-1)
    cache = out.past_key_values
    start = time.perf_counter()
    for _ in range(decode_tokens):
        out = model(token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
    _sync(device)
    return prefill, time.perf_counter() - start


def _peak_memory_child(variant: str, options: dict[str, Any], queue: Any) -> None:
    from deltamem_agents.model.backbone import load_backbone

    device = torch.device(options["device"])
    model, _ = load_backbone(options["backbone"], device=device, dtype=options["dtype"], progress=False)
    if variant == "delta-mem":
        _attach(model, options["adapter"], DeltaMemConfig(**options["config"]))
    ids = _prompt(model, options["prompt_tokens"], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        _prefill_and_decode(model, ids, options["decode_tokens"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    queue.put(peak)


def _peak_memory(variant: str, options: dict[str, Any]) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_child, args=(variant, options, queue))
    process.start()
    peak = queue.get(timeout=1800)
    process.join()
    return float(peak)


def run_overhead_bench(
    out_dir: Path,
    *,
    backbone: str | None = None,
    adapter: str | None = None,
    config: DeltaMemConfig | None = None,
    prompt_tokens: int = 512,
    decode_tokens: int = 64,
    repeats: int = 5,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    measure_memory: bool = True,
) -> list[dict[str, Any]]:
    """Prefill and decode tokens/s and peak memory, bare vs attached, side by side."""
    from deltamem_agents.model.backbone import (
        default_device,
        load_backbone,
        resolve_dtype,
    )

    config = config or DeltaMemConfig()
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, device)
    model, _ = load_backbone(backbone, device=device, dtype=torch_dtype)
    ids = _prompt(model, prompt_tokens, device)
    timings: dict[str, dict[str, list[float]]] = {v: {"prefill": [], "decode": []} for v in VARIANTS}
    params = 0
    for repeat in range(repeats + 1):  # the first round warms up and is dropped
        for variant in VARIANTS if repeat % 2 == 0 else reversed(VARIANTS):
            # attached outside inference mode, as an application does: its weights are then
            # ordinary tensors (inference-mode tensors would defeat the decode step's caches)
            handle = _attach(model, adapter, config) if variant == "delta-mem" else None
            with torch.inference_mode():
                prefill, decode = _prefill_and_decode(model, ids, decode_tokens)
            if handle is not None:
                params = handle.num_parameters
                handle.detach()
            if repeat:
                timings[variant]["prefill"].append(prefill)
                timings[variant]["decode"].append(decode)

    options = {
        "backbone": backbone, "adapter": adapter, "config": config.model_dump(), "device": str(device),
        "dtype": str(torch_dtype).removeprefix("torch."), "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens,
    }
    rows: list[dict[str, Any]] = []
    for variant in VARIANTS:
        prefill = statistics.median(timings[variant]["prefill"])
        decode = statistics.median(timings[variant]["decode"])
        rows.append({
            "variant": variant,
            "prefill_tok_s": round(prompt_tokens / prefill, 1),
            "decode_tok_s": round(decode_tokens / decode, 2),
            "peak_mem_mib": round(_peak_memory(variant, options), 1) if measure_memory else None,
            "delta_params": params if variant != "bare" else 0,
        })
    bare, attached = rows
    relative = {
        "variant": "delta-mem / bare",
        "prefill_tok_s": round(attached["prefill_tok_s"] / bare["prefill_tok_s"], 3),
        "decode_tok_s": round(attached["decode_tok_s"] / bare["decode_tok_s"], 3),
        "peak_mem_mib": round(attached["peak_mem_mib"] / bare["peak_mem_mib"], 4) if measure_memory else None,
    }
    rows.append(relative)
    meta = {
        "benchmark": "overhead",
        "params": {**options, "repeats": repeats, "goals": "decode >= 0.95, prefill >= 0.90, memory <= 1.02 (ratios)"},
        "device": str(device),
        "machine": machine_info(device),
        # which δ-mem decode step ran: the fused C++ one applies to CPU float32 only
        "decode_step": fused_decode_status() if device.type == "cpu" and torch_dtype == torch.float32 else "eager",
    }
    write_report("overhead", rows, Path(out_dir), meta)
    return rows
