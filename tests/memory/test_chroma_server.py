"""TextLog against a REAL Chroma server: `chroma run` started as a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig, chroma_run_command
from deltamem_agents.memory.embeddings import MiniLMEmbeddingFunction
from deltamem_agents.store.records import ChatMessage

START_TIMEOUT_S = 60.0


def chroma_executable() -> str | None:
    """The `chroma` console script installed with chromadb (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("chroma")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChromaServer:
    """One `chroma run --path DIR --host 127.0.0.1 --port N` process, output kept in a log file."""

    def __init__(self, executable: str, path: Path, log_file: Path) -> None:
        self.executable, self.path, self.log_file = executable, path, log_file
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChromaServer:
        for _attempt in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            args = chroma_run_command(self.path, "127.0.0.1", self.port).split()[1:]
            env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
            with open(self.log_file, "ab") as out:
                self.process = subprocess.Popen(
                    [self.executable, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            if self._wait_until_up():
                return self
            self.stop()
        pytest.fail(f"`chroma run` did not come up; its output:\n{self.output()[-3000:]}")

    def _wait_until_up(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture(scope="module")
def chroma_bin() -> str:
    exe = chroma_executable()
    if exe is None:
        pytest.skip("the `chroma` executable (installed with the chromadb package) is not available")
    return exe


@pytest.fixture(scope="module")
def server(chroma_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("chroma-server")
    srv = ChromaServer(chroma_bin, base / "data", base / "server.log")
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbeddingFunction:
    return MiniLMEmbeddingFunction()


def msg(content: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=content)


def test_add_search_delete_through_a_chroma_server(server, embedder):
    config = TextLogConfig(server_url=server.url, collection="server-roundtrip")
    with TextLog(config, embedding_function=embedder) as log:
        assert type(log.client).__name__ != "PersistentClient"
        ids = log.add_message(msg("I always start the day with a mug of cardamom tea."), user_id="ada", session_id="trip", turn=0)
        log.add_message(msg("The train to Lisbon leaves at nine.", "assistant"), user_id="ada", session_id="trip", turn=1)
        log.add_message(msg("My favourite drink is cold brew."), user_id="bob", session_id="trip", turn=0)
        doc_ids = log.add_document(
            "\n\n".join(f"Section {i}. " + "Ferries cross the bay every hour in summer. " * 12 for i in range(4)),
            user_id="ada",
            session_id="trip",
            source="ferry.txt",
        )
        assert len(doc_ids) > 1
        # dedup goes through the server too
        assert log.add_message(msg("I always start the day with a mug of cardamom tea."), user_id="ada", session_id="trip", turn=5) == ids
        assert log.count(user_id="ada") == 2 + len(doc_ids) and log.count(user_id="bob") == 1

        hits = log.search("favourite drink", user_id="ada", k=3)
        assert "cardamom" in hits[0].text and {h.metadata["user_id"] for h in hits} == {"ada"}
        assert log.get(ids)[0].metadata["content_hash"]
        # a session is searched in its own index on the server (no metadata filter)
        index = log._indexes.name("ada", "trip")
        assert index in {c.name for c in log.client.list_collections()}
        found = log.search("Which train goes to Lisbon?", user_id="ada", session_id="trip", k=2)
        assert "Lisbon" in found[0].text and found[0].distance is not None

        assert log.delete(ids) == 1
        assert log.delete_session(user_id="ada", session_id="trip") == 1 + len(doc_ids)
        assert index not in {c.name for c in log.client.list_collections()}
        assert log.count(user_id="ada") == 0
        assert log.delete_user(user_id="bob") == 1
        assert log.count() == 0
    assert "Frontend server listening" in server.output() or server.process.poll() is None


def test_server_store_survives_a_restart(chroma_bin, tmp_path, embedder):
    srv = ChromaServer(chroma_bin, tmp_path / "data", tmp_path / "server.log")
    try:
        srv.start()
        with TextLog(TextLogConfig(server_url=srv.url, collection="restart"), embedding_function=embedder) as log:
            ids = log.add_message(msg("The spare key is under the blue flower pot."), user_id="ada", session_id="home", turn=0)
        srv.stop()
        srv.start()  # same --path, new port
        with TextLog(TextLogConfig(server_url=srv.url, collection="restart"), embedding_function=embedder) as log:
            assert [h.id for h in log.list(user_id="ada")] == ids
            assert log.search("where is the key?", user_id="ada", k=1)[0].id == ids[0]
    finally:
        srv.stop()
