"""Real `deltamem serve` processes on loopback (a tiny model saved to a folder): SIGKILL in the
middle of a turn loses at most that turn and a restart serves every session again, with its log
and state in agreement; two processes share one session store and one Chroma server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from deltamem_agents.memory import TextLog, TextLogConfig, content_hash
from deltamem_agents.server.loadtest import serve_command, stop_server, wait_for_health
from deltamem_agents.session import DirectorySessionStore, SessionKey
from tests.memory.test_chroma_server import ChromaServer, chroma_executable
from tests.server.conftest import free_port
from tests.server.http_turns import ask, concurrent_turns, turn
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def tiny_backbone(chat_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved as a model folder `--backbone` loads."""
    folder = tmp_path_factory.mktemp("tiny-backbone")
    tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


class ServeProcess:
    """One `deltamem serve` child process; always stopped (or killed) by the test."""

    def __init__(self, backbone: Path, home: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = ["--backbone", str(backbone), "--adapter", "none", "--threads", "1", "--default-max-tokens", "4", *extra]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                serve_command(self.port, home, *args), stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )

    def __enter__(self) -> ServeProcess:
        try:
            wait_for_health(self.url, self.process, self.log, timeout_s=180)
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop_server(self.process)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def test_sigkill_mid_turn_loses_at_most_that_turn_and_restart_serves_every_session(tiny_backbone, tmp_path):
    home, textlog = tmp_path / "sessions", tmp_path / "textlog"
    extra = ("--textlog", str(textlog))
    acknowledged: dict[str, list[tuple[str, str]]] = {}
    in_flight = threading.Event()
    stop = threading.Event()

    def client(http: httpx.Client, session: str) -> None:
        number = 0
        while not stop.is_set():
            text = f"{session} message {number}"
            try:
                response = http.post("/v1/chat/completions", json=ask(text), headers={"X-Session-Id": session})
            except httpx.HTTPError:
                return  # the server died under this request: the turn is not acknowledged
            if response.status_code == 200:
                acknowledged.setdefault(session, []).append((text, response.json()["choices"][0]["message"]["content"]))
            number += 1

    server = ServeProcess(tiny_backbone, home, tmp_path / "a.log", *extra)
    with server, httpx.Client(base_url=server.url, timeout=120) as http:
        victim_first = turn(http, "victim", "I land in Lisbon on Friday.")
        workers = [threading.Thread(target=client, args=(http, f"steady-{i}")) for i in range(3)]
        for worker in workers:
            worker.start()
        while sum(len(v) for v in acknowledged.values()) < 6:
            threading.Event().wait(0.05)
        with http.stream("POST", "/v1/chat/completions", json=ask("Tell me everything.", stream=True, max_tokens=400),
                         headers={"X-Session-Id": "victim"}) as response:
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    in_flight.set()
                    server.kill()  # SIGKILL while the victim's answer is being decoded
                    break
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert in_flight.is_set() and server.process.returncode == -signal.SIGKILL

    # Every session loads, verified (hash-chained log, state checksum, counts), and agrees with
    # what its clients were told: acknowledged turns are all there, at most the turn in flight is not.
    store = DirectorySessionStore(home)
    sessions = {meta.key.session_id for meta in store.list("default")}
    assert sessions == {"victim", "steady-0", "steady-1", "steady-2"}
    for session in sessions:
        record = store.load(SessionKey(session_id=session))
        meta = record.metadata
        said = [m for m in record.messages if m.metadata.get("kind") != "retrieved"]  # notes of the router
        assert meta.message_count == len(record.messages) and len(said) == 2 * meta.turn_count
        assert [m.role for m in said] == ["user", "assistant"] * meta.turn_count
        assert record.state is not None and meta.state_sha256 is not None
        logged = [(u.content, a.content) for u, a in zip(said[::2], said[1::2], strict=True)]
        told = acknowledged.get(session, []) if session != "victim" else [("I land in Lisbon on Friday.", victim_first)]
        assert logged[: len(told)] == told  # nothing acknowledged is lost or changed
        assert len(logged) - len(told) <= 1  # at most the one turn in flight was committed unacknowledged
    assert store.head(SessionKey(session_id="victim")).turn_count == 1  # the killed turn left nothing

    # The restarted server serves every session, continuing where its log ends.
    with ServeProcess(tiny_backbone, home, tmp_path / "b.log", *extra) as restarted, httpx.Client(base_url=restarted.url, timeout=120) as http:
        listed = {s["id"]: s["turn_count"] for s in http.get("/v1/sessions").json()["data"]}
        assert set(listed) == sessions
        for session, turns in listed.items():
            response = http.post("/v1/chat/completions", json=ask("Still there?"), headers={"X-Session-Id": session})
            assert response.status_code == 200, response.text
            assert response.json()["deltamem"]["turn"] == turns + 1

    # The text log holds every committed message (a killed turn may leave its own entries behind).
    log = TextLog(TextLogConfig(path=textlog))
    try:
        for session in sessions:
            messages = store.load(SessionKey(session_id=session)).messages
            hashes = {content_hash("default", session, m.role, m.content) for m in messages if m.role != "system"}
            found = log.ids_for_hashes(hashes, user_id="default", session_id=session)
            assert len(found) >= len(hashes), session
    finally:
        log.close()


@pytest.mark.skipif(chroma_executable() is None, reason="the `chroma` executable (from chromadb) is not installed")
def test_two_processes_share_one_store_and_one_chroma_server(tiny_backbone, tmp_path):
    chroma = ChromaServer(chroma_executable(), tmp_path / "chroma", tmp_path / "chroma.log").start()
    home = tmp_path / "sessions"
    extra = ("--chroma-url", chroma.url)
    try:
        with (
            ServeProcess(tiny_backbone, home, tmp_path / "a.log", *extra) as a,
            ServeProcess(tiny_backbone, home, tmp_path / "b.log", *extra) as b,
            httpx.Client(base_url=a.url, timeout=120) as via_a,
            httpx.Client(base_url=b.url, timeout=120) as via_b,
        ):
            # one conversation, its turns alternating between the processes
            said = []
            for number, http in enumerate([via_a, via_b, via_a, via_b]):
                text = f"turn {number}: my code is {7310 + number}"
                said.append((text, turn(http, "handoff", text)))
            detail = via_b.get("/v1/sessions/handoff").json()
            assert detail["turn_count"] == 4
            assert [(m["content"]) for m in detail["messages"] if m["role"] == "user"] == [t for t, _ in said]
            assert [(m["content"]) for m in detail["messages"] if m["role"] == "assistant"] == [r for _, r in said]
            # the log written through A is searchable through B (one Chroma server)
            hits = via_b.post("/v1/sessions/handoff/search", json={"query": "my code is 7310", "k": 8}).json()["hits"]
            assert any("7310" in hit["text"] for hit in hits)

            # concurrent turns on one session from both processes are serialised by the store's lock
            results = concurrent_turns({"alpha": via_a, "beta": via_b}, "together")
            messages = [m for m in via_a.get("/v1/sessions/together").json()["messages"] if m["kind"] != "retrieved"]
            assert [m["role"] for m in messages] == ["user", "assistant"] * 6
            pairs = {m["content"]: n["content"] for m, n in zip(messages[::2], messages[1::2], strict=True)}
            assert pairs == dict(results)
            health = [json.loads(httpx.get(f"{s.url}/health").text)["scheduler"]["turns_finished"] for s in (a, b)]
            assert sum(health) == 10 and min(health) >= 5
    finally:
        chroma.stop()
