"""Benchmarks run on a tiny random Llama saved as a backbone folder (with SmolLM2's tokenizer and
chat template), so child processes can load it by path like any other backbone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import tiny_model


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, chat_tokenizer) -> str:
    folder: Path = tmp_path_factory.mktemp("tiny-backbone")
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=16384)
    model.config._attn_implementation = "sdpa"
    model.save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return str(folder)
