"""Fixtures for the LangChain integration: tiny random backbones that can be told what to say.

A tiny random Llama says random tokens. `ScriptedBackbone` makes it say the next scripted reply
instead, token by token: it watches the model's forward passes and, after the generation prompt,
puts all the probability on the next token of the reply. Everything else (the session, δ-mem
writes, tool-call parsing, streaming, the text log, the store) runs for real.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import pytest_socket
import torch

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.session import (
    DeltaMemRuntime,
)
from tests.tiny_models import tiny_runtime as build_tiny_runtime


class ScriptedBackbone:
    """Makes a model answer each turn with the next of ``say(...)``'s replies."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prompt = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.replies: list[str] = []
        self.turns = 0  # replies started
        self._ids: list[int] | None = None
        self._position = 0
        model.register_forward_hook(self._hook, with_kwargs=True)

    def say(self, *replies: str) -> ScriptedBackbone:
        self.replies.extend(replies)
        return self

    def _next(self, ids: list[int]) -> int | None:
        if len(ids) >= len(self.prompt) and ids[-len(self.prompt) :] == self.prompt and self.replies:
            self._text = self.replies.pop(0)
            self._ids = self.tokenizer.encode(self._text, add_special_tokens=False) + [self.end]
            self._position = 0
            self.turns += 1
            return self._ids[0]
        if self._ids is not None and self._position == 0 and (len(ids) > 1 or ids[0] != self._ids[0]):
            # the session fed a forced start of the answer (response_prefix, a required tool):
            # the script goes on after where that start appears in it (prose before is dropped)
            fed = self.tokenizer.decode(ids)
            at = self._text.find(fed)
            if at >= 0:
                rest = self.tokenizer.encode(self._text[at + len(fed) :], add_special_tokens=False) + [self.end]
                self._ids, self._position = list(ids) + rest, len(ids)
                return self._ids[self._position]
        if self._ids is not None and len(ids) == 1 and self._position + 1 < len(self._ids):
            if ids[0] == self._ids[self._position]:
                self._position += 1
                return self._ids[self._position]
        return None

    def _hook(self, module, args, kwargs, output):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return output
        token = self._next(input_ids[0].tolist())
        if token is not None:
            last = output.logits[:, -1, :]
            last.fill_(-1e4)
            last[:, token] = 1e4
        return output


@pytest.fixture(autouse=True)
def _network_off(request):
    """Tests on tiny models run with the network off (LangChain partner packages run their unit
    tests with ``--disable-socket``): everything here, Chroma and the embeddings included, is
    local. Unix sockets stay allowed, since asyncio's event loop needs a socket pair."""
    if request.node.get_closest_marker("smollm2"):
        yield
        return
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()


@pytest.fixture
def tiny_runtime(chat_tokenizer, tmp_path) -> DeltaMemRuntime:
    return build_tiny_runtime(chat_tokenizer, tmp_path / "store")


@pytest.fixture
def script(tiny_runtime, chat_tokenizer) -> ScriptedBackbone:
    return ScriptedBackbone(tiny_runtime.model, chat_tokenizer)


@pytest.fixture
def textlog(tmp_path: Path):
    log = TextLog(TextLogConfig(path=tmp_path / "textlog"))
    yield log
    log.close()


@pytest.fixture
def memory(tiny_runtime, textlog) -> HybridMemory:
    """Hybrid memory on the tiny model; the router never retrieves (so contexts stay short)."""
    return HybridMemory(tiny_runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """Run the coroutine tests here (ours and langchain-tests') on pytest-asyncio without
    needing ``asyncio_mode = "auto"`` for the whole repository."""
    outcome = yield
    if not inspect.iscoroutinefunction(obj):
        return
    result = outcome.get_result()
    for node in result if isinstance(result, list) else [result]:
        if isinstance(node, pytest.Function):
            node.add_marker(pytest.mark.asyncio)
