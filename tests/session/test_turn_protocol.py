"""The turn protocol (`MemorySession.begin_turn`, `Turn`, `ReplyDecoder`) that a session alone and
`SessionBatch` share: begin changes nothing, commit equals `reply`, abort restores what prefill
saved, and a batch that fails leaves every session committed or as before, never in between."""

from __future__ import annotations

import pytest
import torch

from deltamem_agents import attach_delta_mem
from deltamem_agents.session import MemorySession, SessionBatch, SessionConfig, Turn, reply_batch
from deltamem_agents.session import batch as batch_module
from deltamem_agents.session.options import GenerationOptions
from deltamem_agents.session.sampling import ReplyDecoder
from tests.tiny_models import randomize_memory, tiny_model

QUESTIONS = ["What do I collect?", "Where does the train go?", "And when do I come back home?"]


@pytest.fixture
def model_and_handle(chat_tokenizer):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    handle = attach_delta_mem(model)
    randomize_memory(handle, seed=1)
    return model, handle


def _sessions(model, handle, tokenizer, count=2, window=256):
    """``count`` sessions with one equal exchange behind them (equal caches and states)."""
    sessions = [MemorySession(model, tokenizer, handle, config=SessionConfig(context_window=window)) for _ in range(count)]
    for session in sessions:
        session.reply("Hello, I am Ada and I collect blue teapots.", max_new_tokens=5)
    return sessions


def _picture(session: MemorySession) -> tuple:
    """Everything a turn may change, as plain values."""
    state = {i: t.clone() for i, t in session.state.layers.items()} if session.state is not None else None
    return [(m.role, m.content) for m in session.messages], state, session.context_ids, session.tokens_written


def _assert_picture(session: MemorySession, picture: tuple, *, context: bool = True) -> None:
    messages, state, context_ids, written = picture
    assert [(m.role, m.content) for m in session.messages] == messages
    assert session.tokens_written == written
    assert session.state.layers.keys() == state.keys()
    for i, tensor in state.items():
        assert torch.equal(session.state.layers[i], tensor)
    if context:
        assert session.context_ids == context_ids


def _resumed(session: MemorySession) -> MemorySession:
    """The session as reloaded from a store: same messages and state, context to rebuild."""
    resumed = MemorySession(session.model, session.tokenizer, session.handle, config=session.config,
                            state=session.state, messages=list(session.messages))
    resumed.tokens_written = session.tokens_written
    return resumed


def _run_alone(turn: Turn) -> str:
    with turn.session.lock, torch.inference_mode():
        logits = turn.prefill()
        return "".join(turn.decode_alone(logits))


def test_begin_changes_nothing_and_an_unstarted_turn_aborts_as_a_no_op(model_and_handle, chat_tokenizer):
    (session,) = _sessions(*model_and_handle, chat_tokenizer, count=1)
    before = _picture(session)
    turn = session.begin_turn("Where do I land?", options={"max_new_tokens": 4})
    assert isinstance(turn, Turn) and not turn.started and not turn.finished
    assert turn.gen.max_new_tokens == 4 and [m.content for m in turn.new] == ["Where do I land?"]
    turn.abort()
    _assert_picture(session, before)  # the context is kept: nothing was fed


def test_begin_prefill_decode_commit_equals_reply(model_and_handle, chat_tokenizer):
    alone, stepped = _sessions(*model_and_handle, chat_tokenizer)
    expected = alone.reply(QUESTIONS[0], max_new_tokens=7)
    turn = stepped.begin_turn(QUESTIONS[0], options={"max_new_tokens": 7})
    streamed = _run_alone(turn)
    reply = turn.commit()
    assert streamed == reply.text == expected.text and reply.finish_reason == expected.finish_reason
    assert stepped.last_reply is reply and stepped.last_stats is turn.stats
    _assert_picture(stepped, _picture(alone))
    for name in ("tokens_written", "context_tokens", "prefill_tokens", "decode_tokens"):
        assert getattr(reply.stats, name) == getattr(expected.stats, name), name
    # the turns that follow agree too: counters and template text were advanced alike
    assert stepped.reply("Tell me more.", max_new_tokens=5).text == alone.reply("Tell me more.", max_new_tokens=5).text


def test_abort_after_prefill_restores_what_prefill_saved(model_and_handle, chat_tokenizer):
    (aborted,) = _sessions(*model_and_handle, chat_tokenizer, count=1)
    before = _picture(aborted)
    turn = aborted.begin_turn("An interrupted question.", options={"max_new_tokens": 20, "ignore_eos": True})
    with aborted.lock, torch.inference_mode():
        logits = turn.prefill()
        for _ in range(3):
            turn.choose(logits)  # decoding under way (the tokens need not be fed for this)
    turn.abort()
    _assert_picture(aborted, before, context=False)
    assert aborted.context_ids == []  # the KV cache may hold the turn's tokens: rebuilt on the next call
    assert aborted.last_stats is turn.stats and turn.stats.decode_tokens == 3
    turn.abort()  # ended: a second abort does nothing
    # the next turn is that of the session reloaded as it was: nothing of the aborted turn is left
    twin = _resumed(aborted)
    after, expected = aborted.reply("Where am I?", max_new_tokens=4), twin.reply("Where am I?", max_new_tokens=4)
    assert after.stats.window_rebuilt and after.text == expected.text
    assert after.stats.model_dump(exclude={"prefill_ms", "decode_ms"}) == expected.stats.model_dump(exclude={"prefill_ms", "decode_ms"})
    _assert_picture(aborted, _picture(twin))


def test_a_closed_stream_does_not_swallow_the_next_message(model_and_handle, chat_tokenizer):
    """Before the protocol, an aborted stream left the written-message counter past the end, and
    the next user message was shown to the model but never fed with writing on."""
    (aborted,) = _sessions(*model_and_handle, chat_tokenizer, count=1)
    stream = aborted.stream("Interrupted turn.", max_new_tokens=20)
    next(stream)
    stream.close()
    twin = _resumed(aborted)
    after, expected = aborted.reply("Where am I?", max_new_tokens=5), twin.reply("Where am I?", max_new_tokens=5)
    assert after.stats.prefill_tokens == expected.stats.prefill_tokens > 5  # the message was fed
    assert after.stats.tokens_written == expected.stats.tokens_written and after.text == expected.text
    _assert_picture(aborted, _picture(twin))


def test_a_probe_turn_commits_a_reply_and_leaves_the_session_as_it_was(model_and_handle, chat_tokenizer):
    (session,) = _sessions(*model_and_handle, chat_tokenizer, count=1)
    before = _picture(session)
    turn = session.begin_turn("Just checking.", write=False, options={"max_new_tokens": 4})
    _run_alone(turn)
    reply = turn.commit()
    assert reply.stats.wrote is False and reply.stats.tokens_written == 0
    _assert_picture(session, before)  # the context too: the probe's tokens are cropped off


def test_the_protocol_refuses_steps_out_of_order(model_and_handle, chat_tokenizer):
    (session,) = _sessions(*model_and_handle, chat_tokenizer, count=1)
    turn = session.begin_turn("Hi.", options={"max_new_tokens": 2})
    with pytest.raises(RuntimeError, match="finished reply"):
        turn.commit()
    _run_alone(turn)
    with pytest.raises(RuntimeError, match="prefilled once"):
        turn.prefill()
    with pytest.raises(RuntimeError, match="take_cache"):
        turn.commit(cache=object())  # type: ignore[arg-type]
    turn.commit()
    with pytest.raises(RuntimeError, match="not yet committed"):
        turn.commit()
    messages = list(session.messages)
    turn.abort()  # committed: abort does nothing
    assert session.messages == messages


def _decode_scripted(tokenizer, ids: list[int], gen: GenerationOptions) -> tuple[ReplyDecoder, list[str], int]:
    """Run a decoder whose sampler plays ``ids``: the decoder, the texts released, tokens fed."""
    script = iter(ids)
    decoder = ReplyDecoder(tokenizer, gen, set(), torch.device("cpu"), sampler=lambda *_: next(script))
    released, fed = [], 0
    while not decoder.finished:
        text, token = decoder.choose(torch.zeros(1, 4))
        released.append(text)
        if token is not None:
            fed += 1
            released.append(decoder.fed())
    return decoder, released, fed


def test_the_decoder_holds_back_a_possible_stop_string_and_cuts_at_it(chat_tokenizer):
    ids = chat_tokenizer("Hello world STOP more words", add_special_tokens=False)["input_ids"]
    decoder, released, fed = _decode_scripted(chat_tokenizer, ids, GenerationOptions(max_new_tokens=20, stop=("STOP",)))
    assert decoder.finish_reason == "stop" and decoder.text == "Hello world "
    assert "".join(released) == decoder.text
    so_far = ["".join(released[: i + 1]) for i in range(len(released))]
    assert not any(t.endswith(("S", "ST", "STO")) for t in so_far)  # a possible stop string is held back
    assert fed == len(decoder.tokens) - 1  # the token that completed the stop string is not fed


def test_the_decoder_ends_at_max_new_tokens_releasing_what_it_held(chat_tokenizer):
    ids = chat_tokenizer("one two three", add_special_tokens=False)["input_ids"]
    gen = GenerationOptions(max_new_tokens=len(ids), stop=("three!",))
    decoder, released, fed = _decode_scripted(chat_tokenizer, ids, gen)
    assert decoder.finish_reason == "length" and fed == len(ids)
    assert released[-1].endswith("three")  # held back as a possible "three!" until the reply ended
    assert "".join(released) == decoder.text == "one two three"


def test_a_batch_that_fails_while_decoding_leaves_every_session_as_a_failed_reply_would(model_and_handle, chat_tokenizer, monkeypatch):
    model, handle = model_and_handle
    batched = _sessions(model, handle, chat_tokenizer, count=3)
    alone = _sessions(model, handle, chat_tokenizer, count=3)
    pictures = [_picture(s) for s in batched]
    steps = []
    original = batch_module._PaddedBatch.step

    def failing_step(self):
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("device lost")
        return original(self)

    monkeypatch.setattr(batch_module._PaddedBatch, "step", failing_step)
    with pytest.raises(RuntimeError, match="device lost"):
        reply_batch([(s, q, {"max_new_tokens": 8, "ignore_eos": True}) for s, q in zip(batched, QUESTIONS)])
    monkeypatch.setattr(batch_module._PaddedBatch, "step", original)
    for session, picture in zip(batched, pictures):
        _assert_picture(session, picture, context=False)
    # each session is now exactly a session whose own reply was interrupted
    for session, question in zip(alone, QUESTIONS):
        stream = session.stream(question, max_new_tokens=8, ignore_eos=True)
        next(stream, None)
        stream.close()
    for a, b in zip(alone, batched):
        assert b.reply("Again?", max_new_tokens=5).text == a.reply("Again?", max_new_tokens=5).text
        _assert_picture(b, _picture(a))


def test_a_row_that_fails_to_commit_leaves_the_rows_committed_before_it(model_and_handle, chat_tokenizer, monkeypatch):
    model, handle = model_and_handle
    batched = _sessions(model, handle, chat_tokenizer, count=3)
    pictures = [_picture(s) for s in batched]
    original = Turn.commit

    def commit(self, **kwargs):
        if self.session is batched[1]:
            raise RuntimeError("commit failed")
        return original(self, **kwargs)

    monkeypatch.setattr(Turn, "commit", commit)
    batch = SessionBatch([(s, q, {"max_new_tokens": 4}) for s, q in zip(batched, QUESTIONS)])
    with pytest.raises(RuntimeError, match="commit failed"):
        batch.run()
    first = batched[0]  # committed before the failure: its reply stays, whole
    assert [m.content for m in first.messages[-2:]] == [QUESTIONS[0], first.last_reply.text]
    assert first.tokens_written > pictures[0][3] and first.context_ids
    for session, picture in zip(batched[1:], pictures[1:]):  # the failed row, and the row never committed
        _assert_picture(session, picture, context=False)
