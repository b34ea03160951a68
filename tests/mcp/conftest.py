"""A HybridMemory on the tiny random model, with a real Chroma log embedded by hashing (fast)."""

from __future__ import annotations

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import AlwaysRetrieve, MemoryRouter
from tests.memory.hashing import HashingEmbedding
from tests.tiny_models import tiny_runtime


@pytest.fixture
def textlog(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"), embedding_function=HashingEmbedding())
    yield log
    log.close()


@pytest.fixture
def hybrid(chat_tokenizer, tmp_path, textlog):
    runtime = tiny_runtime(chat_tokenizer, tmp_path / "store")
    return HybridMemory(runtime, textlog, MemoryRouter(policies=[AlwaysRetrieve()]))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
