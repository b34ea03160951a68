"""Fixtures: a tiny random Llama behind a real `DeltaMemRuntime`, a real Chroma text log, and
`script`, which makes the tiny model say chosen replies (tool calls included) token by token."""

from __future__ import annotations

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.session import session as session_module
from tests.integrations.llamaindex.helpers import Script
from tests.tiny_models import tiny_runtime


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store")


@pytest.fixture
def textlog(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"))
    yield log
    log.close()


@pytest.fixture
def hybrid(runtime, textlog):
    """State + log; the router never retrieves, so contexts (and states) are reproducible."""
    return HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))


@pytest.fixture
def script(chat_tokenizer, monkeypatch):
    scripted = Script(chat_tokenizer)
    monkeypatch.setattr(session_module, "sample_token", scripted)
    return scripted
