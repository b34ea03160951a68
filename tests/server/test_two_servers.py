"""Two servers, one memory: two `deltamem serve` processes on loopback sharing one REAL
redis-server (the session store) and one REAL `chroma run` server (the text log), on a tiny
model folder. Turns of the same sessions alternate between them and none is lost or
duplicated; then one is SIGKILLed mid-turn and the other serves every session once the dead
server's lease on the session it was answering has expired (a short ``--lock-lease-s``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deltamem_agents.server.loadtest import stop_server, wait_for_health
from deltamem_agents.session import SessionKey
from deltamem_agents.store.redis_store import RedisSessionStore
from tests.memory.test_chroma_server import ChromaServer, chroma_executable
from tests.redis_server import redis_prefix, redis_server  # noqa: F401 - fixtures
from tests.server.conftest import free_port
from tests.server.http_turns import ask, concurrent_turns, turn
from tests.server.test_processes import tiny_backbone  # noqa: F401 - fixture

LEASE_S = 2.0


class Server:
    """One `deltamem serve` child process on the shared Redis store and Chroma server."""

    def __init__(self, backbone: Path, store_url: str, chroma_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable, "-m", "deltamem_agents.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--store", store_url, "--lock-lease-s", str(LEASE_S), "--chroma-url", chroma_url,
            "--backbone", str(backbone), "--adapter", "none", "--threads", "1", "--default-max-tokens", "4",
            "--log-level", "warning",
        ]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            )

    def wait(self) -> Server:
        wait_for_health(self.url, self.process, self.log, timeout_s=180)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_server(self.process)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def said_pairs(store: RedisSessionStore, session: str) -> list[tuple[str, str]]:
    """(user, assistant) pairs of a session as committed, verified by the store on load."""
    record = store.load(SessionKey(session_id=session))
    meta = record.metadata
    said = [m for m in record.messages if m.metadata.get("kind") != "retrieved"]  # router notes
    assert meta.message_count == len(record.messages) and len(said) == 2 * meta.turn_count
    assert [m.role for m in said] == ["user", "assistant"] * meta.turn_count
    assert record.state is not None and meta.state_sha256 is not None
    return [(u.content, a.content) for u, a in zip(said[::2], said[1::2], strict=True)]


@pytest.mark.skipif(chroma_executable() is None, reason="the `chroma` executable (from chromadb) is not installed")
def test_two_servers_share_one_redis_store_and_one_chroma_server(tiny_backbone, redis_server, redis_prefix, tmp_path):  # noqa: F811
    chroma = ChromaServer(chroma_executable(), tmp_path / "chroma", tmp_path / "chroma.log").start()
    store_url = f"{redis_server.url}?prefix={redis_prefix}"
    store = RedisSessionStore(redis_server.url, prefix=redis_prefix)
    servers = [Server(tiny_backbone, store_url, chroma.url, tmp_path / f"{name}.log") for name in "ab"]
    try:
        a, b = (server.wait() for server in servers)
        with httpx.Client(base_url=a.url, timeout=120) as via_a, httpx.Client(base_url=b.url, timeout=120) as via_b:
            # -- the turns of three sessions alternate between the servers ----------------------------
            told: dict[str, list[tuple[str, str]]] = {}
            for number in range(4):
                for index, session in enumerate(["s0", "s1", "s2"]):
                    http = via_a if (number + index) % 2 == 0 else via_b
                    text = f"{session} turn {number}: my code is {7310 + 10 * index + number}"
                    told.setdefault(session, []).append((text, turn(http, session, text)))

            # -- concurrent turns on one session through both servers: serialised by the lease --------
            told["together"] = concurrent_turns({"alpha": via_a, "beta": via_b}, "together")

            # -- every acknowledged turn is committed exactly once, log and state agree ---------------
            for session, pairs in told.items():
                committed = said_pairs(store, session)
                assert sorted(committed) == sorted(pairs) and len(set(committed)) == len(committed)
                if session != "together":
                    assert committed == pairs  # sequential turns: in the order they were told
                meta = store.head(SessionKey(session_id=session))
                for http in (via_a, via_b):  # both servers see the same committed turn and state
                    state = http.get(f"/v1/sessions/{session}/state").json()
                    assert (state["turn_count"], state["state_sha256"]) == (meta.turn_count, meta.state_sha256)
            # the text log written through A is searchable through B (one Chroma server)
            hits = via_b.post("/v1/sessions/s0/search", json={"query": "my code is 7310", "k": 8}).json()["hits"]
            assert any("7310" in hit["text"] for hit in hits)

            # -- SIGKILL A while it answers "victim": B serves every session ---------------------------
            victim_first = turn(via_b, "victim", "I land in Lisbon on Friday.")
            lock_key = store.key_name(SessionKey(session_id="victim"), "lock")
            killed = False
            with via_a.stream("POST", "/v1/chat/completions", json=ask("Tell me everything.", stream=True, max_tokens=400),
                              headers={"X-Session-Id": "victim"}) as response:
                for line in response.iter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        assert store.client.exists(lock_key)  # A holds the session's lease mid-turn
                        a.kill()
                        killed = True
                        break
            assert killed and a.process.returncode == -signal.SIGKILL
            assert store.client.exists(lock_key)  # nobody released it: it must expire

            started = time.monotonic()
            after_kill = turn(via_b, "victim", "Where do I land?")
            waited = time.monotonic() - started
            # B waited for the dead holder's lease to expire (2/3 to 1 TTL were left at the kill), no longer
            assert 0.8 < waited < LEASE_S + 5.0
            assert said_pairs(store, "victim") == [("I land in Lisbon on Friday.", victim_first), ("Where do I land?", after_kill)]
            for session, pairs in told.items():
                if session == "together":
                    continue
                response = via_b.post("/v1/chat/completions", json=ask("Still there?"), headers={"X-Session-Id": session})
                assert response.status_code == 200, response.text
                assert response.json()["deltamem"]["turn"] == len(pairs) + 1
                assert said_pairs(store, session)[: len(pairs)] == pairs
    finally:
        for server in servers:
            server.stop()
        chroma.stop()
