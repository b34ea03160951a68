"""Benchmark: how fast a long history is written into a session, against the bare backbone.

One synthetic conversation (`bench.conversation`) of about ``tokens`` template tokens is fed
three ways, interleaved round by round in one process so that all see the same machine load:

* ``bare``: the bare backbone (a second copy, no δ-mem) runs exactly the forwards of the blocks
  ingest: the same token ids, in the same chunks of at most ``chunk`` tokens, its KV cache
  emptied where the session drops its window (the session's own `next_forward` decides), last-position
  logits only, as the session asks for;
* ``blocks``: `MemorySession.ingest` as it feeds now (``ingest_mode="blocks"``, the default);
* ``sliding``: `MemorySession.ingest` with ``ingest_mode="sliding"``, the behaviour before the
  fast path: every window fill re-prefills the kept share, writing off.

``vs_bare`` is tokens/s over the bare backbone's. Goal (issue 23): blocks >= 0.8x bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from deltamem_agents.bench.conversation import SyntheticConversation
from deltamem_agents.bench.report import Progress
from deltamem_agents.progress import ProgressLike
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

VARIANTS = ("bare", "blocks", "sliding")
GOAL = 0.8


def _bare_ingest(model: torch.nn.Module, ids: list[int], config: Any) -> None:
    """The blocks ingest's forwards on the bare backbone: the same chunks (`next_forward`, the
    session's own policy), its KV cache emptied where the session drops its window."""
    from transformers import DynamicCache

    from deltamem_agents.model.compat import cache_kwargs, output_cache
    from deltamem_agents.session.feeding import next_forward

    device = next(model.parameters()).device
    cache, held, position = DynamicCache(config=model.config), 0, 0
    while position < len(ids):
        rest = len(ids) - position
        action, n = next_forward(held, rest, rest, config, blocks=True)
        if action is not None:  # "shrink" cannot happen from an empty start; treated as a drop
            cache, held = DynamicCache(config=model.config), 0
        out = model(
            input_ids=torch.tensor([ids[position : position + n]], device=device), use_cache=True, logits_to_keep=1,
            **cache_kwargs(model, cache),
        )
        cache = output_cache(out)
        held += n
        position += n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ingest_bench(
    out_dir: Path,
    *,
    backbone: str | None = None,
    adapter: str | None = None,
    tokens: int = 8192,
    chunk: int = 512,
    context_window: int = 1024,
    repeats: int = 2,
    variants: tuple[str, ...] = VARIANTS,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    progress: ProgressLike = False,
) -> list[dict[str, Any]]:
    """Ingest tokens/s of the bare backbone and of `MemorySession.ingest` (blocks, sliding),
    side by side; writes ``ingest.json`` and ``ingest.md`` into ``out_dir``."""
    from deltamem_agents.model.backbone import (
        default_device,
        load_backbone,
        resolve_dtype,
    )
    from deltamem_agents.runtime import DeltaMemRuntime
    from deltamem_agents.session.chat import ChatEncoder, template_view
    from deltamem_agents.session.options import SessionConfig
    from deltamem_agents.session.session import MemorySession

    unknown = set(variants) - set(VARIANTS)
    if unknown or "bare" not in variants:
        raise ValueError(f"variants must include 'bare' and be among {VARIANTS}, got {variants}")
    if threads is not None:
        torch.set_num_threads(threads)  # 1 is steadier on a small CPU that other work shares
    started = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, device)
    bare_model, tokenizer = load_backbone(backbone, device=device, dtype=torch_dtype, progress=False)
    model, _ = load_backbone(backbone, device=device, dtype=torch_dtype, progress=False)
    store = tempfile.TemporaryDirectory(prefix="deltamem-bench-ingest-")
    runtime = DeltaMemRuntime(
        backbone, model=model, tokenizer=tokenizer, adapter=adapter if adapter else "auto", store=store.name,
        progress=False,
    )
    conversation = SyntheticConversation(tokenizer)
    messages, _ = conversation.prefix(tokens)
    encoded, _ = ChatEncoder(tokenizer).encode_delta("", [template_view(m) for m in messages], 0, next_segment=0)
    ids = encoded.ids

    def measure(variant: str, feed: list[int] | None = None) -> tuple[float, dict[str, Any]]:
        mode = "sliding" if variant == "sliding" else "blocks"
        config = SessionConfig(context_window=context_window, prefill_chunk=chunk, ingest_mode=mode)
        _sync(device)
        begin = time.perf_counter()
        info: dict[str, Any] = {}
        if variant == "bare":
            with torch.inference_mode():
                _bare_ingest(bare_model, feed or ids, config)
        else:
            session = MemorySession(model, tokenizer, runtime.handle, config=config, lock=runtime.lock)
            stats = session.ingest(messages if feed is None else tokenizer.decode(feed))
            info = {"tokens_written": stats.tokens_written, "context_tokens": stats.context_tokens}
        _sync(device)
        return time.perf_counter() - begin, info

    seconds: dict[str, list[float]] = {v: [] for v in variants}
    infos: dict[str, dict[str, Any]] = {}
    with Progress(progress, repeats * len(variants), "ingest benchmark") as bar:
        for variant in variants:  # warm-up: two chunks each, not measured
            measure(variant, ids[: 2 * chunk])
        for repeat in range(repeats):
            for variant in variants if repeat % 2 == 0 else tuple(reversed(variants)):
                elapsed, infos[variant] = measure(variant)
                seconds[variant].append(elapsed)
                bar.note(f"round {repeat + 1}: {variant} {len(ids) / elapsed:.1f} tokens/s")
                bar.advance()
    store.cleanup()

    bare_rate = len(ids) / statistics.median(seconds["bare"])
    about = {
        "bare": "bare backbone, the blocks ingest's forwards",
        "blocks": "MemorySession.ingest, blocks (now)",
        "sliding": "MemorySession.ingest, sliding (before)",
    }
    rows: list[dict[str, Any]] = []
    for variant in variants:
        rate = len(ids) / statistics.median(seconds[variant])
        rows.append({
            "variant": variant, "what": about[variant], "tokens": len(ids), "chunk": chunk, "context_window": context_window,
            "seconds": round(statistics.median(seconds[variant]), 3), "tok_s": round(rate, 1),
            "vs_bare": round(rate / bare_rate, 3), "context_tokens_after": infos[variant].get("context_tokens"),
        })
    blocks = next((r for r in rows if r["variant"] == "blocks"), None)
    sliding = next((r for r in rows if r["variant"] == "sliding"), None)
    headline = f"bare {rows[0]['tok_s']} tokens/s"
    if blocks:
        headline += f"; blocks ingest {blocks['tok_s']} tokens/s ({blocks['vs_bare']}x bare)"
    if sliding:
        headline += f"; sliding ingest (before) {sliding['tok_s']} tokens/s ({sliding['vs_bare']}x)"
    meta = {
        "benchmark": "ingest",
        "command": f"deltamem bench ingest --tokens {tokens} --chunk {chunk} --context-window {context_window} "
        f"--repeats {repeats}" + (f" --threads {threads}" if threads is not None else ""),
        "params": {
            "backbone": backbone, "adapter": adapter, "tokens_asked": tokens, "tokens": len(ids), "chunk": chunk,
            "context_window": context_window, "repeats": repeats, "device": str(device),
            "dtype": str(torch_dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "statistic": "median seconds over the repeats",
        },
        "device": str(device),
        "machine": machine_info(device),
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": {
            "goal": f"blocks ingest >= {GOAL}x the bare backbone's tokens/s (same tokens, same chunks)",
            "met": None if blocks is None else blocks["vs_bare"] >= GOAL,
            "headline": headline + f"; {len(ids)} tokens, chunks of {chunk}, window {context_window}",
        },
    }
    write_report("ingest", rows, Path(out_dir), meta)
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m deltamem_agents.bench.ingest``: the same options as ``deltamem bench ingest``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--backbone")
    parser.add_argument("--adapter")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--context-window", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    rows = run_ingest_bench(
        args.out, backbone=args.backbone, adapter=args.adapter, tokens=args.tokens, chunk=args.chunk,
        context_window=args.context_window, repeats=args.repeats, device=args.device, dtype=args.dtype,
        threads=args.threads, progress=True,
    )
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
