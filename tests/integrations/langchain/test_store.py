"""DeltaMemStore, the LangGraph store over HybridMemory: a tiny random model, a real embedded
Chroma log (the shipped MiniLM embeddings), LangGraph's own graph runtime, and a second process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)

from deltamem_agents.session import SessionKey
from deltamem_agents.store.records import validate_id
from langchain_deltamem.store import DeltaMemStore, namespace_scope
from tests.integrations.langchain.store_process import open_store

REPO = Path(__file__).resolve().parents[3]


class Clock:
    """A clock the test moves by hand (TTL, created/updated times)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(memory, clock) -> DeltaMemStore:
    return DeltaMemStore(memory, clock=clock)


def state_texts(store: DeltaMemStore, namespace: tuple[str, ...]) -> list[str]:
    """The messages written into the δ-state of the namespace's session."""
    record = store.memory.runtime.store.load(store.scope(namespace))
    return [] if record is None else [m.content for m in record.messages]


def log_entries(store: DeltaMemStore, namespace: tuple[str, ...], key: str) -> set[str]:
    found = store.textlog.find({"$and": [{"store.ns": json.dumps(list(namespace))}, {"store.key": key}]})
    return {h.metadata["memory_id"] for h in found}


# -- put / get / update / delete ------------------------------------------------------------------
def test_put_get_update_delete_round_trip(store, clock):
    ns = ("ada", "memories")
    value = {"text": "I drink cardamom tea", "tags": ["tea", "morning"], "n": 3, "ratio": 0.5, "ok": True,
             "nested": {"city": "Ljubljana", "none": None}, "ünï": "çødé ☕"}
    store.put(ns, "drink", value)
    item = store.get(ns, "drink")
    assert isinstance(item, Item) and item.value == value and list(item.value) == list(value)  # key order too
    assert item.namespace == ns and item.key == "drink" and item.created_at == item.updated_at == clock.now
    assert any("cardamom tea" in t for t in state_texts(store, ns))  # the text went into the δ-state too
    first_id = next(iter(log_entries(store, ns, "drink")))

    clock.advance(60)
    store.put(ns, "drink", {"text": "I drink jasmine tea now"})
    item = store.get(ns, "drink")
    assert item.value == {"text": "I drink jasmine tea now"}
    assert item.created_at == clock.now - timedelta(seconds=60) and item.updated_at == clock.now
    assert log_entries(store, ns, "drink") == {first_id}  # one entry per key, its memory id kept (verb `update`)
    texts = state_texts(store, ns)
    assert any("jasmine" in t for t in texts) and not any("cardamom" in t for t in texts)  # state replayed
    assert [e.event for e in store.memory.history(first_id, user_id="ada")] == ["ADD", "UPDATE"]

    clock.advance(60)  # a put whose embedded text is unchanged only patches the metadata
    store.put(ns, "drink", {"text": "I drink jasmine tea now", "n": 1}, index=["text"])
    store.put(ns, "drink", {"text": "I drink jasmine tea now", "n": 2}, index=["text"])
    assert store.get(ns, "drink").value == {"text": "I drink jasmine tea now", "n": 2}
    assert store.search(ns, filter={"text": "I drink jasmine tea now"})[0].key == "drink"

    store.delete(ns, "drink")
    assert store.get(ns, "drink") is None and log_entries(store, ns, "drink") == set()
    assert not any("jasmine" in t for t in state_texts(store, ns))
    store.put(ns, "gone", {"text": "temporary"})
    store.put(ns, "gone", None)  # put(None) deletes, as in every LangGraph store
    assert store.get(ns, "gone") is None
    store.delete(ns, "never-there")  # deleting a missing key is a no-op


def test_stale_string_fields_do_not_match_filters_after_an_update(store):
    ns = ("ada", "tasks")
    store.put(ns, "t1", {"title": "buy figs", "status": "open"})
    store.put(ns, "t1", {"title": "buy figs"})
    assert store.search(ns, filter={"status": "open"}) == []
    assert [i.key for i in store.search(ns, filter={"title": "buy figs"})] == ["t1"]


def test_same_value_under_two_keys_stays_two_items(store):
    ns = ("ada", "notes")
    store.put(ns, "a", {"text": "same words"})
    store.put(ns, "b", {"text": "same words"})
    assert store.get(ns, "a").value == store.get(ns, "b").value == {"text": "same words"}
    assert len(store.search(ns)) == 2
    store.delete(ns, "a")
    assert store.get(ns, "b").value == {"text": "same words"}


def test_namespaces_are_isolated(store):
    store.put(("ada", "memories"), "pet", {"text": "My ferret is Quillon"})
    store.put(("bob", "memories"), "pet", {"text": "My cat is Mochi"})
    store.put(("ada", "memories", "work"), "pet", {"text": "The office dog is Rex"})
    assert store.get(("ada", "memories"), "pet").value["text"] == "My ferret is Quillon"
    assert store.get(("bob", "memories"), "pet").value["text"] == "My cat is Mochi"
    assert store.get(("ada", "memories", "work"), "pet").value["text"] == "The office dog is Rex"
    assert store.get(("ada",), "pet") is None and store.get(("carol", "memories"), "pet") is None
    assert {i.namespace for i in store.search(("ada",))} == {("ada", "memories"), ("ada", "memories", "work")}
    assert [i.value["text"] for i in store.search(("bob",), query="pet")] == ["My cat is Mochi"]
    assert [i.namespace for i in store.search(("ada", "memories", "work"))] == [("ada", "memories", "work")]
    assert len(store.search(())) == 3
    # the users' δ-states are separate sessions
    assert store.scope(("ada", "memories")) == SessionKey(user_id="ada", session_id="lg-store.memories")
    assert not any("Mochi" in t for t in state_texts(store, ("ada", "memories")))


def test_labels_that_are_not_ids_are_hashed_into_valid_scopes(store):
    weird = ("Ada Lovelace ✓", "mem ories", "@x")
    key = namespace_scope(weird)
    validate_id("user_id", key.user_id) and validate_id("session_id", key.session_id)
    assert key.user_id.startswith("h-") and key.session_id.startswith("lg-store-h-")
    assert namespace_scope(weird) == key and namespace_scope(("Ada Lovelace ✓", "mem_ories", "@x")) != key
    long = ("ada", "x" * 200)
    assert len(namespace_scope(long).session_id) <= 128
    store.put(weird, "k", {"v": 1})
    store.put(long, "k", {"v": 2})
    assert store.get(weird, "k").value == {"v": 1} and store.get(long, "k").value == {"v": 2}
    assert store.list_namespaces(prefix=("Ada Lovelace ✓",)) == [weird]


# -- search ----------------------------------------------------------------------------------------
def test_search_by_query_ranks_the_relevant_item_first(store):
    ns = ("ada", "memories")
    facts = {
        "drink": "Ada's favourite drink is cardamom tea with honey.",
        "pet": "Ada has a ferret named Quillon.",
        "home": "Ada lives in a flat in Ljubljana near the river.",
        "job": "Ada works as an archivist at the national library.",
    }
    for key, text in facts.items():
        store.put(ns, key, {"text": text})
    for query, key in [("what does Ada like to drink?", "drink"), ("which animal does she keep?", "pet"),
                       ("where does she live?", "home"), ("what is her profession?", "job")]:
        hits = store.search(ns, query=query, limit=4)
        assert hits[0].key == key, (query, [(h.key, h.score) for h in hits])
        assert all(isinstance(h, SearchItem) and isinstance(h.score, float) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.key for h in store.search(ns, query="tea", limit=1)] == ["drink"]
    assert store.search(("bob",), query="tea") == []


def test_filter_limit_and_offset(store):
    ns = ("ada", "things")
    for i in range(6):
        store.put(ns, f"k{i}", {"kind": "food" if i % 2 == 0 else "place", "n": i, "text": f"thing number {i}",
                                "meta": {"lang": "sl" if i < 3 else "en"}})
    assert [i.key for i in store.search(ns, filter={"kind": "food"})] == ["k0", "k2", "k4"]
    assert [i.key for i in store.search(ns, filter={"kind": {"$eq": "place"}})] == ["k1", "k3", "k5"]
    assert [i.key for i in store.search(ns, filter={"n": {"$gte": 2, "$lt": 5}})] == ["k2", "k3", "k4"]
    assert [i.key for i in store.search(ns, filter={"n": 3})] == ["k3"]
    assert [i.key for i in store.search(ns, filter={"meta": {"lang": "en"}, "kind": "food"})] == ["k4"]
    assert [i.key for i in store.search(ns, filter={"kind": {"$ne": "food"}, "n": {"$gt": 1}})] == ["k3", "k5"]
    assert store.search(ns, filter={"kind": "nothing"}) == []
    everything = [i.key for i in store.search(ns)]
    assert everything == [f"k{i}" for i in range(6)]  # in the order they were first put
    pages = [[i.key for i in store.search(ns, limit=2, offset=o)] for o in (0, 2, 4, 6)]
    assert pages == [["k0", "k1"], ["k2", "k3"], ["k4", "k5"], []]
    assert [i.key for i in store.search(ns, filter={"kind": "food"}, limit=1, offset=1)] == ["k2"]
    by_query = store.search(ns, query="thing number 4", filter={"kind": "food"}, limit=3)
    assert {i.key for i in by_query} == {"k0", "k2", "k4"} and by_query[0].key == "k4"
    ranked = [i.key for i in store.search(ns, query="thing number 4", limit=6)]
    assert [i.key for i in store.search(ns, query="thing number 4", limit=2, offset=2)] == ranked[2:4]


def test_index_paths_and_unindexed_items(store):
    ns = ("ada", "docs")
    store.put(ns, "title-only", {"title": "Photosynthesis in ferns", "body": "zzz qqq"}, index=["title"])
    store.put(ns, "hidden", {"text": "ferns and photosynthesis"}, index=False)
    [doc] = [h.text for h in store.textlog.find({"store.key": "title-only"}, user_id="ada")]
    assert doc == "title-only: Photosynthesis in ferns"  # only the index path was embedded
    hits = store.search(ns, query="photosynthesis in ferns", limit=5)
    assert [h.key for h in hits] == ["title-only", "hidden"]
    assert hits[0].score is not None and hits[1].score is None  # as InMemoryStore: unindexed items come unscored
    assert store.get(ns, "hidden").value == {"text": "ferns and photosynthesis"}


# -- list_namespaces ------------------------------------------------------------------------------
def test_list_namespaces(store):
    for ns in [("ada", "memories"), ("ada", "memories", "work"), ("ada", "prefs"), ("bob", "memories"),
               ("bob", "archive", "v1"), ("carol", "x", "v1")]:
        store.put(ns, "k", {"text": "/".join(ns)})
    assert store.list_namespaces() == sorted([
        ("ada", "memories"), ("ada", "memories", "work"), ("ada", "prefs"), ("bob", "archive", "v1"),
        ("bob", "memories"), ("carol", "x", "v1")])
    assert store.list_namespaces(prefix=("ada",)) == [("ada", "memories"), ("ada", "memories", "work"), ("ada", "prefs")]
    assert store.list_namespaces(prefix=("ada", "memories")) == [("ada", "memories"), ("ada", "memories", "work")]
    assert store.list_namespaces(suffix=("memories",)) == [("ada", "memories"), ("bob", "memories")]
    assert store.list_namespaces(suffix=("v1",)) == [("bob", "archive", "v1"), ("carol", "x", "v1")]
    assert store.list_namespaces(prefix=("*", "memories")) == [("ada", "memories"), ("ada", "memories", "work"),
                                                               ("bob", "memories")]
    assert store.list_namespaces(prefix=("bob",), suffix=("v1",)) == [("bob", "archive", "v1")]
    assert store.list_namespaces(max_depth=1) == [("ada",), ("bob",), ("carol",)]
    assert store.list_namespaces(prefix=("ada",), max_depth=2) == [("ada", "memories"), ("ada", "prefs")]
    assert store.list_namespaces(limit=2, offset=1) == [("ada", "memories", "work"), ("ada", "prefs")]
    assert store.list_namespaces(prefix=("nobody",)) == []
    store.delete(("ada", "prefs"), "k")
    assert ("ada", "prefs") not in store.list_namespaces(prefix=("ada",))


# -- batch / abatch ---------------------------------------------------------------------------------
def test_batch_runs_each_op_type_in_order(store):
    ns = ("ada", "batch")
    results = store.batch([
        PutOp(ns, "a", {"text": "alpha"}), PutOp(ns, "b", {"text": "beta"}), GetOp(ns, "a"),
        SearchOp(ns, None, 10, 0, None), ListNamespacesOp(None, None, 100, 0), PutOp(ns, "a", None), GetOp(ns, "a"),
    ])
    assert results[0] is None and results[1] is None and results[5] is None
    assert results[2] is None  # the put of "a" collapsed into the later put(None): "a" was never written
    assert [i.key for i in results[3]] == ["b"]
    assert results[4] == [ns]
    assert results[6] is None and store.get(ns, "b").value == {"text": "beta"}
    # several puts to one key collapse into the last: one write, one entry
    store.batch([PutOp(ns, "c", {"text": "one"}), PutOp(ns, "c", {"text": "two"}), PutOp(ns, "c", {"text": "three"})])
    assert store.get(ns, "c").value == {"text": "three"}
    assert [e.event for e in store.memory.history(next(iter(log_entries(store, ns, "c"))), user_id="ada")] == ["ADD"]


async def test_abatch_and_async_methods(store):
    ns = ("ada", "async")
    await store.aput(ns, "x", {"text": "async hello"})
    results = await store.abatch([GetOp(ns, "x"), SearchOp(ns, {"text": "async hello"}, 5, 0, "hello"),
                                  ListNamespacesOp((MatchCondition("prefix", ("ada",)),), None, 10, 0)])
    assert results[0].value == {"text": "async hello"} and [i.key for i in results[1]] == ["x"]
    assert results[2] == [ns]
    assert (await store.aget(ns, "x")).key == "x"
    assert [i.key for i in await store.asearch(("ada",), query="hello")] == ["x"]
    assert await store.alist_namespaces(prefix=("ada",)) == [ns]
    both = await asyncio.gather(store.aput(ns, "y", {"text": "y"}), store.aput(("bob", "async"), "y", {"text": "y"}))
    assert both == [None, None] and (await store.aget(("bob", "async"), "y")).value == {"text": "y"}
    await store.adelete(ns, "x")
    assert await store.aget(ns, "x") is None


# -- TTL --------------------------------------------------------------------------------------------
def test_ttl_expires_refreshes_on_read_and_sweeps(memory, clock):
    store = DeltaMemStore(memory, clock=clock, ttl={"default_ttl": 1.0, "refresh_on_read": True})
    assert store.supports_ttl
    ns = ("ada", "ttl")
    store.put(ns, "short", {"text": "short-lived secret"})  # default_ttl: 1 minute
    store.put(ns, "kept", {"text": "kept forever"}, ttl=None)
    clock.advance(50)
    assert store.get(ns, "short").value == {"text": "short-lived secret"}  # refreshes: now expires at +110 s
    clock.advance(50)
    assert store.get(ns, "short", refresh_ttl=False) is not None  # +100 s: alive thanks to the refresh
    assert sorted(i.key for i in store.search(ns, refresh_ttl=False)) == ["kept", "short"]
    clock.advance(15)  # +115 s: expired
    assert store.get(ns, "short") is None
    assert [i.key for i in store.search(ns)] == ["kept"] and [i.key for i in store.search(ns, query="secret")] == ["kept"]
    assert store.list_namespaces(prefix=("ada",)) == [ns]
    assert any("short-lived" in t for t in state_texts(store, ns))  # still stored until swept
    assert store.sweep_ttl() == 1
    assert log_entries(store, ns, "short") == set() and not any("short-lived" in t for t in state_texts(store, ns))
    assert store.get(ns, "kept").value == {"text": "kept forever"} and store.sweep_ttl() == 0
    # a search refreshes what it returns; a put with a new ttl replaces the old one
    store.put(ns, "s2", {"text": "second"}, ttl=2)
    clock.advance(100)
    assert [i.key for i in store.search(ns, filter={"text": "second"})] == ["s2"]
    clock.advance(100)
    assert store.get(ns, "s2", refresh_ttl=False) is not None
    store.put(ns, "s2", {"text": "second"}, ttl=None)
    clock.advance(10_000)
    assert store.get(ns, "s2") is not None and store.prune_expired() == 0


def test_ttl_without_config_and_refresh_off(memory, clock):
    store = DeltaMemStore(memory, clock=clock, ttl={"refresh_on_read": False})
    ns = ("ada", "ttl2")
    store.put(ns, "a", {"text": "no ttl"})
    store.put(ns, "b", {"text": "ttl"}, ttl=1)
    clock.advance(40)
    assert store.get(ns, "b") is not None  # no refresh: still expires at +60 s
    clock.advance(30)
    assert store.get(ns, "b") is None and store.get(ns, "a") is not None


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("namespace, message", [
    ((), "empty"), (("",), "empty"), (("a.b",), "periods"), ((1,), "must be strings"), (("ada", 2), "must be strings"),
    (("langgraph", "x"), "langgraph"), ("users", "tuple of strings"), (("a\x00b",), "NUL"),
])
def test_bad_namespaces_raise_invalid_namespace_error(store, namespace, message):
    with pytest.raises(InvalidNamespaceError, match=message):
        store.put(namespace, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp(namespace, "k", {"v": 1})])  # ops given to batch directly are checked too


@pytest.mark.parametrize("value, message", [
    ("a string", "must be a dict"), (["a", "list"], "must be a dict"), ({"s": {1, 2}}, "JSON-serializable"),
    ({"x": float("nan")}, "JSON-serializable"), ({"x": {1: "int key"}}, "non-string keys"),
    ({"when": datetime(2026, 1, 1)}, "JSON-serializable"),
])
def test_bad_values_raise_value_error(store, value, message):
    with pytest.raises(ValueError, match=message):
        store.put(("ada", "x"), "k", value)


def test_bad_ops_change_nothing(store):
    with pytest.raises(ValueError, match="must be a dict"):
        store.batch([PutOp(("ada", "x"), "first", {"v": 1}), PutOp(("ada", "x"), "second", "not a dict")])
    assert store.get(("ada", "x"), "first") is None  # checked before anything ran
    with pytest.raises(ValueError, match="operator"):
        store.search(("ada",), filter={"n": {"$regex": "x"}})
    with pytest.raises(ValueError, match="limit"):
        store.search(("ada",), limit=-1)
    with pytest.raises(ValueError, match="ttl"):
        store.put(("ada", "x"), "k", {"v": 1}, ttl=-5)
    with pytest.raises(ValueError, match="key"):
        store.batch([GetOp(("ada",), 7)])
    with pytest.raises(ValueError, match="unknown store operation"):
        store.batch(["get ada"])
    with pytest.raises(ValueError, match="text log"):
        DeltaMemStore(type("NoLog", (), {"textlog": None})())


# -- LangGraph: a real graph with the store injected into its nodes ---------------------------------
class State(TypedDict, total=False):
    user: str
    fact: str
    question: str
    answer: str


def remember(state: State, *, store: BaseStore) -> State:
    if state.get("fact"):
        ns = (state["user"], "memories")
        store.put(ns, f"fact-{len(store.search(ns, limit=100))}", {"text": state["fact"]})
    return {}


def recall(state: State, *, store: BaseStore) -> State:
    if not state.get("question"):
        return {}
    hits = store.search((state["user"], "memories"), query=state["question"], limit=1)
    return {"answer": hits[0].value["text"] if hits else "I don't know"}


def build_graph(store: BaseStore) -> Any:
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph.compile(store=store, checkpointer=InMemorySaver())


def test_a_langgraph_graph_writes_in_one_thread_and_reads_in_another(store):
    app = build_graph(store)
    for fact in ["My ferret is called Quillon.", "I was born in Ljubljana.", "My favourite tea is cardamom."]:
        app.invoke({"user": "ada", "fact": fact}, {"configurable": {"thread_id": "chat-1"}})
    out = app.invoke({"user": "ada", "question": "What is my pet's name?"}, {"configurable": {"thread_id": "chat-2"}})
    assert out["answer"] == "My ferret is called Quillon."
    other = app.invoke({"user": "bob", "question": "What is my pet's name?"}, {"configurable": {"thread_id": "chat-3"}})
    assert other["answer"] == "I don't know"  # another user's namespace holds nothing
    assert len(store.search(("ada", "memories"))) == 3
    assert any("Quillon" in t for t in state_texts(store, ("ada", "memories")))


async def test_a_langgraph_graph_runs_async_through_abatch(store):
    async def aremember(state: State, *, store: BaseStore) -> State:
        await store.aput((state["user"], "memories"), "fact", {"text": state["fact"]})
        return {}

    async def arecall(state: State, *, store: BaseStore) -> State:
        hits = await store.asearch((state["user"], "memories"), query=state["fact"], limit=1)
        return {"answer": hits[0].value["text"]}

    graph = StateGraph(State)
    graph.add_node("remember", aremember)
    graph.add_node("recall", arecall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    app = graph.compile(store=store, checkpointer=InMemorySaver())
    out = await app.ainvoke({"user": "ada", "fact": "I sail on Sundays."}, {"configurable": {"thread_id": "t"}})
    assert out["answer"] == "I sail on Sundays."


# -- across processes -------------------------------------------------------------------------------
def run_process(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.integrations.langchain.store_process", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_recall_across_processes(tmp_path, chat_tokenizer):
    ns = ["ada", "memories"]
    run_process(str(tmp_path), "put", json.dumps(ns), "locker", json.dumps({"text": "My gym locker code is 7312."}))
    store = open_store(tmp_path, chat_tokenizer)  # a new store here, on the same folders
    try:
        assert store.get(tuple(ns), "locker").value == {"text": "My gym locker code is 7312."}
        assert store.search(tuple(ns), query="gym locker code")[0].key == "locker"
        assert any("7312" in t for t in state_texts(store, tuple(ns)))
        # rewriting replays the other process's session: the fingerprints match
        store.put(tuple(ns), "locker", {"text": "My gym locker code is 9001."})
    finally:
        store.textlog.close()
    assert json.loads(run_process(str(tmp_path), "get", json.dumps(ns), "locker").strip().splitlines()[-1]) == {
        "text": "My gym locker code is 9001."}


# -- langmem's memory tools on this store -----------------------------------------------------------
def test_langmem_tools_manage_and_search_memories(store):
    langmem = pytest.importorskip("langmem")
    ns = ("ada", "memories")
    manage = langmem.create_manage_memory_tool(namespace=ns, store=store)
    search = langmem.create_search_memory_tool(namespace=ns, store=store)
    created = manage.invoke({"content": "Ada prefers window seats on trains.", "action": "create"})
    memory_id = created.rsplit(" ", 1)[-1]
    manage.invoke({"content": "Ada is allergic to peanuts.", "action": "create"})
    found = json.loads(search.invoke({"query": "seat preference when travelling"}))
    assert found[0]["key"] == memory_id and found[0]["value"] == {"content": "Ada prefers window seats on trains."}
    manage.invoke({"content": "Ada prefers aisle seats now.", "action": "update", "id": memory_id})
    assert store.get(ns, memory_id).value == {"content": "Ada prefers aisle seats now."}
    manage.invoke({"action": "delete", "id": memory_id})
    assert store.get(ns, memory_id) is None and len(store.search(ns)) == 1


# -- the example --------------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_06_langgraph_store_example(tmp_path):
    from tests.integrations.langchain.test_examples import run_example

    out = run_example("06_langgraph_store.py", tmp_path)
    assert "thread chat-2 recalls: 'Ada is vegetarian and avoids mushrooms.'" in out
    assert "namespaces: [('ada', 'memories')]" in out
    assert "items after the rewrite: 2" in out
    assert "δ-state of ada/lg-store.memories holds 2 messages" in out
