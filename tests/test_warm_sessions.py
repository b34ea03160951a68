"""Warm sessions: the runtime's LRU of open sessions (KV cache + δ-state), bounded by a memory
budget, that never serves a session another runtime or process changed meanwhile.

A tiny random Llama with the real SmolLM2 tokenizer; two runtimes on one store stand for two
server processes (a directory store, and a real redis-server when one is installed)."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from deltamem_agents.runtime import WarmSessionStats
from deltamem_agents.session import DirectorySessionStore
from deltamem_agents.store.records import ChatMessage, SessionKey
from tests.redis_server import redis_prefix, redis_server  # noqa: F401 - fixtures
from tests.tiny_models import tiny_model, tiny_runtime

TOKENS = dict(max_new_tokens=3)


def _runtime(tokenizer, store, **warm):
    model = tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=4096)
    runtime = tiny_runtime(tokenizer, store, window=512, seed=1, model=model)
    if warm:
        runtime.set_warm_budget(warm.get("budget"), max_sessions=warm.get("most"))
    return runtime


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return _runtime(chat_tokenizer, DirectorySessionStore(tmp_path / "store", lock_timeout=30))


def _turn(runtime, session_id, text):
    """One turn as HybridMemory and the server run it: store lock, open, answer, save."""
    key = SessionKey(session_id=session_id)
    with runtime.store.lock(key):
        session = runtime.session(session_id)
        reply = session.reply(text, **TOKENS)
        runtime.save(session)
    return session, reply


@contextlib.contextmanager
def _prefilled(model):
    """Count the tokens ``model`` is given in forwards of more than one token (prefills and
    context rebuilds; a decode step feeds one token)."""
    count = [0]

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] > 1:
            count[0] += ids.shape[-1]

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def test_a_warm_second_turn_prefills_only_its_new_tokens_and_an_evicted_one_everything(runtime, chat_tokenizer):
    first, reply1 = _turn(runtime, "warm", "My name is Ada and I like ferrets.")
    context = first.context_ids
    assert len(context) == reply1.stats.context_tokens
    with _prefilled(runtime.model) as warm_fed:
        again, warm = _turn(runtime, "warm", "What is my name?")
    assert again is first  # the same object: its KV cache was reused

    # what the context lacks of the templated conversation: the end of the (cut) first answer,
    # the new message and the generation prompt
    before = [m.model_dump(include={"role", "content"}) for m in first.messages[:2]]
    question = {"role": "user", "content": "What is my name?"}
    full = chat_tokenizer.apply_chat_template([*before, question], add_generation_prompt=True, tokenize=False)
    head = chat_tokenizer.apply_chat_template(before[:1], add_generation_prompt=True, tokenize=False) + reply1.raw_text
    assert full.startswith(head)
    new_tokens = len(chat_tokenizer(full[len(head):], add_special_tokens=False)["input_ids"])
    assert warm.stats.prefill_tokens == new_tokens == warm_fed[0]
    assert not warm.stats.window_rebuilt
    decode_fed = warm.stats.context_tokens - len(context) - warm_fed[0]  # tokens the decode steps fed

    # the same conversation in a session that was evicted between its turns: the whole context
    _turn(runtime, "cold", "My name is Ada and I like ferrets.")
    runtime.set_warm_budget(0)
    assert not runtime.is_warm("cold") and not runtime.is_warm("warm")
    with _prefilled(runtime.model) as cold_fed:
        _, cold = _turn(runtime, "cold", "What is my name?")
    assert cold.stats.window_rebuilt and warm.stats.rebuild_tokens == 0
    assert cold_fed[0] == cold.stats.context_tokens - decode_fed  # everything in context was prefilled
    assert cold.stats.rebuild_tokens + cold.stats.prefill_tokens == cold_fed[0]  # and the stats say so
    assert cold_fed[0] >= len(context) + new_tokens - 2  # (the first answer re-tokenised from its text)
    stats = runtime.warm_sessions()
    assert (stats.hits, stats.misses, stats.sessions, stats.bytes) == (1, 3, 0, 0)
    assert stats.evictions == 3  # both at the budget change, then "cold" after its commit


def test_bytes_are_the_kv_cache_and_the_state(runtime):
    session, reply = _turn(runtime, "s", "Hello there, my name is Ada.")
    config = runtime.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * reply.stats.context_tokens * 4
    state = sum(t.numel() * t.element_size() for t in session.state.layers.values())
    assert session.resident_bytes == kv + state > 0
    stats = runtime.warm_sessions()
    assert isinstance(stats, WarmSessionStats)
    assert (stats.sessions, stats.bytes, stats.budget_bytes, stats.max_sessions) == (1, kv + state, None, None)
    runtime.close("s")
    assert runtime.warm_sessions().bytes == 0


def test_the_least_recently_used_sessions_go_first(runtime):
    sizes = {}
    for name in ("a", "b", "c"):
        session, _ = _turn(runtime, name, f"Session {name} says hello.")
        sizes[name] = session.resident_bytes
    _turn(runtime, "a", "Again.")  # a is now the most recently used: b is the oldest
    sizes["a"] = runtime.session("a").resident_bytes
    runtime.set_warm_budget(sizes["a"] + sizes["c"])
    assert [runtime.is_warm(n) for n in "abc"] == [True, False, True]
    assert runtime.warm_sessions().bytes == sizes["a"] + sizes["c"]
    runtime.set_warm_budget(None, max_sessions=1)
    assert [runtime.is_warm(n) for n in "abc"] == [True, False, False]
    stats = runtime.warm_sessions()
    assert (stats.evictions, stats.sessions, stats.bytes, stats.max_sessions) == (2, 1, sizes["a"], 1)


def test_the_budget_is_a_runtime_keyword(chat_tokenizer, tmp_path):
    import warnings

    from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning

    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(
            "tiny-llama", model=model, tokenizer=chat_tokenizer, adapter=None, store=tmp_path, warm_budget_bytes=0,
            max_warm_sessions=5,
        )
    assert (runtime.warm_budget_bytes, runtime.max_warm_sessions) == (0, 5)
    _turn(runtime, "s", "Hello.")
    assert not runtime.is_warm("s") and runtime.warm_sessions().evictions == 1


def test_a_session_a_turn_is_using_is_never_evicted(runtime):
    _turn(runtime, "busy", "I am in the middle of something.")
    holding, release = threading.Event(), threading.Event()

    def turn_in_progress():
        with runtime.store.lock(SessionKey(session_id="busy")):
            runtime.session("busy")
            holding.set()
            release.wait(30)

    worker = threading.Thread(target=turn_in_progress)
    worker.start()
    try:
        assert holding.wait(30)
        runtime.set_warm_budget(0)  # evicts everything it may, right now
        assert runtime.is_warm("busy")
        assert runtime.warm_sessions().busy_skips >= 1
        _turn(runtime, "other", "Hi.")  # "other" goes after its own turn, "busy" stays
        assert runtime.is_warm("busy") and not runtime.is_warm("other")
    finally:
        release.set()
        worker.join()
    _turn(runtime, "busy", "Done.")  # its turn ends: now it is evicted too
    assert not runtime.is_warm("busy")


def test_an_evicted_session_its_holder_kept_still_saves(runtime):
    session = runtime.session("kept")
    session.reply("Remember the number 42.", **TOKENS)
    runtime.set_warm_budget(0)
    assert not runtime.is_warm("kept")
    meta = runtime.save(session)  # committed (and evicted again: the budget is 0)
    assert meta.turn_count == 1 and meta.message_count == 2
    assert runtime.session("kept").messages == session.messages
    runtime.close("kept")
    with pytest.raises(ValueError, match="not opened by this runtime"):
        runtime.save(session)


def test_a_budget_must_not_be_negative(runtime):
    with pytest.raises(ValueError, match="budget_bytes"):
        runtime.set_warm_budget(-1)


def _two_runtimes(tokenizer, store_factory):
    return _runtime(tokenizer, store_factory()), _runtime(tokenizer, store_factory())


def _changed_elsewhere(one, two):
    """Every way the other runtime changes a session that ``one`` has warm; ``one`` must see each."""
    session, _ = _turn(one, "shared", "The code word is tangerine.")
    _turn(two, "shared", "And the colour is teal.")  # a commit elsewhere
    reopened = one.session("shared")
    assert reopened is not session and len(reopened.messages) == 4
    stats = one.warm_sessions()
    assert stats.stale_reloads == 1

    # a rewrite elsewhere (forget): same message count afterwards as before a turn of ours
    two.session("shared")
    two.rebuild("shared", keep=lambda m: "teal" not in m.content)
    again = one.session("shared")
    assert all("teal" not in m.content for m in again.messages)
    assert one.warm_sessions().stale_reloads == 2

    # deleted and created again elsewhere with as many turns: the same turn count, other content
    _turn(one, "shared", "One more.")
    turns = one.store.head(SessionKey(session_id="shared")).turn_count
    two.delete("shared")
    for i in range(turns):
        session2 = two.session("shared")
        session2.ingest(ChatMessage(role="user", content=f"replacement {i}"))
        two.save(session2)
    assert two.store.head(SessionKey(session_id="shared")).turn_count == turns
    fresh = one.session("shared")
    assert [m.content for m in fresh.messages] == [f"replacement {i}" for i in range(turns)]
    assert one.warm_sessions().stale_reloads == 3

    # nothing changed: served warm
    assert one.session("shared") is fresh


def test_a_session_changed_by_another_runtime_on_a_directory_store_is_reloaded(chat_tokenizer, tmp_path):
    one, two = _two_runtimes(chat_tokenizer, lambda: DirectorySessionStore(tmp_path / "store", lock_timeout=30))
    _changed_elsewhere(one, two)


def test_a_session_changed_by_another_runtime_on_redis_is_reloaded(chat_tokenizer, redis_server, redis_prefix):  # noqa: F811
    from deltamem_agents.store import RedisSessionStore

    one, two = _two_runtimes(chat_tokenizer, lambda: RedisSessionStore(redis_server.url, prefix=redis_prefix, lease_ttl=5.0))
    _changed_elsewhere(one, two)
    # a session whose lease another holder has is not evicted (a thread: a lease is reentrant in its thread)
    _turn(one, "other", "Hello.")
    holding, release = threading.Event(), threading.Event()

    def hold():
        with two.store.lock(SessionKey(session_id="other")):
            holding.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert holding.wait(30)
        one.set_warm_budget(0)
        assert one.is_warm("other") and not one.is_warm("shared")
    finally:
        release.set()
        worker.join()
    one.set_warm_budget(0)
    assert not one.is_warm("other")
