"""Batched turns equal turns taken alone: text, state, messages, stats and the KV cache handed back.

Every test builds twin sessions (same model, same history, fed the same way, so equal caches and
states), answers one twin alone and the other in a batch, and compares.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.session import (
    BatchRequest,
    MemorySession,
    SessionBatch,
    SessionConfig,
    SessionError,
    reply_batch,
    stream_batch,
)
from tests.tiny_models import randomize_memory, tiny_model

HISTORIES = [
    [],  # a new session: no cache yet
    ["Hello, I am Ada and I collect blue teapots."],
    ["My train leaves at nine.", "It goes to Lisbon, then Porto, then back home on Sunday evening."],
]


def _twins(model, handle, tokenizer, histories=HISTORIES, window=256, history_tokens=6, copies=2):
    """``copies`` lists of sessions with equal histories, caches and states."""
    groups = []
    for history in histories:
        twins = [MemorySession(model, tokenizer, handle, config=SessionConfig(context_window=window)) for _ in range(copies)]
        for text in history:
            for session in twins:
                session.reply(text, max_new_tokens=history_tokens)
        groups.append(twins)
    return tuple([g[c] for g in groups] for c in range(copies))


def _assert_same(alone: MemorySession, batched: MemorySession, atol: float = 1e-5) -> None:
    assert [(m.role, m.content) for m in alone.messages] == [(m.role, m.content) for m in batched.messages]
    assert alone.state.layers.keys() == batched.state.layers.keys()
    for i in alone.state.layers:
        torch.testing.assert_close(batched.state.layers[i], alone.state.layers[i], atol=atol, rtol=1e-4)
    assert alone._window == batched._window
    assert alone.tokens_written == batched.tokens_written
    a, b = alone.last_stats, batched.last_stats
    for name in ("tokens_written", "context_tokens", "prefill_tokens", "decode_tokens", "window_rebuilt"):
        assert getattr(a, name) == getattr(b, name), name


QUESTIONS = ["What do I collect?", "Where does the train go?", "And when do I come back home?"]


@pytest.mark.parametrize(
    "model_and_handle",
    [DeltaMemConfig(), DeltaMemConfig(write_strategy="ssw"), DeltaMemConfig(write_strategy="msw")],
    ids=["tsw", "ssw", "msw"],
    indirect=True,
)
def test_a_batched_turn_equals_each_session_alone(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer)
    options = [{"max_new_tokens": 7}, {"max_new_tokens": 12}, {"max_new_tokens": 3}]
    expected = [s.reply(q, **o) for s, q, o in zip(alone, QUESTIONS, options)]
    replies = reply_batch([(s, q, o) for s, q, o in zip(batched, QUESTIONS, options)])
    assert [r.text for r in replies] == [r.text for r in expected]
    assert [r.finish_reason for r in replies] == [r.finish_reason for r in expected]
    for a, b in zip(alone, batched):
        _assert_same(a, b)
    # the KV caches handed back are the sessions' own: the next turn alone still agrees
    for a, b in zip(alone, batched):
        assert a.reply("Tell me more.", max_new_tokens=6).text == b.reply("Tell me more.", max_new_tokens=6).text
        _assert_same(a, b)


def test_rows_whose_window_fills_while_decoding_are_rebuilt_as_alone(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer, window=48)
    expected = [s.reply(q, max_new_tokens=30) for s, q in zip(alone, QUESTIONS)]
    batch = SessionBatch([(s, q, {"max_new_tokens": 30}) for s, q in zip(batched, QUESTIONS)])
    replies = batch.run()
    assert batch.stats.window_rebuilds >= 1
    assert any(r.stats.window_rebuilt for r in replies)
    assert [r.text for r in replies] == [r.text for r in expected]
    for a, b in zip(alone, batched):
        _assert_same(a, b)


def test_rows_finish_on_their_own_eos_stop_strings_and_length(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched, scout = _twins(model, handle, chat_tokenizer, copies=3)
    # learn what row 2 says first (from a third twin), then make that its stop string
    probe = scout[2].reply(QUESTIONS[2], max_new_tokens=4).text
    first_word = chat_tokenizer.decode(chat_tokenizer(probe, add_special_tokens=False)["input_ids"][:1])
    options = [{"max_new_tokens": 9}, {"max_new_tokens": 2}, {"max_new_tokens": 9, "stop": (first_word,)}]
    expected = [s.reply(q, **o) for s, q, o in zip(alone, QUESTIONS, options)]
    assert expected[2].finish_reason == "stop" and expected[2].stats.decode_tokens == 1
    replies = reply_batch([(s, q, o) for s, q, o in zip(batched, QUESTIONS, options)])
    assert [(r.text, r.finish_reason, r.stats.decode_tokens) for r in replies] == [
        (r.text, r.finish_reason, r.stats.decode_tokens) for r in expected
    ]
    for a, b in zip(alone, batched):
        _assert_same(a, b)


def test_end_of_turn_tokens_stop_a_row_unless_ignore_eos(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched, scout = _twins(model, handle, chat_tokenizer, copies=3)
    first = chat_tokenizer(scout[0].reply(QUESTIONS[0], max_new_tokens=3).text, add_special_tokens=False)
    model.generation_config.eos_token_id = first["input_ids"][0]  # row 0 now "ends its turn" at once
    options = [{"max_new_tokens": 5}, {"max_new_tokens": 5, "ignore_eos": True}, {"max_new_tokens": 4}]
    expected = [s.reply(q, **o) for s, q, o in zip(alone, QUESTIONS, options)]
    assert expected[0].finish_reason == "stop" and expected[0].text == ""
    assert expected[1].stats.decode_tokens == 5
    replies = reply_batch([(s, q, o) for s, q, o in zip(batched, QUESTIONS, options)])
    assert [(r.text, r.finish_reason) for r in replies] == [(r.text, r.finish_reason) for r in expected]
    for a, b in zip(alone, batched):
        _assert_same(a, b)


def test_sampling_with_a_seed_matches_alone(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer)
    options = [{"max_new_tokens": 8, "temperature": 0.9, "top_p": 0.8, "seed": 7 + i} for i in range(3)]
    expected = [s.reply(q, **o) for s, q, o in zip(alone, QUESTIONS, options)]
    replies = reply_batch([BatchRequest(session=s, message=q, options=o) for s, q, o in zip(batched, QUESTIONS, options)])
    assert [r.text for r in replies] == [r.text for r in expected]


def test_streamed_pieces_add_up_to_each_reply(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    _, batched = _twins(model, handle, chat_tokenizer)
    batch = SessionBatch([(s, q, {"max_new_tokens": 6}) for s, q in zip(batched, QUESTIONS)])
    texts = ["", "", ""]
    for piece in batch.stream():
        texts[piece.row] += piece.text
    assert texts == [r.text for r in batch.replies]
    assert batch.stats.rows == 3 and batch.stats.tokens == sum(r.stats.decode_tokens for r in batch.replies)


def test_a_batch_closed_early_keeps_nothing(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    _, batched = _twins(model, handle, chat_tokenizer)
    before = [([m.content for m in s.messages], s.state.clone() if s.state else None, s.tokens_written) for s in batched]
    stream = stream_batch([(s, q, {"max_new_tokens": 10, "ignore_eos": True}) for s, q in zip(batched, QUESTIONS)])
    next(stream)
    stream.close()
    for s, (messages, state, written) in zip(batched, before):
        assert [m.content for m in s.messages] == messages and s.tokens_written == written
        assert (state is None and s.state is None) or s.state.equal(state)
    # and the sessions still work (their context is rebuilt)
    assert all(s.reply("Again?", max_new_tokens=3).stats.decode_tokens >= 0 for s in batched)
    assert all(s.messages[-2].content == "Again?" for s in batched)


def test_bad_batches_are_refused_with_a_reason(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    session = MemorySession(model, chat_tokenizer, handle)
    with pytest.raises(SessionError, match="at least one"):
        SessionBatch([])
    with pytest.raises(SessionError, match="only one row"):
        SessionBatch([(session, "a"), (session, "b")])
    with pytest.raises(SessionError, match="nothing to answer"):
        SessionBatch([(session, None)])
    with pytest.raises(SessionError, match="BatchRequest or a"):
        SessionBatch([session])
    with pytest.raises(ValidationError):
        SessionBatch([(session, "hi", {"max_new_token": 3})])
    other_model = tiny_model("llama", vocab_size=len(chat_tokenizer))
    other = MemorySession(other_model, chat_tokenizer, attach_delta_mem(other_model))
    with pytest.raises(SessionError, match="share one model"):
        SessionBatch([(session, "a"), (other, "b")])
    batch = SessionBatch([(session, "hi", {"max_new_tokens": 2})])
    batch.run()
    with pytest.raises(SessionError, match="runs once"):
        batch.run()


def test_a_row_that_fails_in_prefill_leaves_every_session_as_it_was(model_and_handle, chat_tokenizer, monkeypatch):
    model, handle = model_and_handle
    _, batched = _twins(model, handle, chat_tokenizer)
    before = [[m.content for m in s.messages] for s in batched]
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(self)
        raise RuntimeError("prefill failed")

    monkeypatch.setattr(MemorySession, "_feed_messages", failing)
    with pytest.raises(RuntimeError, match="prefill failed"):
        reply_batch([(s, q) for s, q in zip(batched, QUESTIONS)])
    assert calls == [batched[0]]  # the first row failed; the others were never touched
    assert [[m.content for m in s.messages] for s in batched] == before
    assert batched[2]._window  # an untouched session keeps its context


@pytest.mark.parametrize("architecture", ["qwen3", "mistral", "smollm3"])
def test_other_architectures_batch_like_alone(architecture, chat_tokenizer):
    model = tiny_model(architecture, vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    handle = attach_delta_mem(model)
    randomize_memory(handle, seed=2)
    alone, batched = _twins(model, handle, chat_tokenizer, histories=HISTORIES[1:], history_tokens=4)
    expected = [s.reply(q, max_new_tokens=5) for s, q in zip(alone, QUESTIONS)]
    replies = reply_batch([(s, q, {"max_new_tokens": 5}) for s, q in zip(batched, QUESTIONS)])
    assert [r.text for r in replies] == [r.text for r in expected]
    for a, b in zip(alone, batched):
        _assert_same(a, b)
