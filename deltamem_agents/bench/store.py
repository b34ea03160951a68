"""`deltamem bench store`: how long saving and loading one turn takes in each session store.

One turn's commit (the OSAM state of SmolLM2 with the default adapter config, plus two log
messages) and one verified load, timed for the directory store and Redis with 1, 16 and 64
concurrent writers, each on its own session: what a server pays per turn to persist its memory,
and how that grows when many turns commit at once. Without ``--redis-url`` the bench starts
its own ``redis-server`` on loopback (no persistence: ``--save '' --appendonly no``), so the
Redis numbers are the network round trips and Redis' own work, not a disk's.
"""

from __future__ import annotations

import math
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REDIS_INSTALL_HINT = "install it: `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`"


# -- a throwaway redis-server -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedisServer:
    """One ``redis-server`` on 127.0.0.1 and a free port, in a temporary folder, nothing
    persisted; for benchmarks and tests. Stopped (killed) by `stop` or at the ``with`` exit."""

    def __init__(self, executable: str | None = None, directory: Path | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(f"redis-server is not installed: {REDIS_INSTALL_HINT}")
        self.executable = found
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="deltamem-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "redis.log"

    def start(self, timeout_s: float = 20.0) -> LocalRedisServer:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory), "--daemonize", "no", "--protected-mode", "yes"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start (status {self.process.returncode}):\n{self.output()}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer within {timeout_s:g}s:\n{self.output()}")
                time.sleep(0.05)
        finally:
            client.close()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalRedisServer:  # noqa: PYI034 - a subclass starts the same way
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the benchmark ------------------------------------------------------------------------------
class StoreBenchConfig(BaseModel):
    """What `run_store_bench` measures."""

    model_config = ConfigDict(extra="forbid")

    stores: tuple[Literal["directory", "redis"], ...] = ("directory", "redis")
    writers: tuple[int, ...] = Field((1, 16, 64), description="concurrent writers, each on its own sessions")
    samples: int = Field(192, ge=1, description="measured turns per (store, writers), spread over the writers")
    turns_per_session: int = Field(4, ge=1, description="turns a session gets before a writer moves to its next")
    history_messages: int = Field(20, ge=0, description="messages each session holds before the measured turns")
    backbone: str | None = Field(None, description="whose state is saved (default: the embedded SmolLM2)")
    redis_url: str | None = Field(None, description="a running Redis (default: start a redis-server here)")
    directory: Path | None = Field(None, description="where the directory store writes (default: a temp folder)")


FINGERPRINT_NOTE = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def turn_state(backbone: str | None) -> tuple[Any, str]:
    """The state one turn commits: the backbone with the default δ-mem config after one message."""
    import torch

    from deltamem_agents.core.config import DeltaMemConfig
    from deltamem_agents.model.attach import attach_delta_mem
    from deltamem_agents.model.backbone import DEFAULT_BACKBONE, load_backbone
    from deltamem_agents.session.session import MemorySession

    model, tokenizer = load_backbone(backbone, device="cpu", dtype=torch.float32, progress=False)
    handle = attach_delta_mem(model, DeltaMemConfig())
    session = MemorySession(model, tokenizer, handle)
    session.ingest([{"role": "user", "content": "I land in Lisbon on Friday and I am vegetarian."}])
    state = session.state
    assert state is not None
    return state.to("cpu"), f"{backbone or DEFAULT_BACKBONE}: {handle.summary()}"


def _messages(turn: int) -> list[Any]:
    from deltamem_agents.store.records import ChatMessage

    question = f"Turn {turn}: what did I say about the flight, the hotel and dinner? " * 3
    answer = f"Turn {turn}: you land in Lisbon on Friday, the hotel is near the river, and you eat no meat. " * 4
    return [ChatMessage(role="user", content=question), ChatMessage(role="assistant", content=answer)]


def _measure(store: Any, writers: int, config: StoreBenchConfig, state: Any) -> tuple[dict[str, list[float]], float]:
    """``writers`` threads, each on its own sessions: lock, load, commit one turn, unlock."""
    from deltamem_agents.store.records import Fingerprint, SessionKey

    fingerprint = Fingerprint(backbone=FINGERPRINT_NOTE, backbone_signature="-", config="default")
    turns = math.ceil(config.samples / writers)
    per_writer = math.ceil(turns / config.turns_per_session)
    keys = [[SessionKey(user_id=f"w{w}", session_id=f"s{j}") for j in range(per_writer)] for w in range(writers)]
    history = [m for turn in range(config.history_messages // 2) for m in _messages(turn)]
    for row in keys:  # untimed: every session starts with the same history and a state
        for key in row:
            record = store.create(key, fingerprint)
            store.commit(record, new_messages=history, state=state)
    timings: dict[str, list[float]] = {"lock": [], "load": [], "save": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)

    def writer(row: list[Any]) -> None:
        try:
            barrier.wait()
            for turn in range(turns):
                key = row[turn % len(row)]
                started = time.perf_counter()
                with store.lock(key):
                    locked = time.perf_counter()
                    record = store.load(key, expect=fingerprint)
                    loaded = time.perf_counter()
                    store.commit(record, new_messages=_messages(turn), state=state, tokens_written=32)
                    saved = time.perf_counter()
                timings["lock"].append((locked - started) * 1000)
                timings["load"].append((loaded - locked) * 1000)
                timings["save"].append((saved - loaded) * 1000)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(row,), name=f"bench-writer-{i}") for i, row in enumerate(keys)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return timings, wall


def run_store_bench(
    out_dir: Path, config: StoreBenchConfig | None = None, *, progress: bool = False
) -> list[dict[str, Any]]:
    """Save/load/lock latency of one turn per store and writer count; writes store.json/md."""
    import contextlib
    import uuid

    from deltamem_agents.bench.report import Progress
    from deltamem_agents.reporting.files import write_report
    from deltamem_agents.reporting.machine import machine_info
    from deltamem_agents.store.directory import DirectorySessionStore
    from deltamem_agents.store.redis_store import RedisSessionStore

    config = config or StoreBenchConfig()
    started_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        state, source = turn_state(config.backbone)
        state_bytes = len(state.to_bytes())
        redis_url, redis_version = config.redis_url, None
        if "redis" in config.stores and redis_url is None:
            redis_url = stack.enter_context(LocalRedisServer()).url
        root = config.directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deltamem-store-bench-")))
        conditions = [(name, writers) for name in config.stores for writers in config.writers]
        with Progress(progress, len(conditions), "store bench") as bar:
            for name, writers in conditions:
                bar.step(f"{name}, {writers} writer(s)")
                if name == "directory":
                    folder = Path(root) / f"{writers}-{uuid.uuid4().hex[:8]}"
                    store: Any = DirectorySessionStore(folder)
                else:
                    assert redis_url is not None
                    store = RedisSessionStore(redis_url, prefix=f"deltamem-bench-{uuid.uuid4().hex[:8]}:")
                    redis_version = store.client.info("server").get("redis_version")
                try:
                    timings, wall = _measure(store, writers, config, state)
                finally:
                    if name == "directory":
                        shutil.rmtree(folder, ignore_errors=True)
                    else:
                        for key in store.client.scan_iter(match=f"{store.prefix}*", count=1000):
                            store.client.unlink(key)
                        store.client.close()
                for operation in ("save", "load", "lock"):
                    values = timings[operation]
                    rows.append({
                        "store": name, "writers": writers, "operation": operation, "n": len(values),
                        "p50_ms": round(_percentile(values, 0.5), 3), "p95_ms": round(_percentile(values, 0.95), 3),
                        "mean_ms": round(statistics.fmean(values), 3),
                        "turns_per_s": round(len(timings["save"]) / wall, 1),
                    })
                bar.advance()

    def cell(store: str, writers: int, operation: str, column: str) -> float | None:
        return next((r[column] for r in rows if (r["store"], r["writers"], r["operation"]) == (store, writers, operation)), None)

    parts = []
    for name in config.stores:
        low, high = min(config.writers), max(config.writers)
        parts.append(
            f"{name}: save p50 {cell(name, low, 'save', 'p50_ms')} ms / load p50 {cell(name, low, 'load', 'p50_ms')} ms "
            f"with {low} writer(s), save p95 {cell(name, high, 'save', 'p95_ms')} ms at {high}"
        )
    meta = {
        "config": config.model_dump(mode="json"),
        "state": source,
        "state_bytes": state_bytes,
        "redis_version": redis_version,
        "redis": "given by --redis-url" if config.redis_url else "a redis-server started by the bench (no persistence)",
        "machine": machine_info("cpu"),
        "elapsed_s": round(time.perf_counter() - started_all, 1),
        "summary": {"headline": f"one turn ({state_bytes / 1024:.1f} KiB state + 2 messages): " + "; ".join(parts)},
    }
    write_report("store", rows, out_dir, meta)
    return rows
