"""`deltamem bench retrieval` with tiny log sizes: real Chroma, real MiniLM, every operation reported."""

from __future__ import annotations

import json

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from deltamem_agents.bench.retrieval import (
    LAYOUTS,
    SESSION,
    USER,
    RetrievalBenchConfig,
    _fill,
    _scope_of,
    _texts,
    run_retrieval_bench,
)
from deltamem_agents.memory import TextLog
from deltamem_agents.memory.embeddings import EMBEDDING_DIM, MiniLMEmbeddingFunction
from deltamem_agents.store.records import ChatMessage

OPERATIONS = ["add, vector given", "add", "search, vector given", "search"]
ONCE = ["embed one text", "router decide"]  # measured in the first layout only: they do not depend on it


def test_every_operation_is_measured_at_every_log_size_and_layout(tmp_path):
    config = RetrievalBenchConfig(sizes=(20, 60), samples=3, router_samples=5, fill_batch=16)
    rows = run_retrieval_bench(tmp_path, config)
    expected = [(layout, size, op) for layout in LAYOUTS for size in (20, 60)
                for op in OPERATIONS + (ONCE if layout == "one-session" else [])]
    assert [(r["layout"], r["entries"], r["operation"]) for r in rows] == [
        (layout, 26 if size == 20 else 72, op) for layout, size, op in expected]  # 6 + 6 measured adds
    assert all(r["n"] == (5 if r["operation"] == "router decide" else 3) for r in rows)
    assert all(0 <= r["p50_ms"] <= r["p95_ms"] for r in rows)
    # the measured session: the whole log in one-session, about 1% of it in the other layouts (+ the adds)
    by = {(r["layout"], r["entries"], r["operation"]): r for r in rows}
    assert by[("one-session", 72, "search")]["session_entries"] == 72
    assert by[("many-users", 72, "search")]["session_entries"] == 1 + 12
    searches = [r for r in rows if r["operation"] == "search, vector given"]
    assert all(r["recall_at_k"] == 1.0 for r in searches)  # at these sizes Chroma's answer is exact
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert report["meta"]["summary"]["headline"].startswith("at ~72 entries")
    assert (tmp_path / "retrieval.png").stat().st_size > 0


def test_unknown_layouts_are_refused():
    with pytest.raises(ValueError, match="unknown layouts"):
        RetrievalBenchConfig(layouts=("one-session", "sideways"))


def test_entries_are_spread_round_robin_with_the_first_in_the_measured_session():
    assert [_scope_of(i, 2, 3) for i in range(7)] == [
        (USER, SESSION), (f"{USER}-1", SESSION), (USER, f"{SESSION}-1"), (f"{USER}-1", f"{SESSION}-1"),
        (USER, f"{SESSION}-2"), (f"{USER}-1", f"{SESSION}-2"), (USER, SESSION)]


def test_bulk_filled_entries_have_the_shape_textlog_writes(tmp_path):
    log = TextLog(client=chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False)),
                  embedding_function=MiniLMEmbeddingFunction())
    first = log.add_message(ChatMessage(role="user", content="Hello."), user_id=USER, session_id=SESSION, turn=0)
    template = log.get(first)[0].metadata
    assert template["user_id"] == USER
    texts = _texts(5, seed=3)
    _fill(log, texts, np.random.default_rng(0).normal(size=(5, EMBEDDING_DIM)).astype(np.float32), 1, template, 2)
    entries = log.list(user_id=USER, session_id=SESSION)
    assert len(entries) == 6 and {e.text for e in entries[1:]} <= set(texts) | {"Hello."}
    assert all(e.metadata.keys() == template.keys() for e in entries)
    # adding a filled text again through TextLog finds it (same content hash, no duplicate)
    role = entries[-1].metadata["role"]
    again = log.add_message(ChatMessage(role=role, content=entries[-1].text), user_id=USER, session_id=SESSION, turn=9)
    assert again == [entries[-1].id] and log.count() == 6
    # filled through TextLog, so the session's index has them: a session search finds them
    found = log.search(texts[2], user_id=USER, session_id=SESSION, k=6)
    assert {h.id for h in found} == {e.id for e in entries}


def test_a_log_larger_than_what_is_embedded_gets_perturbed_copies(tmp_path):
    config = RetrievalBenchConfig(sizes=(20, 60), samples=3, router_samples=5, fill_batch=16, embedded_fill=20,
                                  layouts=("one-session",))
    rows = run_retrieval_bench(tmp_path, config)
    fill = json.loads((tmp_path / "retrieval.json").read_text())["meta"]["fill"]
    assert (fill["embedded_entries"], fill["copied_entries"]) == (20, 40)
    assert all(r["recall_at_k"] == 1.0 for r in rows if r["operation"] == "search, vector given")


def test_copies_are_unit_vectors_near_their_base():
    from deltamem_agents.bench.retrieval import _with_copies

    rng = np.random.default_rng(1)
    base = rng.standard_normal((10, EMBEDDING_DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    out = _with_copies(base, 35, 0.6, seed=0)
    assert out.shape == (35, EMBEDDING_DIM) and np.allclose(out[:10], base)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(out[10:] * base[np.arange(10, 35) % 10], axis=1)
    assert np.allclose(cosine, 1 / np.sqrt(1 + 0.6**2), atol=0.05)  # noise almost orthogonal to the base in 384 dims
    assert not np.allclose(out[10], out[20])  # two copies of one base differ
