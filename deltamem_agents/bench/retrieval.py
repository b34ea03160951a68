"""Benchmark: the text log (real embedded Chroma through `TextLog`) and the router, as the log grows.

At each size (1k, 10k, 100k logged entries) it measures p50/p95 latency of:

- ``add``: `TextLog.add_message` end to end (dedup lookup, embedding, Chroma upsert);
- ``add, vector given``: the same with the embedding precomputed, i.e. the log and Chroma alone;
- ``search``: `TextLog.search` end to end (query embedding, filtered HNSW query);
- ``search, vector given``: the same with the query vector precomputed;
- ``embed one text``: the embedding model alone (all-MiniLM-L6-v2);
- ``router decide``: `MemoryRouter.decide` on the hits of a real search.

The log is filled in bulk (precomputed embeddings, 1000 entries per Chroma upsert, entries shaped
exactly like those `TextLog` writes: their metadata is copied from one entry it wrote); every
measured operation goes through the public `TextLog` / `MemoryRouter` API.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.bench.conversation import COLOURS, FILLER, NAMES, PLACES, THINGS
from deltamem_agents.bench.report import Progress
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

USER, SESSION = "bench", "log"


class RetrievalBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    samples: int = Field(100, ge=2, description="measured calls per operation and size")
    router_samples: int = Field(1000, ge=2)
    k: int = Field(8, ge=1, description="hits per search (what HybridMemory asks for)")
    fill_batch: int = Field(1000, ge=1, description="entries per bulk upsert while filling")
    embed_batch: int = Field(64, ge=1, description="texts per embedding forward while filling")
    threads: int | None = Field(None, description="torch threads while measuring (None: torch's default)")
    seed: int = 0


def _texts(count: int, seed: int) -> list[str]:
    """``count`` distinct chat-like messages."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name, colour, thing, place = rng.choice(NAMES), rng.choice(COLOURS), rng.choice(THINGS), rng.choice(PLACES)
        out.append(f"Note {i + 1}: {name} left the {colour} {thing} {place}; code {rng.randrange(1000, 9999)}. {rng.choice(FILLER)}")
    return out


def _queries(count: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    return [
        f"Where did {rng.choice(NAMES)} leave the {rng.choice(COLOURS)} {rng.choice(THINGS)}, exactly?" for _ in range(count)
    ]


class _Precomputed:
    """An embedding function that returns vectors computed beforehand (same name as the real
    model, so the collection accepts it): what is left is the log and Chroma."""

    def __init__(self, real: Any, vectors: dict[str, np.ndarray]) -> None:
        self.real, self.vectors = real, vectors

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002 - Chroma's protocol name
        return [self.vectors[text] for text in input]

    embed_query = __call__

    def name(self) -> str:
        return self.real.name()

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)


def _latencies(fn: Callable[[Any], Any], inputs: Sequence[Any]) -> list[float]:
    out = []
    for item in inputs:
        started = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def _row(entries: int, operation: str, ms: list[float]) -> dict[str, Any]:
    return {
        "entries": entries,
        "operation": operation,
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _fill(log: Any, texts: list[str], vectors: np.ndarray, start: int, template: dict[str, Any], batch: int) -> None:
    """Bulk-insert ``texts`` as entries shaped like ``template`` (metadata of an entry TextLog wrote)."""
    from deltamem_agents.memory.textlog import content_hash

    now = datetime.now(UTC).isoformat()
    for lo in range(0, len(texts), batch):
        part = texts[lo : lo + batch]
        ids, metadatas = [], []
        for offset, text in enumerate(part):
            turn = start + lo + offset
            role = "user" if turn % 2 == 0 else "assistant"
            digest = content_hash(USER, SESSION, role, text)
            ids.append(f"{digest[:32]}-0")
            metadatas.append({**template, "role": role, "turn": turn // 2, "content_hash": digest, "timestamp": now})
        log.collection.upsert(ids=ids, documents=part, metadatas=metadatas, embeddings=vectors[lo : lo + batch])


def run_retrieval_bench(
    out_dir: Path, config: RetrievalBenchConfig | None = None, *, progress: bool = False
) -> list[dict[str, Any]]:
    """Add/search/embedding/router latencies at each log size; writes retrieval.json/md/png."""
    import chromadb
    from chromadb.config import Settings

    from deltamem_agents.memory import TextLog, TextLogConfig
    from deltamem_agents.memory.embeddings import MiniLMEmbeddingFunction
    from deltamem_agents.memory.routing import MemoryRouter, RouterInput
    from deltamem_agents.store.records import ChatMessage

    config = config or RetrievalBenchConfig()
    sizes = sorted(set(config.sizes))
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    started_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        real = MiniLMEmbeddingFunction(batch_size=config.embed_batch)
        n = config.samples
        measured = len(sizes) * 2 * n  # new texts for the measured adds
        texts = _texts(sizes[-1] + measured, config.seed)
        fill_texts, add_texts = texts[: sizes[-1]], texts[sizes[-1] :]
        queries = _queries(n, config.seed)
        with Progress(progress, len(texts) + len(queries), "embedding the fill texts") as bar:
            vectors = []
            embed_started = time.perf_counter()
            for lo in range(0, len(texts) + len(queries), 1024):
                vectors.append(real.encode((texts + queries)[lo : lo + 1024]))
                bar.advance(len(vectors[-1]))
            embed_s = time.perf_counter() - embed_started
            all_vectors = np.concatenate(vectors)
            table = dict(zip(texts + queries, all_vectors))
            fill_vectors = all_vectors[: sizes[-1]]
            with tempfile.TemporaryDirectory(prefix="deltamem-retrieval-") as tmp:
                client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
                given = TextLog(TextLogConfig(path=Path(tmp)), client=client, embedding_function=_Precomputed(real, table))
                full = TextLog(TextLogConfig(path=Path(tmp)), client=client, embedding_function=real)
                router = MemoryRouter()
                # one entry written by TextLog itself: the shape of every bulk-filled entry
                first = given.add_message(ChatMessage(role="user", content=fill_texts[0]), user_id=USER, session_id=SESSION, turn=0)
                template = given.get(first)[0].metadata
                filled = 1
                bar.reset(sizes[-1] + len(sizes) * (4 * n + config.router_samples), "filling and measuring")
                for index, size in enumerate(sizes):
                    _fill(given, fill_texts[filled:size], fill_vectors[filled:size], filled, template, config.fill_batch)
                    bar.advance(size - filled)
                    bar.note(f"log filled to {size:,} entries; measuring")
                    filled = size
                    entries = given.count()
                    adds = add_texts[index * 2 * n : (index + 1) * 2 * n]
                    message = lambda text: ChatMessage(role="user", content=text)  # noqa: E731
                    rows.append(_row(entries, "add, vector given", _latencies(
                        lambda t: given.add_message(message(t), user_id=USER, session_id=SESSION, turn=0), adds[:n])))
                    rows.append(_row(entries, "add", _latencies(
                        lambda t: full.add_message(message(t), user_id=USER, session_id=SESSION, turn=0), adds[n:])))
                    bar.advance(2 * n)
                    hits: list[Any] = []
                    rows.append(_row(entries, "search, vector given", _latencies(
                        lambda q: hits.append(given.search(q, user_id=USER, session_id=SESSION, k=config.k)), queries)))
                    rows.append(_row(entries, "search", _latencies(
                        lambda q: full.search(q, user_id=USER, session_id=SESSION, k=config.k), queries)))
                    rows.append(_row(entries, "embed one text", _latencies(lambda q: real([q]), queries)))
                    bar.advance(2 * n)
                    inputs = [RouterInput(query=q, hits=h, state_confidence=0.3) for q, h in zip(queries, hits)]
                    rows.append(_row(entries, "router decide", _latencies(
                        router.decide, [inputs[i % len(inputs)] for i in range(config.router_samples)])))
                    bar.advance(config.router_samples)
                if hasattr(client, "close"):
                    client.close()
    finally:
        torch.set_num_threads(previous_threads)
    by = {(r["entries"], r["operation"]): r for r in rows}
    largest = max(r["entries"] for r in rows)
    meta = {
        "benchmark": "retrieval",
        "params": config.model_dump(),
        "device": "cpu",
        "machine": machine_info("cpu"),
        "wall_s": round(time.perf_counter() - started_all, 1),
        "fill": {"embed_texts_per_s": round((len(texts) + len(queries)) / embed_s, 1), "entries": largest},
        "summary": {
            "headline": (
                f"at {largest:,} entries: search p50 {by[(largest, 'search')]['p50_ms']:g} ms "
                f"({by[(largest, 'search, vector given')]['p50_ms']:g} ms of it Chroma and the log), add p50 "
                f"{by[(largest, 'add')]['p50_ms']:g} ms ({by[(largest, 'add, vector given')]['p50_ms']:g} ms with "
                f"the vector given), router decision p50 {by[(largest, 'router decide')]['p50_ms']:g} ms"
            ),
        },
        "plots": ["retrieval.png"],
    }
    write_report("retrieval", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("retrieval", {"meta": meta, "rows": rows}, Path(out_dir) / "retrieval.png")
    return rows
