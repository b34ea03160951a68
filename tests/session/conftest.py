"""Fixtures shared by the batching tests (test_batch.py, test_continuous.py)."""

from __future__ import annotations

import pytest

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from tests.tiny_models import randomize_memory, tiny_model


@pytest.fixture
def model_and_handle(chat_tokenizer, request):
    """A tiny llama with δ-mem attached (``request.param``: its `DeltaMemConfig`), memory randomised."""
    config = getattr(request, "param", None) or DeltaMemConfig()
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    handle = attach_delta_mem(model, config)
    randomize_memory(handle, seed=1)
    return model, handle
