import pytest

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.eval.perplexity import generic_passages, perplexity_check
from tests.tiny_models import randomize_memory, tiny_model


def test_generic_passages_are_prose():
    passages = generic_passages(4)
    assert len(passages) == 4
    assert all(len(p) >= 1500 and ">>>" not in p for p in passages)


def test_an_adapter_that_changes_nothing_keeps_the_perplexity(chat_tokenizer):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())  # zero delta heads
    result = perplexity_check(model, chat_tokenizer, handle, passages=2, tokens=64)
    assert result["ratio"] == pytest.approx(1.0, abs=1e-6) and result["tokens"] == 2 * 63
    randomize_memory(handle, delta_std=1.0)
    changed = perplexity_check(model, chat_tokenizer, handle, passages=2, tokens=64)
    assert changed["bare"] == pytest.approx(result["bare"])
    assert changed["ratio"] != pytest.approx(1.0, abs=1e-6)
