"""Where a growth worker runs: its own child process (clean peak memory, killed without taking
the benchmark with it) or this one (tests), driven the same way by commands and replies."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from deltamem_agents.bench.growth_config import WORKERS, GrowthConfig, Status
from deltamem_agents.bench.growth_workers import WORKER_CLASSES
from deltamem_agents.bench.memory import available_mib

__all__ = ["ChildProcess", "Commands", "Host", "InProcess", "Reply", "serve"]


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


#: a command to a worker or its reply (see `Commands`)
Reply = tuple[Any, ...]


class Commands:
    """What a worker does on each command; the same in a child process and in this one.

    ``("prepare", size)`` grows the history to ``size`` (untimed) or says it does not fit;
    ``("turn", turn)`` measures one turn at the prepared size. Replies: ``("ready", meta)``,
    ``("prepared", actual_tokens, messages_added)``, ``("skip", status, note)``, ``("measured", {condition: measure})``.
    """

    def __init__(self, name: str, config: GrowthConfig, workdir: Path) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.config = config
        self.worker = WORKER_CLASSES[name](config, workdir)
        self.worker.warm_up()
        self.history: list[Any] = []

    def meta(self) -> Reply:
        w = self.worker
        return ("ready", {
            "memory_method": w.peak.method,
            "attn_implementation": getattr(w.model.config, "_attn_implementation", None),
            "backbone_parameters": sum(p.numel() for p in w.model.parameters()),
            "dtype": str(next(w.model.parameters()).dtype).removeprefix("torch."),
        })

    def __call__(self, command: Reply) -> Reply:
        try:
            if command[0] == "prepare":
                size = command[1]
                budget = self.config.memory_limit_mib
                if budget is None:
                    free = available_mib()
                    budget = 0.9 * free if free is not None else math.inf
                need = self.worker.extra_mib(size)
                if need > budget:
                    return ("skip", "does not fit", f"needs about {need:,.0f} MiB more; {budget:,.0f} MiB allowed")
                self.history, actual = self.worker.conversation.prefix(size)
                held = self.worker.fed if self.worker.persistent else 0
                self.worker.grow(self.history)
                return ("prepared", actual, len(self.history) - held)
            if command[0] == "turn":
                question = self.worker.conversation.question(command[1], len(self.history))
                return ("measured", {c: m.model_dump() for c, m in self.worker.turn(self.history, question).items()})
            raise ValueError(f"unknown growth worker command {command!r}")
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            return ("skip", "out of memory", f"{type(exc).__name__}: {str(exc)[:160]}")

    def close(self) -> None:
        self.worker.close()


def serve(name: str, config_json: str, workdir: str, conn: Any) -> None:
    """A child process: one worker answering the parent's commands until ``("stop",)``."""
    config = GrowthConfig.model_validate_json(config_json)
    commands = Commands(name, config, Path(workdir))
    conn.send(commands.meta())
    try:
        while (command := conn.recv())[0] != "stop":
            conn.send(commands(command))
    finally:
        commands.close()


class Host:
    """One worker as the parent sees it: send a command, receive its reply (possibly later,
    so several workers can grow their histories at the same time)."""

    def __init__(self, name: str, config: GrowthConfig) -> None:
        self.name, self.config = name, config
        self.conditions = tuple(c for c in WORKERS[name] if c in config.conditions)
        self.failure: str | None = None
        self.stopped: tuple[Status, str] | None = None

    def send(self, command: Reply) -> None:
        raise NotImplementedError

    def receive(self) -> Reply:
        raise NotImplementedError

    @property
    def reopens(self) -> bool:
        """Whether each size is measured in a fresh process (see `GrowthConfig.reopen`)."""
        return False

    def reopen(self) -> None:
        """Start a fresh worker on the same stored memory (its reply to ``ready`` is pending)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Host):
    def __init__(self, name: str, config: GrowthConfig) -> None:
        super().__init__(name, config)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"deltamem-growth-{name}-")
        self._commands = Commands(name, config, Path(self._tmp.name))
        self._reply: Reply = self._commands.meta()

    def send(self, command: Reply) -> None:
        self._reply = self._commands(command)

    def receive(self) -> Reply:
        return self._reply

    def close(self) -> None:
        self._commands.close()
        self._tmp.cleanup()


class ChildProcess(Host):
    """A worker in its own process: its peak memory is its own. If the process dies, the
    worker is stopped: out of memory when it was killed, failed otherwise."""

    def __init__(self, name: str, config: GrowthConfig) -> None:
        super().__init__(name, config)
        self._workdir = tempfile.TemporaryDirectory(prefix=f"deltamem-growth-{name}-")
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        args = (self.name, self.config.model_dump_json(), self._workdir.name, child)
        self._process = context.Process(target=serve, args=args, daemon=True)
        self._process.start()
        child.close()

    @property
    def reopens(self) -> bool:
        return self.config.reopen and WORKER_CLASSES[self.name].persistent

    def reopen(self) -> None:
        self._stop()
        self._start()

    def send(self, command: Reply) -> None:
        self._conn.send(command)

    def receive(self) -> Reply:
        while not self._conn.poll(1.0):
            if not self._process.is_alive():
                break
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join()
            code = self._process.exitcode
            if code in (-9, 137):
                return ("skip", "out of memory", f"the worker process was killed (exit code {code}), probably for memory")
            self.failure = f"growth worker {self.name!r} failed (exit code {code}); see its traceback above"
            return ("skip", "failed", f"the worker failed (exit code {code}); its traceback is in the log")

    def _stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(("stop",))
            self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

    def close(self) -> None:
        self._stop()
        self._workdir.cleanup()
