"""Benchmark: what attaching δ-mem costs a real backbone (prefill, decode, peak memory).

Bare and attached runs are interleaved in one process (attach, measure, detach, measure...)
so both see the same machine state; peak memory is measured in one fresh child process per
variant (CPU: peak RSS; CUDA: peak allocated), because a process's peak RSS never goes down.
Several weight dtypes (``dtypes``, e.g. float32 and bfloat16) are measured one after another.

When ``llama_cpp`` (llama-cpp-python) is importable and the backbone is a GGUF file (the
embedded default is), the same GGUF decoded by llama.cpp with the same threads is measured in
the same run, so "δ-mem decode / llama.cpp decode" is a ratio measured side by side.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import resource
import statistics
import time
from collections.abc import Sequence
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
    model, _ = load_backbone(
        options["backbone"], device=device, dtype=options["dtype"], weights=options["weights"], progress=False
    )
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


def _gguf_of(backbone: str | None) -> Path | None:
    """The GGUF file llama.cpp can run for ``backbone`` (an embedded one or a .gguf path), if any."""
    from deltamem_agents.model.backbone import (
        DEFAULT_BACKBONE,
        EMBEDDED_BACKBONES,
        BackboneNotFoundError,
        find_embedded_gguf,
    )

    name = backbone or DEFAULT_BACKBONE
    if name in EMBEDDED_BACKBONES:
        try:
            return find_embedded_gguf(name)[0]
        except BackboneNotFoundError:
            return None
    path = Path(name).expanduser()
    return path if path.suffix == ".gguf" and path.is_file() else None


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _llama_cpp_timings(gguf: Path, prompt_tokens: int, decode_tokens: int, repeats: int, threads: int) -> dict[str, Any]:
    """Median prefill and greedy decode tokens/s of llama.cpp on ``gguf``, the same random prompt."""
    from llama_cpp import Llama, __version__

    llm = Llama(
        model_path=str(gguf), n_ctx=prompt_tokens + decode_tokens + 16, n_threads=threads, n_threads_batch=threads,
        n_batch=max(prompt_tokens, 8), verbose=False,
    )
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, llm.n_vocab(), (prompt_tokens,), generator=generator).tolist()
    prefills, decodes = [], []
    for repeat in range(repeats + 1):  # the first round warms up and is dropped
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([llm.sample(temp=0.0)])  # greedy, as ours
        if repeat:
            prefills.append(prefill)
            decodes.append(time.perf_counter() - start)
    return {
        "prefill_tok_s": round(prompt_tokens / statistics.median(prefills), 1),
        "decode_tok_s": round(decode_tokens / statistics.median(decodes), 2),
        "version": __version__,
    }


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
    dtypes: Sequence[str | None] | None = None,
    measure_memory: bool = True,
    llama_cpp: bool | None = None,
) -> list[dict[str, Any]]:
    """Prefill and decode tokens/s and peak memory, bare vs attached, side by side, for each
    weight dtype in ``dtypes`` (default: ``[dtype]``; ``"bfloat16+int8"`` names a dtype with
    int8 weights, `deltamem_agents.model.quantize`); plus llama.cpp on the same GGUF
    (``llama_cpp``: None measures it when it is installed and the backbone is a GGUF file)."""
    from deltamem_agents.model.backbone import default_device

    config = config or DeltaMemConfig()
    device = torch.device(device) if device is not None else default_device()
    rows: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    for each in dtypes or [dtype]:
        dtype_rows, meta = _measure_dtype(
            backbone, adapter, config, device, each, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
            repeats=repeats, measure_memory=measure_memory,
        )
        rows += dtype_rows
        metas.append(meta)
    gguf = _gguf_of(backbone) if device.type == "cpu" else None
    llama: dict[str, Any] | None = None
    if llama_cpp is True and (gguf is None or not llama_cpp_available()):
        raise RuntimeError("the llama.cpp row needs llama-cpp-python installed and a GGUF backbone")
    if llama_cpp is not False and gguf is not None and llama_cpp_available():
        llama = _llama_cpp_timings(gguf, prompt_tokens, decode_tokens, repeats, torch.get_num_threads())
        rows.append({"variant": "llama.cpp (bare)", "dtype": gguf.name, "prefill_tok_s": llama["prefill_tok_s"],
                     "decode_tok_s": llama["decode_tok_s"], "peak_mem_mib": None, "delta_params": 0})
        for row in [r for r in rows if r["variant"] == "delta-mem"]:
            rows.append({
                "variant": "delta-mem / llama.cpp", "dtype": row["dtype"],
                "prefill_tok_s": round(row["prefill_tok_s"] / llama["prefill_tok_s"], 3),
                "decode_tok_s": round(row["decode_tok_s"] / llama["decode_tok_s"], 3), "peak_mem_mib": None,
            })
    meta = {
        "benchmark": "overhead",
        "params": {**metas[0]["options"], "dtypes": [m["label"] for m in metas], "repeats": repeats,
                   "goals": "decode >= 0.95, prefill >= 0.90, memory <= 1.02 (ratios); decode >= 0.5x llama.cpp"},
        "device": str(device),
        "machine": machine_info(device),
        # which δ-mem decode step ran: the fused C++ one applies on CPU
        "decode_step": {m["label"]: m["decode_step"] for m in metas},
        "llama_cpp": None if llama is None else {"version": llama["version"], "gguf": str(gguf), "threads": torch.get_num_threads()},
    }
    write_report("overhead", rows, Path(out_dir), meta)
    return rows


def _measure_dtype(
    backbone: str | None, adapter: str | None, config: DeltaMemConfig, device: torch.device, dtype: str | None, *,
    prompt_tokens: int, decode_tokens: int, repeats: int, measure_memory: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Bare vs attached for one weight dtype (``"bfloat16+int8"``: with int8 weights): their rows,
    the ratio row, and the run's options."""
    from deltamem_agents.model.backbone import (
        load_backbone,
        resolve_dtype,
        split_weight_spec,
    )

    name, weights = split_weight_spec(dtype)
    torch_dtype = resolve_dtype(name, device)
    model, _ = load_backbone(backbone, device=device, dtype=torch_dtype, weights=weights)
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
        "dtype": str(torch_dtype).removeprefix("torch."), "weights": weights,
        "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens,
    }
    label = options["dtype"] + (f"+{weights}" if weights != "dense" else "")
    rows: list[dict[str, Any]] = []
    for variant in VARIANTS:
        prefill = statistics.median(timings[variant]["prefill"])
        decode = statistics.median(timings[variant]["decode"])
        rows.append({
            "variant": variant,
            "dtype": label,
            "prefill_tok_s": round(prompt_tokens / prefill, 1),
            "decode_tok_s": round(decode_tokens / decode, 2),
            "peak_mem_mib": round(_peak_memory(variant, options), 1) if measure_memory else None,
            "delta_params": params if variant != "bare" else 0,
        })
    bare, attached = rows
    rows.append({
        "variant": "delta-mem / bare",
        "dtype": label,
        "prefill_tok_s": round(attached["prefill_tok_s"] / bare["prefill_tok_s"], 3),
        "decode_tok_s": round(attached["decode_tok_s"] / bare["decode_tok_s"], 3),
        "peak_mem_mib": round(attached["peak_mem_mib"] / bare["peak_mem_mib"], 4) if measure_memory else None,
    })
    # the fused step takes any CPU backbone dtype (δ-mem's own weights stay float32)
    return rows, {"options": options, "label": label,
                  "decode_step": fused_decode_status() if device.type == "cpu" else "eager"}
