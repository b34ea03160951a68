"""Benchmark: the text log under deltamem's memory verbs beside the stores other memory libraries
use, at the same sizes, on the same vectors.

Each system holds N memories of one user and answers ``add`` (one new memory) and ``search`` (the
user's ``k`` nearest to a query), p50/p95 over the same texts and queries. Every system gets the
same all-MiniLM-L6-v2 vectors, computed once beforehand, so what is measured is the store and the
library around it, not the embedding model (``deltamem bench retrieval`` measures that apart):

- ``deltamem``: `TextLog` (embedded Chroma, the user's own collection): what `HybridMemory.add`
  and ``search`` do to the log. The δ-state write of ``add`` (a model forward pass) is left out.
- ``langgraph``: LangGraph's `InMemoryStore` with a vector index (``put`` / ``search``).
- ``llamaindex``: LlamaIndex's `SimpleVectorStore`, the default store of its vector memory
  block, queried with a ``user_id`` metadata filter.
- ``mem0``: mem0's `Memory` (``add(..., infer=False)``, ``search(filters={"user_id": ...})``) on
  its default local Qdrant store; it needs protobuf < 7, so it runs in another venv
  (``mem0_python``, see `compare_mem0_worker`) and is left out when none is given.

``recall_at_k`` compares each search with the exact nearest memories (brute force).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.bench.report import Progress
from deltamem_agents.bench.retrieval import (
    SESSION,
    USER,
    _exact_top_k,
    _fill,
    _latencies,
    _Precomputed,
    _queries,
    _recall_at_k,
    _row,
    _texts,
)
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

SYSTEMS = ("deltamem", "langgraph", "llamaindex", "mem0")


class CompareBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: tuple[int, ...] = (1_000, 100_000)
    samples: int = Field(50, ge=2, description="measured adds and searches per system and size")
    k: int = Field(8, ge=1)
    mem0_python: Path | None = Field(None, description="python of a venv with mem0ai (None: mem0 is not measured)")
    systems: tuple[str, ...] = SYSTEMS
    seed: int = 0


class _System:
    """One memory store, filled in bulk and measured through its public add/search."""

    name = ""

    def fill(self, texts: list[str], vectors: np.ndarray, start: int) -> None:
        raise NotImplementedError

    def add(self, text: str) -> str:
        raise NotImplementedError

    def search(self, query: str, k: int) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the store holds (files, clients)."""


class _DeltaMem(_System):
    name = "deltamem"

    def __init__(self, embed: Any, tmp: Path) -> None:
        import chromadb
        from chromadb.config import Settings

        from deltamem_agents.memory import TextLog, TextLogConfig
        from deltamem_agents.store.records import ChatMessage

        self.client = chromadb.PersistentClient(path=str(tmp), settings=Settings(anonymized_telemetry=False))
        self.log = TextLog(TextLogConfig(path=tmp), client=self.client, embedding_function=embed)
        self.message, self.template, self.ids = ChatMessage, None, []

    def fill(self, texts: list[str], vectors: np.ndarray, start: int) -> None:
        if self.template is None:  # one entry written by TextLog: the shape of the bulk-filled ones
            self.ids += self.log.add_message(self.message(role="user", content=texts[0]), user_id=USER,
                                             session_id=SESSION, turn=0)
            self.template = self.log.get(self.ids, user_id=USER)[0].metadata
            texts, vectors, start = texts[1:], vectors[1:], start + 1
        self.ids += [entry_id for _, entry_id in _fill(self.log, texts, vectors, start, self.template, 1000)]

    def add(self, text: str) -> str:
        return self.log.add_message(self.message(role="user", content=text), user_id=USER, session_id=SESSION, turn=0)[0]

    def search(self, query: str, k: int) -> list[str]:
        return [h.id for h in self.log.search(query, user_id=USER, k=k)]

    def close(self) -> None:
        if hasattr(self.client, "close"):
            self.client.close()


class _LangGraph(_System):
    name = "langgraph"
    namespace = (USER, "memories")

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        from langgraph.store.memory import InMemoryStore

        dims = len(next(iter(table.values())))
        self.store = InMemoryStore(index={"dims": dims, "embed": lambda texts: [table[t].tolist() for t in texts],
                                          "fields": ["text"]})
        self.count = 0

    def fill(self, texts: list[str], vectors: np.ndarray, start: int) -> None:
        from langgraph.store.base import PutOp

        for lo in range(0, len(texts), 1000):
            self.store.batch([PutOp(self.namespace, f"m{start + lo + i}", {"text": t})
                              for i, t in enumerate(texts[lo : lo + 1000])])

    def add(self, text: str) -> str:
        self.count += 1
        key = f"added-{self.count}"
        self.store.put(self.namespace, key, {"text": text})
        return key

    def search(self, query: str, k: int) -> list[str]:
        return [item.key for item in self.store.search(self.namespace, query=query, limit=k)]


class _LlamaIndex(_System):
    name = "llamaindex"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        from llama_index.core.vector_stores import SimpleVectorStore

        self.table, self.store, self.count = table, SimpleVectorStore(), 0

    def _node(self, node_id: str, text: str, vector: np.ndarray) -> Any:
        from llama_index.core.schema import TextNode

        return TextNode(id_=node_id, text=text, embedding=vector.tolist(), metadata={"user_id": USER})

    def fill(self, texts: list[str], vectors: np.ndarray, start: int) -> None:
        self.store.add([self._node(f"m{start + i}", t, v) for i, (t, v) in enumerate(zip(texts, vectors))])

    def add(self, text: str) -> str:
        self.count += 1
        node_id = f"added-{self.count}"
        self.store.add([self._node(node_id, text, self.table[text])])
        return node_id

    def search(self, query: str, k: int) -> list[str]:
        from llama_index.core.vector_stores.types import (
            MetadataFilter,
            MetadataFilters,
            VectorStoreQuery,
        )

        found = self.store.query(VectorStoreQuery(
            query_embedding=self.table[query].tolist(), similarity_top_k=k,
            filters=MetadataFilters(filters=[MetadataFilter(key="user_id", value=USER)])))
        return list(found.ids or [])


def _measure(
    system: _System, sizes: list[int], texts: list[str], vectors: np.ndarray, adds: list[str], add_vectors: np.ndarray,
    queries: list[str], query_vectors: np.ndarray, k: int, bar: Progress,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    filled, fill_ids, add_ids = 0, [f"m{i}" for i in range(sizes[-1])], []
    per_size = len(adds) // len(sizes)
    for index, size in enumerate(sizes):
        system.fill(texts[filled:size], vectors[filled:size], filled)
        bar.advance(size - filled)
        filled = size
        if isinstance(system, _DeltaMem):
            fill_ids = system.ids
        added = _latencies(lambda t: add_ids.append(system.add(t)), adds[index * per_size : (index + 1) * per_size])
        hits: list[list[str]] = []
        searched = _latencies(lambda q: hits.append(system.search(q, k)), queries)
        stored = np.concatenate([vectors[:size], add_vectors[: len(add_ids)]])
        exact = _exact_top_k(stored, fill_ids[:size] + add_ids, query_vectors, k)
        scope = {"system": system.name, "entries": size + len(add_ids)}
        rows.append(scope | _row("add", added))
        rows.append(scope | _row("search", searched) | {"recall_at_k": _recall_at_k(hits, exact)})
        bar.advance(len(queries))
    return rows


def _mem0_rows(python: Path, payload: dict[str, Any], tmp: Path) -> tuple[list[dict[str, Any]], str]:
    source, target = tmp / "mem0-input.npz", tmp / "mem0-rows.json"
    np.savez(source, **payload)
    worker = Path(__file__).with_name("compare_mem0_worker.py")
    done = subprocess.run([str(python), str(worker), str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the mem0 worker ({python}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(target.read_text())
    return result["rows"], result["version"]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("chromadb", "langgraph", "llama-index-core"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def run_compare_bench(
    out_dir: Path, config: CompareBenchConfig | None = None, *, progress: bool = False
) -> list[dict[str, Any]]:
    """Add/search latency and recall of each system at each size; writes compare.json/md."""
    from deltamem_agents.memory.embeddings import MiniLMEmbeddingFunction

    config = config or CompareBenchConfig()
    sizes = sorted(set(config.sizes))
    systems = [s for s in config.systems if s != "mem0" or config.mem0_python is not None]
    started = time.perf_counter()
    real = MiniLMEmbeddingFunction()
    n = config.samples
    texts = _texts(sizes[-1] + len(sizes) * n, config.seed)
    fill_texts, adds = texts[: sizes[-1]], texts[sizes[-1] :]
    queries = _queries(n, config.seed)
    rows: list[dict[str, Any]] = []
    versions = _versions()
    with Progress(progress, len(texts) + len(queries), "embedding the texts once, for every system") as bar:
        vectors = np.concatenate([real.encode((texts + queries)[lo : lo + 1024])
                                  for lo in range(0, len(texts) + len(queries), 1024)])
        table = dict(zip(texts + queries, vectors))
        fill_vectors, add_vectors, query_vectors = vectors[: sizes[-1]], vectors[sizes[-1] : len(texts)], vectors[len(texts) :]
        bar.reset(len(systems) * (sizes[-1] + len(sizes) * n), "filling and measuring")
        with tempfile.TemporaryDirectory(prefix="deltamem-compare-") as tmp_dir:
            tmp = Path(tmp_dir)
            makers: dict[str, Callable[[], _System]] = {
                "deltamem": lambda: _DeltaMem(_Precomputed(real, table), tmp / "chroma"),
                "langgraph": lambda: _LangGraph(table),
                "llamaindex": lambda: _LlamaIndex(table),
            }
            for name in systems:
                bar.note(f"{name}")
                if name == "mem0":
                    assert config.mem0_python is not None
                    mem0_rows, versions["mem0ai"] = _mem0_rows(config.mem0_python, {
                        "texts": np.array(fill_texts), "vectors": fill_vectors, "queries": np.array(queries),
                        "query_vectors": query_vectors, "adds": np.array(adds), "add_vectors": add_vectors,
                        "sizes": np.array(sizes), "k": np.array(config.k)}, tmp)
                    rows += mem0_rows
                    bar.advance(sizes[-1] + len(sizes) * n)
                    continue
                system = makers[name]()
                try:
                    rows += _measure(system, sizes, fill_texts, fill_vectors, adds, add_vectors, queries,
                                     query_vectors, config.k, bar)
                finally:
                    system.close()
    largest = max(r["entries"] for r in rows)
    searches = {r["system"]: r for r in rows if r["operation"] == "search" and r["entries"] == largest}
    meta = {
        "benchmark": "compare",
        "params": config.model_dump(mode="json"),
        "device": "cpu",
        "machine": machine_info("cpu"),
        "versions": versions | {"python": sys.version.split()[0]},
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": {"headline": f"search p50 at ~{largest:,} memories: " + "; ".join(
            f"{s} {r['p50_ms']:g} ms (recall@k {r['recall_at_k']:g})" for s, r in searches.items())},
    }
    write_report("compare", rows, Path(out_dir), meta)
    return rows
