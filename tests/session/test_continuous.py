"""Continuous batching: rows that join a running batch at any step, and leave it when they end,
get what each session gives alone (text, state, messages, stats), and each is committed the
moment it ends. Twin sessions as in test_batch.py: one twin alone, the other in the batch."""

from __future__ import annotations

import pytest
import torch

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.session import (
    BatchRequest,
    MemorySession,
    SessionConfig,
    SessionError,
)
from deltamem_agents.session.continuous import ContinuousBatch
from tests.session.test_batch import HISTORIES, QUESTIONS, _assert_same, _twins
from tests.tiny_models import tiny_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _drive(batch: ContinuousBatch, schedule: dict[int, list[tuple[str, BatchRequest]]]):
    """Join the rows of ``schedule[step]`` before that step; run until every row ended.
    Returns (text shown per key, replies per key, the step each key ended at, rows per step)."""
    shown: dict[str, str] = {}
    replies: dict[str, object] = {}
    ended_at: dict[str, int] = {}
    sizes: list[int] = []
    step = 0
    with torch.inference_mode():
        while True:
            for key, request in schedule.get(step, []):
                for event in batch.join(key, request):
                    shown[key] = shown.get(key, "") + event.text
            if not len(batch) and step > max(schedule):
                break
            sizes.append(len(batch))
            for event in batch.step():
                shown[event.key] = shown.get(event.key, "") + event.text
                if event.reply is not None:
                    replies[event.key] = event.reply
                    ended_at[event.key] = step
            step += 1
    return shown, replies, ended_at, sizes


@pytest.mark.parametrize(
    "model_and_handle",
    [DeltaMemConfig(), DeltaMemConfig(write_strategy="ssw"), DeltaMemConfig(write_strategy="msw")],
    ids=["tsw", "ssw", "msw"],
    indirect=True,
)
def test_rows_joining_at_later_steps_equal_each_session_alone(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer)
    options = [{"max_new_tokens": 9}, {"max_new_tokens": 4}, {"max_new_tokens": 6}]
    expected = [s.reply(q, **o) for s, q, o in zip(alone, QUESTIONS, options)]
    batch = ContinuousBatch(model, handle, max_rows=4)
    # row 0 alone first, row 1 joins at step 2 and ends before row 0, row 2 joins at step 5
    schedule = {
        0: [("a", BatchRequest(session=batched[0], message=QUESTIONS[0], options=options[0]))],
        2: [("b", BatchRequest(session=batched[1], message=QUESTIONS[1], options=options[1]))],
        5: [("c", BatchRequest(session=batched[2], message=QUESTIONS[2], options=options[2]))],
    }
    shown, replies, ended_at, sizes = _drive(batch, schedule)
    for key, reply, session, twin in zip("abc", expected, batched, alone):
        assert replies[key].text == reply.text
        assert shown[key] == reply.text
        _assert_same(twin, session)
    assert max(sizes) >= 2  # the rows really shared steps
    assert ended_at["b"] < ended_at["a"]  # a row leaves when it ends, not when the batch drains
    assert batch.stats.joins == 3 and batch.stats.max_rows >= 2
    assert len(batch) == 0 and handle.get_state().layers == {}


def test_a_row_is_committed_the_moment_it_ends(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    (sessions,) = _twins(model, handle, chat_tokenizer, copies=1)
    batch = ContinuousBatch(model, handle)
    before = [len(s.messages) for s in sessions]
    with torch.inference_mode():
        batch.join("short", BatchRequest(session=sessions[0], message="Hi", options={"max_new_tokens": 2, "ignore_eos": True}))
        batch.join("long", BatchRequest(session=sessions[1], message="Hello", options={"max_new_tokens": 30, "ignore_eos": True}))
        for _ in range(3):
            batch.step()
    assert len(sessions[0].messages) == before[0] + 2 and sessions[0].messages[-1].role == "assistant"
    assert len(sessions[1].messages) == before[1] + 1  # still decoding: its user message only
    assert "long" in batch and "short" not in batch


def test_rows_whose_window_fills_are_rebuilt_and_still_equal_alone(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer, window=48, history_tokens=10)
    options = {"max_new_tokens": 20, "ignore_eos": True}
    expected = [s.reply(q, **options) for s, q in zip(alone, QUESTIONS)]
    schedule = {i: [(str(i), BatchRequest(session=s, message=q, options=options))] for i, (s, q) in enumerate(zip(batched, QUESTIONS))}
    batch = ContinuousBatch(model, handle)
    _, replies, _, _ = _drive(batch, schedule)
    assert batch.stats.window_rebuilds > 0
    for i, (reply, session, twin) in enumerate(zip(expected, batched, alone)):
        assert replies[str(i)].text == reply.text
        _assert_same(twin, session, atol=1e-4)


def test_a_dropped_row_keeps_nothing_and_the_others_go_on(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer)
    expected = alone[2].reply(QUESTIONS[2], max_new_tokens=8)
    dropped = batched[1]  # a session with a history and a state
    snapshot = ([m.content for m in dropped.messages], {i: t.clone() for i, t in dropped.state.layers.items()})
    batch = ContinuousBatch(model, handle)
    with torch.inference_mode():
        batch.join(0, BatchRequest(session=dropped, message=QUESTIONS[1], options={"max_new_tokens": 20, "ignore_eos": True}))
        batch.join(1, BatchRequest(session=batched[2], message=QUESTIONS[2], options={"max_new_tokens": 8}))
        batch.step()
        batch.step()
        batch.drop(0)
        replies = {}
        while len(batch):
            replies.update({e.key: e.reply for e in batch.step() if e.reply is not None})
    assert replies[1].text == expected.text
    _assert_same(alone[2], batched[2])
    assert [m.content for m in dropped.messages] == snapshot[0]
    for i, tensor in snapshot[1].items():
        torch.testing.assert_close(dropped.state.layers[i], tensor)
    # afterwards it answers as a session reopened from the same messages and state: its
    # context is rebuilt, as after a failed reply
    reopened = MemorySession(
        model, chat_tokenizer, handle, config=SessionConfig(context_window=256), state=alone[1].state,
        messages=list(alone[1].messages),
    )
    assert dropped.reply("Again?", max_new_tokens=3).text == reopened.reply("Again?", max_new_tokens=3).text


def test_tool_turns_join_the_batch_and_hold_back_call_markup(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer, histories=HISTORIES[:2])
    streamed = "".join(alone[0].stream("Weather in Oslo?", tools=[WEATHER], tool_choice="get_weather", max_new_tokens=24))
    expected_tool = alone[0].last_reply
    expected_plain = alone[1].reply(QUESTIONS[1], max_new_tokens=5)
    schedule = {
        0: [("tool", BatchRequest(session=batched[0], message="Weather in Oslo?", tools=[WEATHER], tool_choice="get_weather", options={"max_new_tokens": 24}))],
        1: [("plain", BatchRequest(session=batched[1], message=QUESTIONS[1], options={"max_new_tokens": 5}))],
    }
    shown, replies, _, sizes = _drive(ContinuousBatch(model, handle), schedule)
    assert max(sizes) == 2
    assert replies["tool"].raw_text == expected_tool.raw_text
    assert replies["tool"].tool_calls == expected_tool.tool_calls
    assert shown.get("tool", "") == streamed  # the same visible text as MemorySession.stream
    assert replies["plain"].text == expected_plain.text
    _assert_same(alone[0], batched[0])


def test_bad_rows_are_refused_before_they_touch_anything(model_and_handle, chat_tokenizer):
    model, handle = model_and_handle
    session = MemorySession(model, chat_tokenizer, handle, config=SessionConfig(context_window=256))
    batch = ContinuousBatch(model, handle, max_rows=1)
    with torch.inference_mode():
        with pytest.raises(SessionError, match="nothing to answer"):
            batch.join("x", BatchRequest(session=session, message=None))
        batch.join("x", BatchRequest(session=session, message="Hi", options={"max_new_tokens": 2}))
        with pytest.raises(SessionError, match="full"):
            batch.join("y", BatchRequest(session=MemorySession(model, chat_tokenizer, handle), message="Hi"))
        with pytest.raises(SessionError, match="already"):
            batch.join("x", BatchRequest(session=session, message="Hi"))
    other = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    other_handle = attach_delta_mem(other, DeltaMemConfig())
    with pytest.raises(SessionError, match="another model"):
        ContinuousBatch(model, handle).join("z", BatchRequest(session=MemorySession(other, chat_tokenizer, other_handle), message="Hi"))
    assert len(session.messages) == 1  # only the admitted row's user message


def test_rows_joining_together_are_prefilled_in_one_forward_and_equal_alone(model_and_handle, chat_tokenizer):
    """Warm sessions with contexts of different lengths, new messages of different lengths: one
    batched prefill forward (padding masked out of attention and memory), the same answers."""
    model, handle = model_and_handle
    histories = [["Hi."], ["My train leaves at nine and goes to Lisbon.", "Then Porto."], ["I collect blue teapots."]]
    alone, batched = _twins(model, handle, chat_tokenizer, histories=histories)
    questions = ["Where?", "And when does the train from Lisbon to Porto leave, exactly?", QUESTIONS[0]]
    options = {"max_new_tokens": 6, "ignore_eos": True}
    expected = [s.reply(q, **options) for s, q in zip(alone, questions)]
    batch = ContinuousBatch(model, handle)
    schedule = {0: [(str(i), BatchRequest(session=s, message=q, options=options)) for i, (s, q) in enumerate(zip(batched, questions))]}
    _, replies, _, _ = _drive(batch, schedule)
    assert batch.stats.prefill_forwards == 1 and batch.stats.joins == 3
    for i, (reply, session, twin) in enumerate(zip(expected, batched, alone)):
        assert replies[str(i)].text == reply.text
        _assert_same(twin, session, atol=1e-4)
    assert [r.stats.prefill_tokens for r in replies.values()] == [r.stats.prefill_tokens for r in expected]


def test_rows_that_need_their_own_prefill_still_join(model_and_handle, chat_tokenizer):
    """A new session (no context yet) and a turn with a response prefix are prefilled alone."""
    model, handle = model_and_handle
    alone, batched = _twins(model, handle, chat_tokenizer, histories=HISTORIES[:2])
    options = [{"max_new_tokens": 4}, {"max_new_tokens": 4, "response_prefix": "Sure:"}]
    expected = [s.reply("Tell me.", **o) for s, o in zip(alone, options)]
    batch = ContinuousBatch(model, handle)
    schedule = {0: [(str(i), BatchRequest(session=s, message="Tell me.", options=o)) for i, (s, o) in enumerate(zip(batched, options))]}
    shown, replies, _, _ = _drive(batch, schedule)
    assert batch.stats.prefill_forwards == 0
    assert [replies[str(i)].text for i in range(2)] == [r.text for r in expected]
    assert shown["1"].startswith("Sure:")
