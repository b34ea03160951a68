"""Benchmark: the text log (real embedded Chroma through `TextLog`) and the router, as the log grows.

At each size (1k, 10k, 100k logged entries) and for each layout of the log it measures p50/p95
latency of:

- ``add``: `TextLog.add_message` end to end (dedup lookup, embedding, Chroma upsert);
- ``add, vector given``: the same with the embedding precomputed, i.e. the log and Chroma alone;
- ``search``: `TextLog.search` of one session end to end (query embedding, Chroma query);
- ``search, vector given``: the same with the query vector precomputed, with its recall@k against
  the exact (brute-force) nearest entries of that session;
- ``embed one text``: the embedding model alone (all-MiniLM-L6-v2);
- ``router decide``: `MemoryRouter.decide` on the hits of a real search.

Layouts (where the entries of the log live; the measured session is always one of them):

- ``one-session``: one user, one session: the session searched is the whole log;
- ``many-sessions``: one user, 100 sessions: the session searched holds 1% of the log (searched
  in its own index: Chroma's metadata filter over the user's collection cost 124 ms at 100k);
- ``many-users``: 100 users of one session each: the user searched holds 1% of the log.

The log is filled in bulk (precomputed embeddings, 1000 entries per Chroma upsert, entries shaped
exactly like those `TextLog` writes: their metadata is copied from one entry it wrote, and they go
in through `TextLog.put_entries`, session indexes and all); every measured operation goes through
the public `TextLog` / `MemoryRouter` API. With ``embedded_fill``, only that many fill texts are
embedded and the rest of the log holds perturbed copies of their vectors (see `_with_copies`):
a million texts would take two hours to embed here; the measured adds and queries stay real.
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
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deltamem_agents.bench.conversation import COLOURS, FILLER, NAMES, PLACES, THINGS
from deltamem_agents.bench.report import Progress
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

USER, SESSION = "bench", "log"
#: layout name -> (users, sessions per user) the log's entries are spread over, round robin
LAYOUTS: dict[str, tuple[int, int]] = {"one-session": (1, 1), "many-sessions": (1, 100), "many-users": (100, 1)}


class RetrievalBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    samples: int = Field(100, ge=2, description="measured calls per operation and size")
    router_samples: int = Field(1000, ge=2)
    k: int = Field(8, ge=1, description="hits per search (what HybridMemory asks for)")
    fill_batch: int = Field(1000, ge=1, description="entries per bulk upsert while filling")
    embed_batch: int = Field(64, ge=1, description="texts per embedding forward while filling")
    threads: int | None = Field(None, description="torch threads while measuring (None: torch's default)")
    embedded_fill: int | None = Field(
        None, ge=1, description="embed at most this many fill texts; each entry past them gets a perturbed copy of "
        "an embedded vector (a million texts take ~2 h to embed on 2 CPUs); None: embed all")
    copy_noise: float = Field(0.6, gt=0, description="norm of the Gaussian noise added to a copied unit vector")
    layouts: tuple[str, ...] = Field(tuple(LAYOUTS), description=f"where the entries live: {', '.join(LAYOUTS)}")
    seed: int = 0

    @field_validator("layouts")
    @classmethod
    def _known_layouts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in LAYOUTS]
        if unknown or not value:
            raise ValueError(f"unknown layouts {unknown}: choose from {', '.join(LAYOUTS)}")
        return tuple(dict.fromkeys(value))


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


def _row(operation: str, ms: list[float]) -> dict[str, Any]:
    return {
        "operation": operation,
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _scope_of(index: int, users: int, sessions: int) -> tuple[str, str]:
    """The user and session of the ``index``-th filled entry: round robin, index 0 in the measured one."""
    user, session = index % users, (index // users) % sessions
    return (USER if user == 0 else f"{USER}-{user}"), (SESSION if session == 0 else f"{SESSION}-{session}")


def _fill(
    log: Any, texts: list[str], vectors: np.ndarray, start: int, template: dict[str, Any], batch: int,
    *, users: int = 1, sessions: int = 1,
) -> list[tuple[int, str]]:
    """Bulk-insert ``texts`` as entries shaped like ``template`` (metadata of an entry TextLog
    wrote), spread over ``users`` x ``sessions``; returns (offset into ``texts``, id) of those
    that went into the measured session."""
    from deltamem_agents.memory.textlog import LogHit, content_hash

    now = datetime.now(UTC).isoformat()
    measured: list[tuple[int, str]] = []
    for lo in range(0, len(texts), batch):
        by_user: dict[str, tuple[list[str], list[dict[str, Any]], list[int]]] = {}
        for offset in range(lo, min(lo + batch, len(texts))):
            turn = start + offset
            user, session = _scope_of(turn, users, sessions)
            role = "user" if turn % 2 == 0 else "assistant"
            digest = content_hash(user, session, role, texts[offset])
            ids, metadatas, rows = by_user.setdefault(user, ([], [], []))
            ids.append(f"{digest[:32]}-0")
            metadatas.append({**template, "user_id": user, "session_id": session, "role": role, "turn": turn // 2,
                              "content_hash": digest, "memory_id": digest[:32], "timestamp": now})
            rows.append(offset)
            if (user, session) == (USER, SESSION):
                measured.append((offset, ids[-1]))
        for user, (ids, metadatas, rows) in by_user.items():
            entries = [LogHit(id=i, text=texts[r], metadata=m) for i, r, m in zip(ids, rows, metadatas)]
            log.put_entries(entries, vectors=vectors[rows])  # through the log: its session indexes too
    return measured


def _with_copies(embedded: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """``count`` unit vectors: the embedded ones, then perturbed copies of them in turn (each
    its base plus Gaussian noise of norm ``noise``, renormalised), so a log larger than what
    can be embedded still has the neighbourhood structure of real embeddings."""
    if count <= len(embedded):
        return embedded[:count]
    rng = np.random.default_rng(seed)
    out = np.empty((count, embedded.shape[1]), dtype=np.float32)
    out[: len(embedded)] = embedded
    for lo in range(len(embedded), count, 65536):
        hi = min(lo + 65536, count)
        base = embedded[np.arange(lo, hi) % len(embedded)]
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        step = rng.standard_normal(base.shape).astype(np.float32)
        step *= noise / np.linalg.norm(step, axis=1, keepdims=True)
        moved = base + step
        out[lo:hi] = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    return out


def _recall_at_k(found: list[list[str]], exact: list[list[str]]) -> float:
    return round(statistics.fmean(len(set(f) & set(e)) / max(len(e), 1) for f, e in zip(found, exact)), 4)


def _exact_top_k(scope_vectors: np.ndarray, scope_ids: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    """The ``k`` nearest ids by cosine distance over every entry of the measured session."""
    unit = scope_vectors / np.linalg.norm(scope_vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    order = np.argsort(-(q @ unit.T), axis=1, kind="stable")[:, :k]
    return [[scope_ids[i] for i in row] for row in order]


def run_retrieval_bench(
    out_dir: Path, config: RetrievalBenchConfig | None = None, *, progress: bool = False
) -> list[dict[str, Any]]:
    """Add/search/embedding/router latencies at each log size and layout; writes retrieval.json/md/png."""
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
    n = config.samples
    try:
        real = MiniLMEmbeddingFunction(batch_size=config.embed_batch)
        per_layout = len(sizes) * 2 * n  # new texts for the measured adds
        texts = _texts(sizes[-1] + len(config.layouts) * per_layout, config.seed)
        fill_texts = texts[: sizes[-1]]
        queries = _queries(n, config.seed)
        embedded = min(config.embedded_fill or sizes[-1], sizes[-1])
        # the fill texts that are embedded, then the measured adds' texts and the queries
        to_embed = fill_texts[:embedded] + texts[sizes[-1] :] + queries
        with Progress(progress, len(to_embed), "embedding the fill texts") as bar:
            vectors = []
            embed_started = time.perf_counter()
            for lo in range(0, len(to_embed), 1024):
                vectors.append(real.encode(to_embed[lo : lo + 1024]))
                bar.advance(len(vectors[-1]))
            embed_s = time.perf_counter() - embed_started
            all_vectors = np.concatenate(vectors)
            table = dict(zip(to_embed, all_vectors))
            fill_vectors = _with_copies(all_vectors[:embedded], sizes[-1], config.copy_noise, config.seed)
            query_vectors = all_vectors[len(to_embed) - len(queries) :]
            bar.reset(len(config.layouts) * (sizes[-1] + len(sizes) * 4 * n) + len(sizes) * (n + config.router_samples),
                      "filling and measuring")
            with tempfile.TemporaryDirectory(prefix="deltamem-retrieval-") as tmp:
                client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
                for index, layout in enumerate(config.layouts):
                    add_texts = texts[sizes[-1] + index * per_layout : sizes[-1] + (index + 1) * per_layout]
                    rows += _measure_layout(
                        layout, TextLogConfig(path=Path(tmp), collection=f"bench-{layout}"), client,
                        given_ef=_Precomputed(real, table), real=real, router=MemoryRouter(), router_input=RouterInput,
                        message=lambda text: ChatMessage(role="user", content=text), text_log=TextLog,
                        sizes=sizes, fill_texts=fill_texts, fill_vectors=fill_vectors, add_texts=add_texts,
                        add_vectors=np.array([table[t] for t in add_texts]), queries=queries,
                        query_vectors=query_vectors, config=config, bar=bar, first=index == 0,
                    )
                if hasattr(client, "close"):
                    client.close()
    finally:
        torch.set_num_threads(previous_threads)
    meta = {
        "benchmark": "retrieval",
        "params": config.model_dump(),
        "device": "cpu",
        "machine": machine_info("cpu"),
        "wall_s": round(time.perf_counter() - started_all, 1),
        "fill": {"embed_texts_per_s": round(len(to_embed) / embed_s, 1), "entries": sizes[-1],
                 "embedded_entries": embedded, "copied_entries": sizes[-1] - embedded},
        "summary": {"headline": _headline(rows)},
        "plots": ["retrieval.png"],
    }
    write_report("retrieval", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("retrieval", {"meta": meta, "rows": rows}, Path(out_dir) / "retrieval.png")
    return rows


def _measure_layout(
    layout: str, log_config: Any, client: Any, *, given_ef: Any, real: Any, router: Any, router_input: Any,
    message: Callable[[str], Any], text_log: Any, sizes: list[int], fill_texts: list[str], fill_vectors: np.ndarray,
    add_texts: list[str], add_vectors: np.ndarray, queries: list[str], query_vectors: np.ndarray,
    config: RetrievalBenchConfig, bar: Progress, first: bool,
) -> list[dict[str, Any]]:
    """Fill one layout's log size by size and measure each operation at each size."""
    users, sessions = LAYOUTS[layout]
    n = config.samples
    given = text_log(log_config, client=client, embedding_function=given_ef)
    full = text_log(log_config, client=client, embedding_function=real)
    # one entry written by TextLog itself: the shape of every bulk-filled entry
    first_ids = given.add_message(message(fill_texts[0]), user_id=USER, session_id=SESSION, turn=0)
    template = given.get(first_ids)[0].metadata
    scope_ids, scope_vectors = list(first_ids), [fill_vectors[0]]
    filled, rows = 1, []
    for index, size in enumerate(sizes):
        offsets = _fill(given, fill_texts[filled:size], fill_vectors[filled:size], filled, template, config.fill_batch,
                        users=users, sessions=sessions)
        for offset, entry_id in offsets:
            scope_ids.append(entry_id)
            scope_vectors.append(fill_vectors[filled + offset])
        bar.advance(size - filled)
        bar.note(f"{layout}: log filled to {size:,} entries; measuring")
        filled = size
        adds = list(range(index * 2 * n, (index + 1) * 2 * n))

        def add(log: Any, i: int) -> None:
            scope_ids.extend(log.add_message(message(add_texts[i]), user_id=USER, session_id=SESSION, turn=0))
            scope_vectors.append(add_vectors[i])

        add_given = _latencies(lambda i: add(given, i), adds[:n])
        add_full = _latencies(lambda i: add(full, i), adds[n:])
        bar.advance(2 * n)
        # what the log holds when it is searched (the measured adds included)
        scoped = {"layout": layout, "entries": given.count(), "session_entries": len(scope_ids)}
        rows.append(scoped | _row("add, vector given", add_given))
        rows.append(scoped | _row("add", add_full))
        hits: list[Any] = []
        given_ms = _latencies(lambda q: hits.append(given.search(q, user_id=USER, session_id=SESSION, k=config.k)), queries)
        exact = _exact_top_k(np.array(scope_vectors), scope_ids, query_vectors, config.k)
        recall = _recall_at_k([[h.id for h in found] for found in hits], exact)
        rows.append(scoped | _row("search, vector given", given_ms) | {"recall_at_k": recall})
        rows.append(scoped | _row("search", _latencies(
            lambda q: full.search(q, user_id=USER, session_id=SESSION, k=config.k), queries)))
        bar.advance(2 * n)
        if first:  # neither depends on the layout
            rows.append(scoped | _row("embed one text", _latencies(lambda q: real([q]), queries)))
            inputs = [router_input(query=q, hits=h, state_confidence=0.3) for q, h in zip(queries, hits)]
            rows.append(scoped | _row("router decide", _latencies(
                router.decide, [inputs[i % len(inputs)] for i in range(config.router_samples)])))
            bar.advance(n + config.router_samples)
    return rows


def _headline(rows: list[dict[str, Any]]) -> str:
    largest = max(r["entries"] for r in rows)
    by = {(r["layout"], r["operation"]): r for r in rows if r["entries"] == largest}
    parts = []
    for layout in dict.fromkeys(r["layout"] for r in rows):
        search = by.get((layout, "search, vector given"))
        if search:
            parts.append(f"{layout} {search['p50_ms']:g} ms (recall@k {search['recall_at_k']:g})")
    first = next(iter(dict.fromkeys(r["layout"] for r in rows)))
    return (
        f"at ~{largest:,} entries: search p50 with the vector given, by layout: {'; '.join(parts)}; end to end "
        f"({first}) {by[(first, 'search')]['p50_ms']:g} ms; add p50 {by[(first, 'add')]['p50_ms']:g} ms "
        f"({by[(first, 'add, vector given')]['p50_ms']:g} ms with the vector given); router decision p50 "
        f"{by[(first, 'router decide')]['p50_ms']:g} ms"
    )
