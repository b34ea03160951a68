"""`deltamem bench ...`: benchmarks; each writes <name>.json and <name>.md into --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltamem_agents.cli._common import (
    Device,
    OutDir,
    console,
    parse_ints,
    print_rows,
    user_errors,
)
from deltamem_agents.cli._runtime import BackbonePathOpt, DtypeOpt


def parse_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]

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
    backbone: BackbonePathOpt = None,
    adapter: Annotated[str | None, typer.Option(help="adapter folder (default: a fresh default config)")] = None,
    prompt_tokens: int = 512,
    decode_tokens: int = 64,
    repeats: int = 5,
    device: Device = None,
    dtype: DtypeOpt = None,
    dtypes: Annotated[
        str | None, typer.Option(help="several weight dtypes one after another, e.g. float32,bfloat16,bfloat16+int8 (+int8: int8 weights; overrides --dtype)")
    ] = None,
    memory: Annotated[bool, typer.Option(help="also measure peak memory in child processes")] = True,
    llama_cpp: Annotated[
        bool | None,
        typer.Option("--llama-cpp/--no-llama-cpp", help="measure llama.cpp on the same GGUF too (default: when installed)"),
    ] = None,
) -> None:
    """Prefill/decode tokens/s and peak memory with δ-mem attached vs the bare backbone (and
    vs llama.cpp on the same GGUF when llama-cpp-python is installed)."""
    from deltamem_agents.bench.overhead import run_overhead_bench

    rows = run_overhead_bench(
        out, backbone=backbone, adapter=adapter, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens,
        repeats=repeats, device=device, dtype=dtype, measure_memory=memory, llama_cpp=llama_cpp,
        dtypes=[d.strip() for d in dtypes.split(",") if d.strip()] if dtypes else None,
    )
    print_rows(rows, "δ-mem overhead")
    console.print(f"wrote {out / 'overhead.json'} and {out / 'overhead.md'}")


@bench_app.command("ingest")
@user_errors
def bench_ingest(
    out: OutDir = Path("bench-out"),
    backbone: BackbonePathOpt = None,
    adapter: Annotated[str | None, typer.Option(help="adapter folder (default: the shipped one, else untrained)")] = None,
    tokens: Annotated[int, typer.Option(min=16, help="tokens of synthetic conversation to ingest")] = 8192,
    chunk: Annotated[int, typer.Option(min=1, help="tokens per forward (SessionConfig.prefill_chunk)")] = 512,
    context_window: Annotated[int, typer.Option(min=16, help="the session's attention window")] = 1024,
    repeats: int = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: torch's)")] = None,
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Ingest tokens/s (blocks, the default, and sliding) vs the bare backbone's prefill of the
    same tokens in the same forwards, side by side in one run."""
    from deltamem_agents.bench.ingest import run_ingest_bench

    rows = run_ingest_bench(
        out, backbone=backbone, adapter=adapter, tokens=tokens, chunk=chunk, context_window=context_window,
        repeats=repeats, threads=threads, device=device, dtype=dtype, progress=True,
    )
    print_rows(rows, "ingest vs bare prefill")
    console.print(f"wrote {out / 'ingest.json'} and {out / 'ingest.md'}")


@bench_app.command("growth")
@user_errors
def bench_growth(
    out: OutDir = Path("bench-out"),
    backbone: BackbonePathOpt = None,
    adapter: Annotated[str | None, typer.Option(help="δ-mem adapter folder (default: untrained, seeded)")] = None,
    sizes: Annotated[str, typer.Option(help="history sizes in tokens")] = "1024,2048,4096,8192,16384,32768",
    conditions: Annotated[str, typer.Option(help="any of full,full-cached,delta-mem,hybrid,rag")] = "full,full-cached,delta-mem,hybrid,rag",
    window: Annotated[int, typer.Option(help="recent-context window of delta-mem, hybrid and rag")] = 1024,
    decode_tokens: int = 64,
    turns: Annotated[int, typer.Option(help="measured turns per size for the windowed conditions")] = 3,
    full_turns: Annotated[int, typer.Option(help="measured turns per size for full replay")] = 1,
    memory_limit_mib: Annotated[float | None, typer.Option(help="most memory a turn may add (default: 90% of free)")] = None,
    device: Device = None,
    dtype: DtypeOpt = None,
    reopen: Annotated[
        bool, typer.Option(help="measure each size of the windowed conditions in a fresh process that opens the stored memory")
    ] = True,
) -> None:
    """Per-turn latency, peak memory and prompt tokens as a conversation grows (full replay, δ-mem, hybrid, RAG)."""
    from deltamem_agents.bench.growth import GrowthConfig, run_growth_bench

    config = GrowthConfig(
        backbone=backbone, adapter=adapter, sizes=parse_ints(sizes), conditions=tuple(parse_names(conditions)),
        window=window, decode_tokens=decode_tokens, turns=turns, full_turns=full_turns,
        memory_limit_mib=memory_limit_mib, device=device, dtype=dtype, reopen=reopen,
    )
    rows = run_growth_bench(out, config, progress=True)
    print_rows(rows, "growth: one turn as the conversation grows")
    console.print(f"wrote {out / 'growth.json'}, {out / 'growth.md'} and {out / 'growth.png'}")


@bench_app.command("batch")
@user_errors
def bench_batch(
    out: OutDir = Path("bench-out"),
    backbone: BackbonePathOpt = None,
    adapter: Annotated[str | None, typer.Option(help="δ-mem adapter folder (default: untrained, seeded)")] = None,
    sessions: Annotated[str, typer.Option(help="numbers of concurrent sessions")] = "1,4,16",
    decode_tokens: int = 64,
    repeats: Annotated[int, typer.Option(help="rounds per size (median)")] = 1,
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Aggregate tokens/s of sessions decoded in one batch vs one after another (goal: >= 3x at 16)."""
    from deltamem_agents.bench.batch import BatchBenchConfig, run_batch_bench

    config = BatchBenchConfig(
        backbone=backbone, adapter=adapter, sessions=parse_ints(sessions), decode_tokens=decode_tokens,
        repeats=repeats, device=device, dtype=dtype,
    )
    print_rows(run_batch_bench(out, config, progress=True), "batched sessions vs one after another")
    console.print(f"wrote {out / 'batch.json'}, {out / 'batch.md'} and {out / 'batch.png'}")


@bench_app.command("recall")
@user_errors
def bench_recall(
    out: OutDir = Path("bench-out"),
    backbone: BackbonePathOpt = None,
    adapter: Annotated[str, typer.Option(help="adapter folder, 'auto' (the shipped one) or 'none' (untrained)")] = "auto",
    lengths: Annotated[str, typer.Option(help="distractor tokens between the fact and the question")] = "256,1024,4096",
    trials: Annotated[int, typer.Option(help="trials per pool (even: pairs ask the same slot)")] = 8,
    seen_vocabulary: Annotated[
        str, typer.Option(help="what the adapter trained on: closed (data/vocab.py lists) or open (the open train pool)")
    ] = "closed",
    ingest_mode: Annotated[
        str, typer.Option(help="how the writer's ingest meets a full window: blocks (the default) or sliding")
    ] = "blocks",
    history_ingest: Annotated[
        str, typer.Option(help="turns: one ingest per small-talk exchange (never in blocks); segments: the history "
                          "up to each length in one ingest call")
    ] = "turns",
    write_window: Annotated[int, typer.Option(help="attention window while the history is written")] = 2048,
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Answer recall of the state alone after N distractor tokens, seen vs unseen values, vs another trial's state."""
    from deltamem_agents.bench.recall import RecallBenchConfig, run_recall_bench

    config = RecallBenchConfig(
        backbone=backbone, adapter=None if adapter == "none" else adapter, lengths=parse_ints(lengths), trials=trials,
        seen_vocabulary=seen_vocabulary, ingest_mode=ingest_mode, history_ingest=history_ingest,  # type: ignore[arg-type]
        write_window=write_window, device=device, dtype=dtype,  # type: ignore[arg-type]
    )
    print_rows(run_recall_bench(out, config, progress=True), "recall: the state alone after N distractor tokens")
    console.print(f"wrote {out / 'recall.json'}, {out / 'recall.md'} and {out / 'recall.png'}")


@bench_app.command("retrieval")
@user_errors
def bench_retrieval(
    out: OutDir = Path("bench-out"),
    sizes: Annotated[str, typer.Option(help="log sizes (entries)")] = "1000,10000,100000",
    samples: Annotated[int, typer.Option(help="measured calls per operation and size")] = 100,
    threads: Annotated[int | None, typer.Option(help="torch threads for the embedding model")] = None,
    layouts: Annotated[str, typer.Option(help="where the entries live: one-session, many-sessions, many-users")] = (
        "one-session,many-sessions,many-users"),
    embedded_fill: Annotated[int | None, typer.Option(
        help="embed at most this many fill texts; the rest of the log gets perturbed copies of their vectors "
             "(for logs too large to embed: 1M texts take ~2 h on 2 CPUs)")] = None,
    fill_batch: Annotated[int, typer.Option(help="entries per bulk write while filling")] = 1000,
) -> None:
    """TextLog add/search latency p50/p95 (and search recall@k against brute force) on real Chroma as
    the log grows, for several layouts of users and sessions; embedding apart, and the router."""
    from deltamem_agents.bench.retrieval import (
        RetrievalBenchConfig,
        run_retrieval_bench,
    )

    config = RetrievalBenchConfig(sizes=parse_ints(sizes), samples=samples, threads=threads,
                                  layouts=tuple(p.strip() for p in layouts.split(",") if p.strip()),
                                  embedded_fill=embedded_fill, fill_batch=fill_batch)
    print_rows(run_retrieval_bench(out, config, progress=True), "text log and router latency")
    console.print(f"wrote {out / 'retrieval.json'}, {out / 'retrieval.md'} and {out / 'retrieval.png'}")


@bench_app.command("compare")
@user_errors
def bench_compare(
    out: OutDir = Path("bench-out"),
    sizes: Annotated[str, typer.Option(help="memories held by the one user")] = "1000,100000",
    samples: Annotated[int, typer.Option(help="measured adds and searches per system and size")] = 50,
    mem0_python: Annotated[Path | None, typer.Option(
        help="python of a venv with mem0ai (bash scripts/setup-compare.sh makes .venv-compare); without it mem0 is left out")] = None,
) -> None:
    """deltamem's text log beside LangGraph's InMemoryStore, LlamaIndex's SimpleVectorStore and mem0:
    add/search latency and recall@k at each size, every system given the same vectors."""
    from deltamem_agents.bench.compare import CompareBenchConfig, run_compare_bench

    if mem0_python is not None and not mem0_python.exists():
        raise typer.BadParameter(f"{mem0_python} does not exist (bash scripts/setup-compare.sh makes .venv-compare)",
                                 param_hint="--mem0-python")
    config = CompareBenchConfig(sizes=parse_ints(sizes), samples=samples, mem0_python=mem0_python)
    print_rows(run_compare_bench(out, config, progress=True), "memory stores side by side")
    console.print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")


@bench_app.command("store")
@user_errors
def bench_store(
    out: OutDir = Path("bench-out"),
    writers: Annotated[str, typer.Option(help="concurrent writers, each on its own sessions")] = "1,16,64",
    samples: Annotated[int, typer.Option(min=1, help="measured turns per store and writer count")] = 192,
    stores: Annotated[str, typer.Option(help="directory, redis or both")] = "directory,redis",
    redis_url: Annotated[str | None, typer.Option(help="a running Redis (default: start a redis-server for the bench)")] = None,
    backbone: Annotated[str | None, typer.Option(help="whose state a turn saves (default: embedded SmolLM2)")] = None,
) -> None:
    """Save and load latency p50/p95 of one turn in the directory store and Redis, 1..64 concurrent writers."""
    from deltamem_agents.bench.store import StoreBenchConfig, run_store_bench

    config = StoreBenchConfig(
        writers=parse_ints(writers), samples=samples, stores=tuple(parse_names(stores)), redis_url=redis_url,
        backbone=backbone,
    )
    print_rows(run_store_bench(out, config, progress=True), "session store: one turn's save and load")
    console.print(f"wrote {out / 'store.json'} and {out / 'store.md'}")


@bench_app.command("all")
@user_errors
def bench_all(
    out: OutDir = Path("docs/benchmarks"),
    page: Annotated[Path, typer.Option(help="the Markdown page generated from the reports")] = Path("docs/benchmarks.md"),
    device: Device = None,
    skip: Annotated[str, typer.Option(help="comma-separated benchmarks not to re-run (their old reports stay)")] = "",
) -> None:
    """Run every benchmark into --out and regenerate the benchmarks page (tables and plots) from the reports."""
    from deltamem_agents.bench.page import write_benchmarks_page
    from deltamem_agents.bench.registry import BENCHMARKS

    skipped = set(parse_names(skip))
    unknown = skipped - set(BENCHMARKS)
    if unknown:
        raise typer.BadParameter(f"unknown benchmarks {sorted(unknown)}; known: {', '.join(BENCHMARKS)}", param_hint="--skip")
    for name, spec in BENCHMARKS.items():
        runner = spec.load_runner()
        if name in skipped:
            continue
        if runner is None:
            console.print(f"{name}: no runner registered; its section shows {out / (name + '.json')} if it exists")
            continue
        console.print(f"[bold]{name}[/bold]: {spec.title}")
        print_rows(runner(out, device=device), name)
    console.print(f"wrote {write_benchmarks_page(out, page)}")


@bench_app.command("page")
@user_errors
def bench_page(
    out: OutDir = Path("docs/benchmarks"),
    page: Annotated[Path, typer.Option(help="the Markdown page to write")] = Path("docs/benchmarks.md"),
) -> None:
    """Regenerate the benchmarks page and its plots from existing reports (no measuring)."""
    from deltamem_agents.bench.page import write_benchmarks_page

    console.print(f"wrote {write_benchmarks_page(out, page)}")
