"""Every benchmark in one table: what it shows, how `deltamem bench all` runs it, in page order.

`deltamem bench all` runs each entry's ``runner`` and `write_benchmarks_page` renders one section
per entry from ``<name>.json``. A benchmark without a runner here (``eval``, written with
``deltamem_agents.eval``) is still rendered once its report exists; to make ``bench all`` run it,
set its ``runner`` to ``"module:function"`` taking ``(out_dir, *, device)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    about: str
    command: str
    runner: str | None = None
    # where the report lives, relative to the reports folder, when it is not ``<name>.json``
    # (the evaluation writes its own report next to its answers, in docs/eval/)
    report: str | None = None

    def report_path(self, report_dir: Path) -> Path:
        return report_dir / (self.report or f"{self.name}.json")

    def load_runner(self) -> Callable[..., Any] | None:
        if self.runner is None:
            return None
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)


def _scan(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.scan import run_scan_bench

    return run_scan_bench(out, device=device or "cpu", threads=1, max_naive_len=None)


def _overhead(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.overhead import run_overhead_bench

    return run_overhead_bench(out, device=device, repeats=7, dtypes=["float32", "bfloat16", "bfloat16+int8"])


def _ingest(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.ingest import run_ingest_bench

    return run_ingest_bench(out, device=device, progress=True)


def _growth(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.growth import GrowthConfig, run_growth_bench

    return run_growth_bench(out, GrowthConfig(device=device), progress=True)


def _batch(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.batch import BatchBenchConfig, run_batch_bench

    return run_batch_bench(out, BatchBenchConfig(device=device), progress=True)


def _retrieval(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.retrieval import (
        RetrievalBenchConfig,
        run_retrieval_bench,
    )

    return run_retrieval_bench(out, RetrievalBenchConfig(threads=1), progress=True)


def _compare(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.compare import CompareBenchConfig, run_compare_bench

    mem0 = Path(__file__).resolve().parents[2] / ".venv-compare" / "bin" / "python"
    return run_compare_bench(out, CompareBenchConfig(mem0_python=mem0 if mem0.exists() else None), progress=True)


def _store(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.store import run_store_bench

    return run_store_bench(out, progress=True)


def _recall(out: Path, *, device: str | None) -> Any:
    from deltamem_agents.bench.recall import RecallBenchConfig, run_recall_bench

    return run_recall_bench(out, RecallBenchConfig(device=device), progress=True)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "scan", "the OSAM scan",
            "Chunked (WY/UT) scan vs the naive per-token loop, one layer, rank 8, forward in inference mode. "
            "Goal: >= 20x faster at 8k tokens on CPU.",
            "deltamem bench scan", f"{__name__}:_scan",
        ),
        Benchmark(
            "recall", "what the state alone remembers",
            "A passkey test for the δ-mem state: one fact told once (\"our ferret is called Quillon\"), then N tokens "
            "of small talk, then the question in a fresh session holding only the state (no window, no notes). "
            "`seen` values come from the vocabulary the adapter trained on, `unseen` ones from the open test pool "
            "(never in any training data). Trials come in pairs asking the same slot with different values; "
            "`recall_other_state` answers each trial with its partner's state (same question, another value), so "
            "`own_minus_other` is what the state carries of this conversation. Score: answer recall (the value's "
            "words in the answer). A finer signal than greedy answers: `value_nll_own`/`value_nll_other` is the "
            "value's teacher-forced NLL per token (nats) under the trial's own state and its partner's, and "
            "`own_state_likelier` the share of trials whose own state makes the value likelier (chance: 50%). "
            "Goal (issue 21): unseen values >= 80% at 1k tokens, >= 50% at 4k.",
            "deltamem bench recall", f"{__name__}:_recall",
        ),
        Benchmark(
            "overhead", "what δ-mem costs the backbone",
            "SmolLM2-135M with δ-mem attached (default config: rank 8, q/k/v/o heads) vs the bare backbone, "
            "interleaved in one run; peak memory in one child process per variant. Goals: decode >= 0.95x, "
            "prefill >= 0.90x of bare tokens/s, peak memory <= 1.02x. Where decoding's cost comes from: per "
            "generated token, every layer reads and writes its state, a few dozen operations on vectors of 8-32 "
            "numbers whose cost on a CPU is dispatch and Python, not arithmetic; on CPU they run as one "
            "fused C++ call per layer (`decode_step` in the JSON says which path ran; eager PyTorch decoded at "
            "0.874x). The cost is the same for any backbone width, so the ratio is at its worst on a model as "
            "small as this one. Each weight dtype measured has its own rows; bfloat16+int8 stores the "
            "backbone's linear weights as int8 (`--weights int8`), the fastest CPU decode. With "
            "llama-cpp-python installed, llama.cpp decodes the same GGUF (Q4_1) with the same threads in the same "
            "run (`delta-mem / llama.cpp`; goal, issue 23: decode >= 0.5x).",
            "deltamem bench overhead", f"{__name__}:_overhead",
        ),
        Benchmark(
            "ingest", "writing a long history",
            "A synthetic conversation (8k template tokens) written into a fresh `MemorySession` by `ingest`, 512 "
            "tokens per forward, 1024-token window, side by side in one run with the bare backbone running the "
            "same forwards on the same tokens (a second copy of it, no δ-mem; its KV cache emptied every 1024 "
            "tokens). `blocks` is how ingest feeds now: a full window is dropped, not re-prefilled (the state "
            "holds it), and the last block keeps at least the window's kept share, so nothing is re-prefilled; "
            "`sliding` is the behaviour before "
            "(`SessionConfig(ingest_mode=\"sliding\")`): every window fill re-prefills its most recent half, "
            "writing off. `vs_bare`: tokens/s over the bare backbone's. Goal (issue 23): blocks >= 0.8x bare. "
            "Design and why: docs/sessions.md, Ingesting long histories.",
            "deltamem bench ingest", f"{__name__}:_ingest",
        ),
        Benchmark(
            "growth", "one turn as the conversation grows",
            "A conversation grows to 1k ... 32k tokens of history; at each size one new user turn is answered with "
            "64 tokens (end-of-turn ignored, so every condition decodes the same). Conditions on the same backbone: "
            "`full` re-prefills the whole history every turn (a chat app on a stateless model server); "
            "`full-cached` keeps the whole history in a KV cache between turns (prefix caching, the best case for "
            "stuffing the context); `delta-mem` is a `MemorySession` (1024-token window + OSAM state); `hybrid` is "
            "`HybridMemory` (the session + Chroma text log + router, with search, state probe, logging and the commit "
            "inside the turn); `rag` is the bare backbone with retrieved snippets + the recent window, prompt rebuilt "
            "every turn. `turn_ms` is the median over the measured turns, `peak_mem_mib` the highest turn peak, "
            "`context_tokens` the tokens in context when the answer starts, `prefill_tokens` those computed this turn, "
            "`vs_full` how many times faster than full replay. Each condition runs in its own process, its history "
            "grown once through the sizes; `delta-mem`, `hybrid` and `rag` keep their memory on disk and each size is "
            "measured in a fresh process that opens it (as a server does after a restart), so a turn's peak memory is "
            "what answering costs at that history length, not what the allocator kept from ingesting it.",
            "deltamem bench growth", f"{__name__}:_growth",
        ),
        Benchmark(
            "batch", "batched sessions",
            "Several sessions (different histories, so different KV lengths and states) answer one turn each, "
            "64 tokens, one after another (`MemorySession.reply`) vs in one batch (`reply_batch`). Throughput is "
            "decoded tokens of all sessions over the wall time of the whole turn, prefill included. `same_text` "
            "counts replies identical in both runs (greedy). `merge_ms` is what stacking and splitting the KV caches "
            "cost in the batched turn; `rebuild_ms` what re-prefilling every session's window would cost instead.",
            "deltamem bench batch", f"{__name__}:_batch",
        ),
        Benchmark(
            "retrieval", "the text log and the router",
            "`TextLog` on real embedded Chroma (PersistentClient) with all-MiniLM-L6-v2 embeddings, filled to 1k, "
            "10k, 100k and 1M entries in three layouts (past 100k, `--embedded-fill 100000`: the rest of the log holds "
            "perturbed copies of real vectors; the measured adds and queries are real): "
            "`one-session` (the session searched is the whole log), "
            "`many-sessions` (one user, 100 sessions: the session searched holds 1% of the user's entries) and "
            "`many-users` (100 users: the user searched holds 1% of the log). p50/p95 of `add_message` and `search` "
            "(k=8, scoped to the session) end to end and with the embedding precomputed (the log and Chroma alone), "
            "with the search's recall@k against the exact nearest entries of the session; of embedding one text, and "
            "of `MemoryRouter.decide` on real hits. Each user has a Chroma collection of their own and each session "
            "an index of its own, where a session is searched with no metadata filter (docs/hybrid-memory.md, "
            "Storage layout). Goal (issue 23): p50 <= 20 ms at 100k entries and <= 50 ms at 1M with the vector "
            "given, recall as brute force.",
            "deltamem bench retrieval", f"{__name__}:_retrieval",
        ),
        Benchmark(
            "compare", "deltamem beside other memory stores",
            "One user's N memories (1k, 100k) in deltamem's `TextLog` (embedded Chroma), LangGraph's `InMemoryStore` "
            "(vector index), LlamaIndex's `SimpleVectorStore` (the default store of its vector memory block, "
            "filtered by user) and mem0's `Memory` (`infer=False`, its default local Qdrant store, in its own venv: "
            "`bash scripts/setup-compare.sh`). Every system is given the same all-MiniLM-L6-v2 vectors, so the "
            "embedding model is not in these numbers; deltamem's `add` is the log write only, without the "
            "δ-state write. `recall_at_k`: overlap of the k=8 found with the exact nearest memories. Which verbs "
            "each library has: docs/comparison.md.",
            "deltamem bench compare", f"{__name__}:_compare",
        ),
        Benchmark(
            "store", "saving and loading a turn",
            "One turn's commit (the OSAM state of SmolLM2-135M with the default δ-mem config, plus a user and an "
            "assistant message) and one verified load, in the directory store (ext4, fsync on every commit) and in "
            "Redis (a local redis-server without persistence, over loopback TCP), with 1, 16 and 64 concurrent writers "
            "(threads of one process, each on its own sessions of 20 messages). `lock` is taking the session's lock "
            "(uncontended), `load` reading and verifying the session, `save` the commit; `turns_per_s` is all "
            "writers' turns over the wall time.",
            "deltamem bench store", f"{__name__}:_store",
        ),
        Benchmark(
            "serve", "the server under load",
            "`deltamem serve` (OpenAI-compatible, continuous batching across sessions) under `deltamem "
            "serve-loadtest`: first one client alone (`run` single), then concurrent clients, two per session, half "
            "of them streamed, on the same server. Every turn must be answered and committed exactly once (`lost` "
            "and `corrupted` count the others); latency p50/p95 per turn (request to last byte, waiting for the "
            "session's other client included), completion tokens/s, `vs_single` the load run's tokens/s over the "
            "single client's, `mean_batch_rows` turns per batched decode step, and the prefill work per turn "
            "(new tokens; context tokens re-fed: 0 for warm sessions). Goals (issue 23): at 32 clients / 16 "
            "sessions, tokens/s >= 4x the single client's, p95 <= 6 s per 16-token reply, 0 lost, 0 corrupted.",
            "deltamem serve-loadtest",
        ),
        Benchmark(
            "eval", "evaluation",
            "Answer quality of δ-mem, full replay, hybrid and RAG on the synthetic test split "
            "(deltamem_agents.eval), rendered from the evaluation's own report in docs/eval/.",
            "deltamem eval", report="../eval/synthetic-test.json",
        ),
    )
}
