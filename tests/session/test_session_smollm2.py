"""A session on the real embedded SmolLM2 backbone (marked: slower)."""

from __future__ import annotations

import warnings

import pytest

from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning
from deltamem_agents.session import SessionConfig

pytestmark = pytest.mark.smollm2


def test_a_real_conversation_persists_and_resumes(smollm2, tmp_path):
    model, tokenizer = smollm2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(model=model, tokenizer=tokenizer, adapter=None, store=tmp_path,
                                  session_config=SessionConfig(context_window=512))
    try:
        session = runtime.session("real")
        first = session.reply("My favourite drink is cardamom tea. Reply with one short sentence.", max_new_tokens=24)
        assert first.text.strip() and first.stats.decode_tokens > 0
        runtime.save(session)
        runtime.close("real")
        resumed = runtime.session("real")
        answer = resumed.reply("What is my favourite drink?", max_new_tokens=24)
        assert answer.stats.window_rebuilt and answer.text.strip()
        # The fact is back in the attention context after the resume (restored from the log).
        assert "cardamom" in tokenizer.decode(resumed._window)
        assert runtime.save(resumed).turn_count == 2
    finally:
        runtime.handle.detach()


def test_shared_runtimes_are_loaded_once_per_configuration(tmp_path):
    from deltamem_agents import runtime as runtime_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        first = DeltaMemRuntime.shared(store=tmp_path / "a", device="cpu", dtype="float32")
        again = DeltaMemRuntime.shared(store=str(tmp_path / "a"), device="cpu", dtype="float32")
        other = DeltaMemRuntime.shared(store=tmp_path / "b", device="cpu", dtype="float32")
    try:
        assert first is again and other is not first
        assert first.model is not other.model  # δ-mem attaches once per model object
    finally:
        for key in [k for k, v in runtime_module._SHARED.items() if v in (first, other)]:
            runtime_module._SHARED.pop(key).handle.detach()


def _looping(text: str) -> bool:
    """A reply that repeats itself: a non-empty line three times, or fewer than half its words distinct."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    words = text.split()
    return any(lines.count(line) >= 3 for line in lines) or (len(words) >= 8 and len(set(words)) < len(words) / 2)


def test_looping_replies_are_recognised():
    assert _looping("Ada,\n\nAda,\n\nAda,\n\nAda,")
    assert _looping("tea tea tea tea tea tea tea tea tea")
    assert not _looping("Ada, I'm glad you enjoy cardamom tea. It's a popular drink among those who love cardamom.")


def test_the_shipped_adapter_keeps_the_demo_replies_fluent(smollm2, tmp_path):
    """The demo's two turns with the adapter shipped for SmolLM2 (its state written by the whole
    conversation): replies stay fluent and use what the user said. The evaluation scores short
    answers only, so an adapter can pass it and still loop in free chat (one candidate did)."""
    from deltamem_agents.cli.demo import FIRST, SECOND, SYSTEM
    from deltamem_agents.model.backbone import DEFAULT_BACKBONE

    model, tokenizer = smollm2
    runtime = DeltaMemRuntime(DEFAULT_BACKBONE, model=model, tokenizer=tokenizer, adapter="auto", store=tmp_path,
                              session_config=SessionConfig(system_prompt=SYSTEM))
    try:
        assert runtime.adapter_path is not None  # the shipped adapter, not an untrained one
        session = runtime.session("demo")
        first = session.reply(FIRST, max_new_tokens=40).text
        second = session.reply(SECOND, max_new_tokens=40).text
        assert not _looping(first) and not _looping(second), (first, second)
        assert "cardamom" in second.lower(), second
    finally:
        runtime.handle.detach()
