"""`deltamem bench retrieval` with tiny log sizes: real Chroma, real MiniLM, every operation reported."""

from __future__ import annotations

import json

import chromadb
import numpy as np
from chromadb.config import Settings

from deltamem_agents.bench.retrieval import (
    SESSION,
    USER,
    RetrievalBenchConfig,
    _fill,
    _texts,
    run_retrieval_bench,
)
from deltamem_agents.memory import TextLog
from deltamem_agents.memory.embeddings import EMBEDDING_DIM, MiniLMEmbeddingFunction
from deltamem_agents.store.records import ChatMessage

OPERATIONS = ["add, vector given", "add", "search, vector given", "search", "embed one text", "router decide"]


def test_every_operation_is_measured_at_every_log_size(tmp_path):
    config = RetrievalBenchConfig(sizes=(20, 60), samples=3, router_samples=5, fill_batch=16)
    rows = run_retrieval_bench(tmp_path, config)
    assert [(r["entries"], r["operation"]) for r in rows] == [(20, op) for op in OPERATIONS] + [(66, op) for op in OPERATIONS]
    assert all(r["n"] == (5 if r["operation"] == "router decide" else 3) for r in rows)
    assert all(0 <= r["p50_ms"] <= r["p95_ms"] for r in rows)
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert report["meta"]["summary"]["headline"].startswith("at 66 entries")
    assert (tmp_path / "retrieval.png").stat().st_size > 0


def test_bulk_filled_entries_have_the_shape_textlog_writes(tmp_path):
    log = TextLog(client=chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False)),
                  embedding_function=MiniLMEmbeddingFunction())
    first = log.add_message(ChatMessage(role="user", content="Hello."), user_id=USER, session_id=SESSION, turn=0)
    template = log.get(first)[0].metadata
    texts = _texts(5, seed=3)
    _fill(log, texts, np.random.default_rng(0).normal(size=(5, EMBEDDING_DIM)).astype(np.float32), 1, template, 2)
    entries = log.list(user_id=USER, session_id=SESSION)
    assert len(entries) == 6 and {e.text for e in entries[1:]} <= set(texts) | {"Hello."}
    assert all(e.metadata.keys() == template.keys() for e in entries)
    # adding a filled text again through TextLog finds it (same content hash, no duplicate)
    role = entries[-1].metadata["role"]
    again = log.add_message(ChatMessage(role=role, content=entries[-1].text), user_id=USER, session_id=SESSION, turn=9)
    assert again == [entries[-1].id] and log.count() == 6
