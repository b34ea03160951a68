"""Fast ingest (session/feeding.py): a long input is fed in blocks, never re-prefilling a token.

On a tiny random Llama with the real SmolLM2 tokenizer, a 64-token window and 16-token chunks, so
a few hundred tokens cross many window fills. What is checked exactly: the block plan, that every
token goes through the model once, the state against an independent token-by-token feed of the
same blocks, the window and text bookkeeping a following reply and ingest rely on, abort, progress.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from deltamem_agents.progress import use_default_reporter
from deltamem_agents.session import MemorySession, SessionConfig
from deltamem_agents.session.chat import template_view
from deltamem_agents.session.feeding import (
    PROGRESS_MIN_TOKENS,
    keep_tokens,
    next_forward,
)
from tests.tiny_models import tiny_runtime

WINDOW, CHUNK = 64, 16
TEXT = " ".join(f"Fact {i}: the {c} box holds {i * 7} marbles." for i, c in enumerate(["red", "blue", "green"] * 8))


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store", window=WINDOW, seed=3)


def _session(runtime, mode="blocks", **overrides):
    config = SessionConfig(context_window=WINDOW, prefill_chunk=CHUNK, ingest_mode=mode, **overrides)
    return MemorySession(runtime.model, runtime.tokenizer, runtime.handle, config=config, lock=runtime.lock)


def _spy(session):
    """Record every forward: (tokens, whether the handle was writing)."""
    calls, real = [], session._forward_window

    def forward(ids, segments, stats):
        calls.append((len(ids), session.handle._settings.write))
        return real(ids, segments, stats)

    session._forward_window = forward
    return calls


def _all_ids(session):
    encoded, _ = session.encoder.encode_delta("", [template_view(m) for m in session.messages], 0, next_segment=0)
    return encoded.ids


@pytest.mark.parametrize("held", [0, 10, 40, 64])
@pytest.mark.parametrize("total", [1, 20, 31, 32, 33, 63, 64, 65, 100, 129, 300])
def test_the_block_plan_feeds_each_token_once_and_leaves_a_full_kept_share(held, total):
    config = SessionConfig(context_window=WINDOW, prefill_chunk=CHUNK)
    keep = keep_tokens(config)
    window, fed, shrinks = held, 0, 0
    while fed < total:
        action, n = next_forward(window, total - fed, total - fed, config, blocks=True)
        if action == "drop":
            window = 0
        elif action == "shrink":
            window, shrinks = keep, shrinks + 1
        assert 1 <= n <= CHUNK and window + n <= WINDOW
        window, fed = window + n, fed + n
    assert fed == total
    if total >= keep:  # enough new tokens: no rebuild, and the last block holds at least the kept share
        assert shrinks == 0 and window >= keep
    else:  # a short rest on a nearly full window slides, as before: one rebuild at most
        assert shrinks <= 1 and window >= min(keep, held + total)


def test_a_long_ingest_forwards_every_token_once_writing(runtime):
    session = _session(runtime)
    calls = _spy(session)
    stats = session.ingest(TEXT)
    assert stats.prefill_tokens > 5 * WINDOW
    assert sum(n for n, _ in calls) == stats.prefill_tokens == stats.tokens_written  # nothing re-prefilled
    assert all(writing for _, writing in calls) and max(n for n, _ in calls) <= CHUNK
    assert stats.window_rebuilt and keep_tokens(session.config) <= stats.context_tokens <= WINDOW
    ids = _all_ids(session)
    assert session.context_ids == ids[-len(session.context_ids) :]  # the most recent tokens, in order
    assert session._cache.get_seq_length() == len(session.context_ids)


def test_sliding_mode_is_the_old_behaviour(runtime):
    session = _session(runtime, mode="sliding")
    calls = _spy(session)
    stats = session.ingest(TEXT)
    rebuilt = [n for n, writing in calls if not writing]
    assert rebuilt and all(n == keep_tokens(session.config) for n in rebuilt)
    assert sum(n for n, writing in calls if writing) == stats.tokens_written == stats.prefill_tokens


def test_the_state_is_a_token_by_token_feed_of_the_same_blocks(runtime):
    """Within a block the chunked write equals feeding one token at a time on one KV cache; across
    blocks only the state carries over. An independent replay of that layout gives the same state."""
    session = _session(runtime)
    calls = _spy(session)
    session.ingest(TEXT)
    ids, model, handle = _all_ids(session), runtime.model, runtime.handle
    # the blocks, from the plan; the session fed exactly the plan's chunks
    blocks, sizes, window, fed = [], [], 0, 0
    while fed < len(ids):
        action, n = next_forward(window, len(ids) - fed, len(ids) - fed, session.config, blocks=True)
        if action == "drop" or not blocks:
            blocks.append([])
            window = 0
        blocks[-1] += ids[fed : fed + n]
        sizes.append(n)
        window, fed = window + n, fed + n
    assert sizes == [n for n, _ in calls]
    assert len(blocks) > 3 and sum(map(len, blocks)) == len(ids) and max(map(len, blocks)) == WINDOW
    handle.reset_state()
    with torch.inference_mode(), handle.writing(True):
        for block in blocks:
            cache = DynamicCache(config=model.config)
            for token in block:
                out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
                cache = out.past_key_values
        replayed = handle.get_state()
    handle.reset_state()
    for index, tensor in session.state.layers.items():
        torch.testing.assert_close(tensor, replayed.layers[index], atol=1e-5, rtol=1e-4)
    sliding = _session(runtime, mode="sliding")
    sliding.ingest(TEXT)
    assert any(not torch.allclose(sliding.state.layers[i], t, atol=1e-4) for i, t in session.state.layers.items())


def test_a_reply_and_another_ingest_after_a_long_ingest(runtime):
    session = _session(runtime)
    session.ingest(TEXT + " The last fact: the key is under the mat.")
    context = session.tokenizer.decode(session.context_ids)
    assert "under the mat" in context
    before = session.context_ids
    reply = session.reply("Where is the key?", max_new_tokens=4)
    grown = len(before) + reply.stats.prefill_tokens + reply.stats.decode_tokens
    if grown <= WINDOW:  # the reply extends the context the ingest left
        assert not reply.stats.window_rebuilt and reply.stats.context_tokens == grown
        assert session.context_ids[: len(before)] == before
    else:  # or slides it as any reply does
        assert reply.stats.window_rebuilt and reply.stats.context_tokens <= WINDOW
    second = session.ingest(TEXT)
    assert [m.role for m in session.messages] == ["user", "user", "assistant", "user"]
    assert second.tokens_written == second.prefill_tokens
    assert session.context_ids == _all_ids(session)[-len(session.context_ids) :]
    # the text rendered so far is the whole conversation's, as a resumed session renders it
    views = [template_view(m) for m in session.messages]
    assert session._rendered == session.encoder.encode_delta("", views, 0, next_segment=0)[0].text


def test_an_aborted_ingest_leaves_the_session_as_before(runtime):
    session = _session(runtime)
    session.reply("Hello, I am Ada.", max_new_tokens=3)
    state, messages, written = session.state.clone(), list(session.messages), session.tokens_written
    real, count = session._forward_window, [0]

    def failing(ids, segments, stats):
        count[0] += 1
        if count[0] == 6:  # past a few window drops
            raise RuntimeError("boom")
        return real(ids, segments, stats)

    session._forward_window = failing
    with pytest.raises(RuntimeError, match="boom"):
        session.ingest(TEXT)
    assert count[0] == 6
    session._forward_window = real
    assert session.state.equal(state) and session.messages == messages and session.tokens_written == written
    assert session.context_ids == []  # the cache held the aborted tokens: rebuilt on the next call
    # the next calls work as after any failed call: the context is rebuilt from the messages
    again = session.ingest(TEXT)
    assert again.window_rebuilt and again.tokens_written == again.prefill_tokens
    assert session.context_ids == _all_ids(session)[-len(session.context_ids) :]
    assert session.reply("What is my name?", max_new_tokens=4).text
    assert len(session.messages) == len(messages) + 3


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, description, total=None, *, completed=0):
        self.events.append(("start", total))

    def advance(self, amount=1):
        self.events.append(("advance", amount))

    def set_description(self, description):
        pass

    def set_status(self, status):
        pass

    def note(self, text):
        pass

    def close(self):
        self.events.append(("close", None))


def test_progress_counts_the_tokens_fed(runtime):
    session, bar = _session(runtime), Recorder()
    stats = session.ingest(TEXT, progress=bar)
    assert bar.events[0] == ("start", stats.prefill_tokens) and bar.events[-1] == ("close", None)
    assert sum(amount for kind, amount in bar.events if kind == "advance") == stats.prefill_tokens


def test_progress_true_shows_a_bar_only_for_long_inputs(runtime):
    bars = []

    def factory():
        bars.append(Recorder())
        return bars[-1]

    with use_default_reporter(factory):
        short = _session(runtime).ingest(TEXT, progress=True)
        assert short.prefill_tokens < PROGRESS_MIN_TOKENS and not bars
        long = _session(runtime).ingest(TEXT * (PROGRESS_MIN_TOKENS // short.prefill_tokens + 2), progress=True)
    assert long.prefill_tokens >= PROGRESS_MIN_TOKENS and len(bars) == 1
    assert sum(a for kind, a in bars[0].events if kind == "advance") == long.prefill_tokens


def test_hybrid_memory_passes_progress_to_the_session(runtime):
    from deltamem_agents.memory import HybridMemory

    memory, bar = HybridMemory(runtime, textlog=None), Recorder()
    written = memory.ingest(TEXT, session_id="long", progress=bar)
    assert bar.events[0] == ("start", written) and bar.events[-1] == ("close", None)
    assert runtime.session("long").last_stats.window_rebuilt


@pytest.mark.parametrize("strategy", ["ssw", "msw"])
def test_blocks_work_with_every_write_strategy(chat_tokenizer, tmp_path, strategy):
    from deltamem_agents import DeltaMemConfig

    runtime = tiny_runtime(chat_tokenizer, tmp_path / "store", window=WINDOW, seed=3,
                           config=DeltaMemConfig(write_strategy=strategy))
    session, sliding = _session(runtime), _session(runtime, mode="sliding")
    calls = _spy(session)
    messages = [{"role": "user", "content": TEXT}, {"role": "assistant", "content": "Noted. " + TEXT[:200]}]
    stats = session.ingest(messages)
    sliding.ingest(messages)
    assert sum(n for n, _ in calls) == stats.prefill_tokens and all(writing for _, writing in calls)
    assert session._next_segment == sliding._next_segment == 2 and session._written == 2
    assert session.state.layers.keys() == sliding.state.layers.keys()
    assert session.reply("How many marbles?", max_new_tokens=3).text is not None
