"""Server fixtures: a tiny random Llama with the real SmolLM2 tokenizer, apps on it, and clients
that talk to an app in-process (httpx ``ASGITransport``) or over loopback (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.server import ServerSettings, close_app, create_app
from deltamem_agents.session import (
    DeltaMemRuntime,
    DirectorySessionStore,
)
from tests.tiny_models import tiny_runtime

API_KEYS = {"key-alice-0123456789abcdef": "alice", "key-bob-0123456789abcdefgh": "bob"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two
    threads fighting other processes (and the server's worker threads) for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_runtime(tokenizer, store: Path) -> DeltaMemRuntime:
    return tiny_runtime(tokenizer, DirectorySessionStore(store, lock_timeout=30))


@pytest.fixture
def runtime(chat_tokenizer, tmp_path) -> DeltaMemRuntime:
    return make_runtime(chat_tokenizer, tmp_path / "store")


def settings(**fields) -> ServerSettings:
    """Test settings: small limits so they are easy to cross, greedy short answers."""
    defaults = dict(state_only=True, default_max_tokens=4, max_tokens=64, max_request_bytes=64_000, max_ingest_chars=4_000)
    return ServerSettings(**{**defaults, **fields})


@pytest.fixture
def make_app(runtime, tmp_path):
    """``make_app(textlog=False, **settings)`` -> an app on the tiny runtime (closed after the test)."""
    apps = []
    logs = []

    def build(*, textlog: bool = False, **fields):
        if textlog:
            log = TextLog(TextLogConfig(path=tmp_path / f"log{len(logs)}"))
            logs.append(log)
            memory = HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()]))
        else:
            memory = HybridMemory(runtime, textlog=None)
        app = create_app(settings(**fields), memory=memory)
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)
    for log in logs:
        log.close()


def client_for(app, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """A real uvicorn server on loopback, in a thread of the test process."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(make_app) -> Iterator[ThreadServer]:
    """The tiny-model app served over loopback (for the openai and LangChain clients)."""
    with ThreadServer(make_app()) as server:
        yield server
