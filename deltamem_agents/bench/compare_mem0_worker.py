"""The mem0 half of `deltamem bench compare`, run by the Python of a venv that has ``mem0ai``.

mem0 2.x needs protobuf < 7 and an OpenAI client, which the project's own venv does not hold, so
this file imports nothing from deltamem_agents: it reads the texts and vectors the parent process
embedded (an ``.npz``), measures mem0's ``Memory`` on its default local Qdrant store with the
embedder replaced by a lookup of those vectors (``infer=False``: no LLM is called), and prints one
JSON object of rows. Usage: ``python compare_mem0_worker.py INPUT.npz OUTPUT.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

import numpy as np

USER = "bench"


class LookupEmbedder:
    """mem0's embedder protocol (``embed(text, memory_action)``), answered from precomputed vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        return self.table[text].tolist()


def latencies(fn, inputs) -> list[float]:
    out = []
    for item in inputs:
        started = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def row(entries: int, operation: str, ms: list[float], **extra) -> dict:
    return {"system": "mem0", "entries": entries, "operation": operation, "n": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(statistics.fmean(ms), 3), **extra}


def main(source: str, target: str) -> None:
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    os.environ.setdefault("OPENAI_API_KEY", "unused: infer=False never calls the LLM")
    import mem0
    from mem0 import Memory

    data = np.load(source, allow_pickle=False)
    texts, vectors = [str(t) for t in data["texts"]], data["vectors"]
    queries, query_vectors = [str(q) for q in data["queries"]], data["query_vectors"]
    adds, add_vectors = [str(t) for t in data["adds"]], data["add_vectors"]
    sizes, k = [int(s) for s in data["sizes"]], int(data["k"])
    table = dict(zip(texts + adds + queries, np.concatenate([vectors, add_vectors, query_vectors])))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="deltamem-compare-mem0-") as tmp:
        memory = Memory.from_config({
            "vector_store": {"provider": "qdrant", "config": {
                "collection_name": "bench", "path": os.path.join(tmp, "qdrant"), "embedding_model_dims": vectors.shape[1],
                "on_disk": True}},
            "history_db_path": os.path.join(tmp, "history.db"),
        })
        memory.embedding_model = LookupEmbedder(table)
        filled, fill_ids, add_ids = 0, [], []
        per_size = len(adds) // len(sizes)
        for index, size in enumerate(sizes):
            for lo in range(filled, size, 1000):  # bulk fill: payloads shaped as Memory._create_memory writes them
                part = range(lo, min(lo + 1000, size))
                now = datetime.now(UTC).isoformat()
                batch_ids = [str(uuid.uuid4()) for _ in part]
                memory.vector_store.insert(
                    vectors=[vectors[i].tolist() for i in part], ids=batch_ids,
                    payloads=[{"data": texts[i], "hash": hashlib.md5(texts[i].encode()).hexdigest(), "user_id": USER,
                               "role": "user", "created_at": now, "updated_at": now} for i in part])
                fill_ids += batch_ids
            filled = size
            mine = adds[index * per_size:(index + 1) * per_size]
            added = latencies(
                lambda t: add_ids.extend(m["id"] for m in memory.add(t, user_id=USER, infer=False)["results"]), mine)
            stored_vectors = np.concatenate([vectors[:size], add_vectors[:(index + 1) * per_size]])
            stored_ids = fill_ids + add_ids
            hits: list[list[str]] = []
            searched = latencies(lambda q: hits.append([r["id"] for r in memory.search(
                q, filters={"user_id": USER}, top_k=k)["results"]]), queries)
            exact = np.argsort(-(query_vectors @ stored_vectors.T), axis=1, kind="stable")[:, :k]
            recall = statistics.fmean(len(set(h) & {stored_ids[i] for i in e}) / k for h, e in zip(hits, exact))
            entries = size + (index + 1) * per_size
            rows.append(row(entries, "add", added))
            rows.append(row(entries, "search", searched, recall_at_k=round(recall, 4)))
    with open(target, "w") as out:
        json.dump({"version": mem0.__version__ if hasattr(mem0, "__version__") else "unknown", "rows": rows}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
