"""MemorySession and DeltaMemRuntime on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import warnings

import pytest
import torch

from deltamem_agents import DeltaMemConfig
from deltamem_agents.session import (
    DeltaMemRuntime,
    MemorySession,
    SessionConfig,
    SessionError,
    SessionMismatchError,
    UntrainedMemoryWarning,
)
from tests.tiny_models import tiny_model, tiny_runtime


def _model(tokenizer):
    return tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=4096)


def _runtime(tokenizer, tmp_path, model=None, config=None, window=256, randomize=True):
    return tiny_runtime(
        tokenizer, tmp_path / "store", window=window, seed=1, config=config, model=model or _model(tokenizer), randomize=randomize
    )


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return _runtime(chat_tokenizer, tmp_path)


def test_an_untrained_memory_is_announced_once_per_backbone(chat_tokenizer, tmp_path):
    import deltamem_agents.runtime as runtime_module

    runtime_module._warned_untrained.discard("tiny-warn")
    model = _model(chat_tokenizer)
    with pytest.warns(UntrainedMemoryWarning, match="does not change the model's answers"):
        first = DeltaMemRuntime("tiny-warn", model=model, tokenizer=chat_tokenizer, adapter=None, store=tmp_path)
    first.handle.detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedMemoryWarning)
        DeltaMemRuntime("tiny-warn", model=model, tokenizer=chat_tokenizer, adapter=None, store=tmp_path)


def _states_close(a, b, atol=1e-5):
    assert a.layers.keys() == b.layers.keys()
    for i in a.layers:
        torch.testing.assert_close(a.layers[i], b.layers[i], atol=atol, rtol=1e-4)


def test_reply_appends_messages_and_reuses_the_kv_cache(runtime):
    session = runtime.session("s1")
    first = session.reply("Hello there, my name is Ada.", max_new_tokens=5)
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[-1].content == first.text
    assert first.stats.decode_tokens <= 5 and first.stats.prefill_tokens > 0
    window_after_first = first.stats.context_tokens
    second = session.reply("And what is my name?", max_new_tokens=5)
    # only the new tokens were prefilled: the context grew by them plus the decoded tokens
    assert second.stats.context_tokens == window_after_first + second.stats.prefill_tokens + second.stats.decode_tokens
    assert not second.stats.window_rebuilt
    assert second.stats.tokens_written == second.stats.prefill_tokens + second.stats.decode_tokens


def test_ingesting_in_pieces_writes_the_same_state_as_at_once(chat_tokenizer, tmp_path):
    runtime = _runtime(chat_tokenizer, tmp_path)
    messages = [{"role": "user", "content": "The vault code is 4471."}, {"role": "assistant", "content": "Noted."}]
    a = runtime.session("a")
    a.ingest(messages[0])
    a.ingest(messages[1])
    b = runtime.session("b")
    b.ingest(messages)
    _states_close(a.state, b.state)
    assert a._window == b._window


def test_the_window_is_bounded_and_older_tokens_stay_in_the_state(chat_tokenizer, tmp_path):
    runtime = _runtime(chat_tokenizer, tmp_path, window=64)
    session = runtime.session("long")
    stats = session.ingest("The quick brown fox jumps over the lazy dog. " * 30)
    assert stats.window_rebuilt and stats.context_tokens <= 64
    assert stats.tokens_written == stats.prefill_tokens > 64
    reply = session.reply("Summarise.", max_new_tokens=8)
    assert reply.stats.context_tokens <= 64


def test_a_probe_changes_nothing(runtime):
    session = runtime.session("probe")
    session.reply("Remember: the meeting is at noon.", max_new_tokens=4)
    state, messages, window = session.state.clone(), list(session.messages), list(session._window)
    probe = session.reply("When is the meeting?", write=False, max_new_tokens=4)
    assert probe.stats.wrote is False and probe.stats.tokens_written == 0
    assert session.state.equal(state) and session.messages == messages and session._window == window
    # the next real turn is exactly what it would have been without the probe
    after_probe = session.reply("Thanks.", max_new_tokens=4)
    twin = runtime.session("twin")
    twin.ingest(messages)
    # (a twin that never probed, fed the same messages, agrees on the reply)
    assert twin.reply("Thanks.", max_new_tokens=4).text == after_probe.text


def test_an_aborted_stream_keeps_no_writes(runtime):
    session = runtime.session("abort")
    session.reply("First turn.", max_new_tokens=3)
    state, count = session.state.clone(), len(session.messages)
    stream = session.stream("Second turn, interrupted.", max_new_tokens=20)
    next(stream, None)
    stream.close()
    assert session.state.equal(state) and len(session.messages) == count
    assert session.reply("Third turn.", max_new_tokens=3).stats.window_rebuilt  # context rebuilt


def test_stop_strings_and_streaming_agree(runtime):
    session = runtime.session("stop")
    streamed = "".join(session.stream("Say something.", write=False, max_new_tokens=12))
    reply = session.reply("Say something.", write=False, max_new_tokens=12)
    assert streamed == reply.text
    if len(reply.text) > 2:
        stop = reply.text[1:3]
        cut = session.reply("Say something.", write=False, max_new_tokens=12, stop=(stop,))
        assert stop not in cut.text and cut.finish_reason == "stop"


@pytest.mark.parametrize("bad", ["", "   ", [], [{"role": "robot", "content": "x"}]])
def test_bad_input_is_refused_clearly(runtime, bad):
    session = runtime.session("bad")
    with pytest.raises((SessionError, ValueError)):
        session.ingest(bad)
    assert session.messages == [] and session.state is None


@pytest.mark.parametrize("randomize", [False, True], ids=["untrained", "random-memory"])
def test_sessions_persist_between_runtimes(chat_tokenizer, tmp_path, randomize):
    runtime = _runtime(chat_tokenizer, tmp_path, randomize=randomize)
    session = runtime.session("persist", user_id="ada")
    # Logged text is re-tokenized on resume; a random tiny model's replies (partial bytes)
    # would not round-trip, so this conversation is given as text.
    session.ingest([{"role": "user", "content": "My favourite colour is teal."}, {"role": "assistant", "content": "Teal, noted."}])
    meta = runtime.save(session)
    assert meta.turn_count == 1 and meta.message_count == 2 and meta.tokens_written > 0

    again = _runtime(chat_tokenizer, tmp_path, randomize=randomize)  # same weights: "another process"
    resumed = again.session("persist", user_id="ada")
    assert [m.content for m in resumed.messages] == [m.content for m in session.messages]
    assert resumed.state.equal(session.state)
    reply = resumed.reply("What is my favourite colour?", max_new_tokens=4)
    assert reply.stats.window_rebuilt  # the recent window was restored from the log, writing off
    original = session.reply("What is my favourite colour?", max_new_tokens=4)
    if not randomize:
        # With zero delta heads the restored context is exactly the one the first runtime held.
        # With a trained memory it cannot be: the KV entries of the first runtime were computed
        # while the state evolved, the restored ones read the final state.
        assert original.text == reply.text
        _states_close(session.state, resumed.state)
    assert again.save(resumed).turn_count == 2


def test_a_state_from_another_configuration_is_refused(chat_tokenizer, tmp_path):
    runtime = _runtime(chat_tokenizer, tmp_path)
    session = runtime.session("x")
    session.reply("hi", max_new_tokens=2)
    runtime.save(session)
    runtime.handle.detach()
    other = _runtime(chat_tokenizer, tmp_path, model=runtime.model, config=DeltaMemConfig(rank=4))
    with pytest.raises(SessionMismatchError, match="config"):
        other.session("x")


@pytest.mark.parametrize("strategy", ["ssw", "msw"])
def test_every_write_strategy_runs_a_conversation(chat_tokenizer, tmp_path, strategy):
    config = DeltaMemConfig(write_strategy=strategy, segment_granularity="sentence" if strategy == "ssw" else "message")
    runtime = _runtime(chat_tokenizer, tmp_path, config=config)
    session = runtime.session(strategy)
    session.ingest("One. Two! Three?")
    before = session.state.clone()
    session.reply("Go on.", max_new_tokens=4)
    assert not session.state.equal(before)
    assert session.state.num_heads == (4 if strategy == "msw" else 1)


def test_a_session_without_a_runtime(chat_tokenizer):
    from deltamem_agents import attach_delta_mem

    model = _model(chat_tokenizer)
    handle = attach_delta_mem(model, DeltaMemConfig())
    session = MemorySession(model, chat_tokenizer, handle, config=SessionConfig(system_prompt="Be brief."))
    session.reply("Hi", max_new_tokens=2)
    assert session.messages[0].role == "system"
