"""The text log's storage layout: one Chroma collection per user, session search in the
session's own index without a metadata filter (checked against brute force), and the move of a
log written by an older version (one collection shared by every user, or no session indexes)
into that layout. Real embedded Chroma."""

from __future__ import annotations

from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory import expiry as expiry_module
from deltamem_agents.memory import textlog as textlog_module
from deltamem_agents.memory.textlog import content_hash
from deltamem_agents.store.records import ChatMessage
from tests.memory.hashing import HashingEmbedding

WORDS = "red blue green kettle bicycle fence tomato aunt river stone lamp window garden violin cloud owl".split()


def msg(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


def sentence(i: int) -> str:
    rng = np.random.default_rng(i)
    return f"note {i}: " + " ".join(rng.choice(WORDS, size=5))


@pytest.fixture
def client(tmp_path: Path):
    made = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    yield made
    made.close() if hasattr(made, "close") else None


@pytest.fixture
def log(client) -> TextLog:
    return TextLog(TextLogConfig(collection="layout", chunk_tokens=None), client=client, embedding_function=HashingEmbedding())


def brute_force(log: TextLog, query: str, *, user_id: str, session_id: str, k: int) -> list[str]:
    """The ``k`` nearest ids by exact cosine distance over every entry of the session."""
    entries = log.list(user_id=user_id, session_id=session_id)
    vectors = np.array(HashingEmbedding()([e.text for e in entries]))
    q = np.array(HashingEmbedding()([query]))[0]
    distance = 1.0 - vectors @ q
    order = sorted(range(len(entries)), key=lambda i: (round(float(distance[i]), 6), entries[i].id))
    return [entries[i].id for i in order[:k]]


def same_ranking(found: list, expected: list[str], log: TextLog, query: str) -> None:
    """Equal up to ties: the distances of the found ids equal those of the brute-force ids."""
    q = np.array(HashingEmbedding()([query]))[0]
    dist = {h.id: round(1.0 - float(np.array(HashingEmbedding()([h.text]))[0] @ q), 5) for h in log.get(
        [h.id for h in found] + expected)}
    assert [dist[h.id] for h in found] == [dist[i] for i in expected]


def test_each_user_has_their_own_collection_and_deleting_one_drops_it(log, client):
    log.add_message(msg("the red kettle"), user_id="ada", session_id="s", turn=0)
    log.add_message(msg("a blue bicycle"), user_id="bob", session_id="s", turn=0)
    names = {c.name for c in client.list_collections()}
    assert {log.collection_name("ada"), log.collection_name("bob")} <= names
    assert "layout" not in names  # no shared collection
    assert log.users() == ["ada", "bob"]
    assert log.count() == 2 and log.count(user_id="ada") == 1
    assert [h.text for h in log.search("kettle", user_id="bob", k=5)] == ["a blue bicycle"]  # never another user's
    assert log.delete_user(user_id="ada") == 1
    assert log.collection_name("ada") not in {c.name for c in client.list_collections()}
    assert log.search("kettle", user_id="ada") == [] and log.count() == 1
    # reading a user who has nothing creates nothing
    assert log.list(user_id="carol") == [] and "carol" not in log.users()


def test_a_handle_to_a_collection_another_process_deleted_is_reopened(client):
    config = TextLogConfig(collection="layout", chunk_tokens=None)
    first = TextLog(config, client=client, embedding_function=HashingEmbedding())
    second = TextLog(config, client=client, embedding_function=HashingEmbedding())
    first.add_message(msg("the red kettle"), user_id="ada", session_id="s", turn=0)
    assert second.count(user_id="ada") == 1  # second now holds a handle to ada's collection
    first.delete_user(user_id="ada")
    second.add_message(msg("a green lamp"), user_id="ada", session_id="s", turn=1)
    assert [h.text for h in first.list(user_id="ada")] == ["a green lamp"]


def index_names(client, log: TextLog, user_id: str) -> set[str]:
    own = log.collection_name(user_id) + "-s"
    return {c.name for c in client.list_collections() if c.name.startswith(own)}


@pytest.mark.parametrize("share", ["large", "small"])
def test_session_search_equals_brute_force_without_a_metadata_filter(log, monkeypatch, share):
    """A session that is all of the user's entries or a small share of them is searched in its
    own index, never with Chroma's filter, and ranks exactly as brute force does."""
    queries: list[object] = []
    real_query = chromadb.api.models.Collection.Collection.query

    def spy(self, *args, **kwargs):
        queries.append((self.name, kwargs.get("where")))
        return real_query(self, *args, **kwargs)

    session_size = 300 if share == "large" else 6
    for i in range(0 if share == "large" else 300):
        log.add_message(msg(sentence(i)), user_id="ada", session_id="other", turn=i)
    for i in range(session_size):
        log.add_message(msg(sentence(1000 + i)), user_id="ada", session_id="mine", turn=i)
    monkeypatch.setattr(chromadb.api.models.Collection.Collection, "query", spy)
    for query in ("red kettle river", "owl cloud violin garden", "stone fence"):
        found = log.search(query, user_id="ada", session_id="mine", k=5)
        assert all(h.session_id == "mine" for h in found) and len(found) == 5
        assert all(h.distance is not None for h in found)
        same_ranking(found, brute_force(log, query, user_id="ada", session_id="mine", k=5), log, query)
    assert all(where is None for _, where in queries) and len(queries) == 3
    assert {name for name, _ in queries} == {log._indexes.name("ada", "mine")}  # the session's index, not the user's


def test_session_search_skips_expired_entries(log, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(expiry_module, "now", lambda: clock[0])
    for i in range(80):
        log.add_message(msg(f"kettle note {i}"), user_id="ada", session_id="mine", turn=i,
                        metadata={expiry_module.EXPIRES_AT: clock[0] + 10} if i % 2 else None)
    clock[0] += 60
    found = log.search("kettle note", user_id="ada", session_id="mine", k=40)
    assert len(found) == 40 and all(int(h.text.split()[-1]) % 2 == 0 for h in found)


def test_an_id_left_in_the_index_by_an_interrupted_write_is_never_returned(log):
    """Writers index first: a crash before the entry is stored leaves an id only in the index."""
    log.add_message(msg("the red kettle"), user_id="ada", session_id="s", turn=0)
    log._indexes.add("ada", "s", ["ghost-0"], HashingEmbedding()(["the red kettle river"]))
    found = log.search("the red kettle river", user_id="ada", session_id="s", k=3)
    assert [h.text for h in found] == ["the red kettle"]


def test_deleting_entries_sessions_and_users_cleans_their_indexes(log, client):
    ids = log.add_message(msg("the red kettle"), user_id="ada", session_id="s", turn=0)
    log.add_message(msg("a blue bicycle"), user_id="ada", session_id="s", turn=1)
    log.add_message(msg("a green lamp"), user_id="ada", session_id="t", turn=0)
    assert index_names(client, log, "ada") == {log._indexes.name("ada", "s"), log._indexes.name("ada", "t")}
    assert log.users() == ["ada"]  # an index is not a user
    assert log.delete(ids, user_id="ada") == 1
    assert ids[0] not in log._indexes.ids("ada", "s")
    assert [h.text for h in log.search("kettle", user_id="ada", session_id="s", k=5)] == ["a blue bicycle"]
    assert log.delete_session(user_id="ada", session_id="t") == 1
    assert index_names(client, log, "ada") == {log._indexes.name("ada", "s")}
    log.add_message(msg("an owl"), user_id="bob", session_id="s", turn=0)
    log.delete_user(user_id="ada")
    assert index_names(client, log, "ada") == set() and index_names(client, log, "bob")
    log.reset()
    assert index_names(client, log, "bob") == set() and log.users() == []


def test_patching_an_entrys_scope_is_refused(log):
    ids = log.add_message(msg("the red kettle"), user_id="ada", session_id="s", turn=0)
    with pytest.raises(textlog_module.TextLogError, match="session_id"):
        log.patch_metadata(ids, {"session_id": "t"}, user_id="ada")
    assert log.get(ids)[0].session_id == "s"


def test_a_collection_written_before_session_indexes_is_indexed_when_opened(client):
    """A version-2 collection without indexes (no mark): opening it indexes every session, then marks it."""
    embed = HashingEmbedding()
    first = TextLog(TextLogConfig(collection="layout", chunk_tokens=None), client=client, embedding_function=embed)
    for i in range(30):
        first.add_message(msg(sentence(i)), user_id="ada", session_id=f"s{i % 3}", turn=i)
    first._indexes.drop_user("ada")  # as an older version left it: entries, no indexes, no mark
    collection = client.get_collection(first.collection_name("ada"))
    meta = dict(collection.metadata)
    del meta[textlog_module.INDEXED_MARK]
    collection.modify(metadata=meta)

    log = TextLog(TextLogConfig(collection="layout", chunk_tokens=None), client=client, embedding_function=embed)
    query = "red kettle river"
    found = log.search(query, user_id="ada", session_id="s1", k=4)
    same_ranking(found, brute_force(log, query, user_id="ada", session_id="s1", k=4), log, query)
    assert len(index_names(client, log, "ada")) == 3
    assert client.get_collection(log.collection_name("ada")).metadata[textlog_module.INDEXED_MARK] == 1


def test_a_log_written_by_the_shared_layout_is_moved_into_per_user_collections(client):
    """Version 1 kept every user in the collection named after the log: opening it moves the
    entries (vectors, documents, metadata) and drops the shared collection."""
    embed = HashingEmbedding()
    shared = client.create_collection("layout", configuration={"hnsw": {"space": "cosine"}},
                                      metadata={"deltamem:embedding": embed.name(), "deltamem:schema": 1},
                                      embedding_function=None)
    rows = [("ada", "s", f"ada fact {i} kettle") for i in range(1500)] + [("bob", "t", "bob likes the owl")]
    ids, docs, metas = [], [], []
    for turn, (user, session, text) in enumerate(rows):
        digest = content_hash(user, session, "user", text)
        ids.append(f"{digest[:32]}-0")
        docs.append(text)
        metas.append({"user_id": user, "session_id": session, "role": "user", "turn": turn, "chunk": 0, "chunks": 1,
                      "timestamp": "2026-01-01T00:00:00+00:00", "source": "chat", "kind": "message",
                      "content_hash": digest, "memory_id": digest[:32]})
    for lo in range(0, len(ids), 1000):
        shared.add(ids=ids[lo:lo + 1000], documents=docs[lo:lo + 1000], metadatas=metas[lo:lo + 1000],
                   embeddings=embed(docs[lo:lo + 1000]))

    log = TextLog(TextLogConfig(collection="layout", chunk_tokens=None), client=client, embedding_function=embed)
    assert "layout" not in {c.name for c in client.list_collections()}
    assert log.users() == ["ada", "bob"] and log.count(user_id="ada") == 1500 and log.count(user_id="bob") == 1
    assert log.search("owl", user_id="bob", k=1)[0].text == "bob likes the owl"
    assert log.search("owl", user_id="bob", session_id="t", k=1)[0].text == "bob likes the owl"  # indexed on the move
    assert len(log.search("kettle", user_id="ada", session_id="s", k=50)) == 50
    # ids and metadata came along: the dedup finds the moved entry
    assert log.add_message(msg("bob likes the owl"), user_id="bob", session_id="t", turn=9) == [ids[-1]]
    assert log.get(ids[:2], user_id="ada")[1].metadata == metas[1]


def test_a_moved_log_with_another_embedding_model_is_refused_and_kept(client):
    client.create_collection("layout", metadata={"deltamem:embedding": "some-other-model", "deltamem:schema": 1},
                             embedding_function=None).add(ids=["a-0"], documents=["x"], embeddings=[[0.1] * 64],
                                                          metadatas=[{"user_id": "ada"}])
    with pytest.raises(textlog_module.TextLogError, match="some-other-model"):
        TextLog(TextLogConfig(collection="layout"), client=client, embedding_function=HashingEmbedding())
    assert client.get_collection("layout").count() == 1  # nothing moved, nothing lost
