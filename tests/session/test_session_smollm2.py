"""A session on the real embedded SmolLM2 backbone (marked: slower)."""

from __future__ import annotations

import warnings

import pytest

from deltamem_agents.session import DeltaMemRuntime, SessionConfig, UntrainedMemoryWarning

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
    from deltamem_agents.session import runtime as runtime_module

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
