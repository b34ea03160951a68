"""`deltamem bench store`: how long saving and loading one turn takes in each session store.

One turn's commit (the OSAM state of SmolLM2 with the default adapter config, plus two log
messages) and one verified load, timed for the directory store and Redis with 1, 16 and 64
concurrent writers, each on its own session: what a server pays per turn to persist its memory,
and how that grows when many turns commit at once. Without ``--redis-url`` the bench starts
its own ``redis-server`` on loopback (no persistence: ``--save '' --appendonly no``), so the
Redis numbers are the network round trips and Redis' own work, not a disk's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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

    def __enter__(self) -> LocalRedisServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
