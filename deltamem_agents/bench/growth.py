"""Benchmark: what one turn costs as a conversation grows, δ-mem vs stuffing the context.

The conversation (`SyntheticConversation`) grows to each size (1k ... 32k tokens of history) and
at each size one new user turn is answered with ``decode_tokens`` tokens (end-of-turn ignored, so
every condition decodes the same number). Measured per turn: latency (prefill of the turn +
decoding), peak memory (see `PeakMemory`) and the prompt (tokens in context when the answer
starts, and tokens computed this turn). Conditions, all on the same backbone:

- ``full``: full-history replay. Every turn sends the whole history and prefills it, as a chat
  app on a stateless model server does.
- ``full-cached``: the whole history stays in a KV cache between turns (prefix caching, the best
  case for stuffing the context): only the new turn is prefilled, but every token attends to the
  whole history and the cache grows with it. Measured in the same process as ``full``.
- ``delta-mem``: a `MemorySession`: a fixed recent window (KV reuse) plus the OSAM state.
- ``hybrid``: `HybridMemory`: the session plus the Chroma text log and the router (search, state
  probe, routing, retrieved notes, logging and the atomic commit are all in the turn).
- ``rag``: the bare backbone with retrieved snippets and the recent window, prompt rebuilt and
  prefilled every turn (a typical RAG app).

Each worker runs in its own child process (``isolate=True``), grows its history once through
the sizes (history is reused, not rebuilt per size), and resets its peak-memory counter before
each measured turn. The windowed workers keep their memory on disk (session store, text log), so
with ``reopen=True`` each size is grown in one process and measured in a fresh one that opens
the stored session, as a server does after a restart: the measured peak is then what answering
costs at that history length, not what the allocator kept from ingesting 32k tokens earlier in
the same process (the ingest is a one-time cost, measured by nothing here).

A size whose estimated memory exceeds the budget is reported as ``does not fit`` and larger
sizes are skipped; an out-of-memory error or a killed process is reported too, never crashed on.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deltamem_agents.bench.conversation import SyntheticConversation
from deltamem_agents.bench.memory import PeakMemory, available_mib
from deltamem_agents.bench.report import Progress, machine_info, write_report

Condition = Literal["full", "full-cached", "delta-mem", "hybrid", "rag"]
CONDITIONS: tuple[Condition, ...] = ("full", "full-cached", "delta-mem", "hybrid", "rag")
#: which child process measures which conditions, in the order they run (the slow one last)
WORKERS: dict[str, tuple[Condition, ...]] = {
    "delta-mem": ("delta-mem",),
    "hybrid": ("hybrid",),
    "rag": ("rag",),
    "full": ("full", "full-cached"),
}
Status = Literal["ok", "does not fit", "out of memory", "failed"]
USER, SESSION = "bench", "growth"
GOAL_SPEEDUP, GOAL_SPREAD = 10.0, 0.05


class GrowthConfig(BaseModel):
    """What `run_growth_bench` measures."""

    model_config = ConfigDict(extra="forbid")

    backbone: str | None = Field(None, description="backbone name or path; None: the embedded SmolLM2")
    adapter: str | None = Field(None, description="δ-mem adapter folder; None: an untrained (seeded) δ-mem")
    sizes: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    conditions: tuple[Condition, ...] = CONDITIONS
    window: int = Field(1024, ge=16, description="recent-context window of delta-mem, hybrid and rag (tokens)")
    decode_tokens: int = Field(64, ge=1)
    turns: int = Field(3, ge=1, description="measured turns per size (median latency, max peak) for windowed conditions")
    full_turns: int = Field(1, ge=1, description="measured turns per size for full replay (each re-prefills everything)")
    device: str | None = None
    dtype: str | None = None
    isolate: bool = Field(True, description="one child process per worker (clean peak memory)")
    reopen: bool = Field(
        True, description="measure the windowed conditions in a fresh process that opens the grown memory from disk "
        "(needs isolate)",
    )
    memory_limit_mib: float | None = Field(
        None, description="most memory a turn may add to the loaded model; None: 90% of what the machine has free"
    )
    seed: int = 0

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be positive token counts, got {sizes}")
        return tuple(sorted(set(sizes)))

    def workers(self) -> list[str]:
        return [w for w, conds in WORKERS.items() if any(c in self.conditions for c in conds)]


class TurnMeasure(BaseModel):
    turn_ms: float
    prefill_ms: float
    decode_ms: float
    decode_tokens: int
    context_tokens: int
    prefill_tokens: int
    peak_mem_mib: float
    note: str = ""


# -- turns on the bare backbone --------------------------------------------------------------------
def _forward(model: torch.nn.Module, ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
    from deltamem_agents.model.compat import cache_kwargs, output_cache

    device = next(model.parameters()).device
    out = model(
        input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache)
    )
    return out.logits[:, -1, :], output_cache(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    started = time.perf_counter()
    out = fn()
    _sync(device)
    return out, (time.perf_counter() - started) * 1e3


def _decode(model: torch.nn.Module, logits: torch.Tensor, cache: Any, tokens: int) -> None:
    """Greedy decoding of exactly ``tokens`` tokens (end-of-turn ignored, as in every condition)."""
    for _ in range(tokens):
        logits, cache = _forward(model, [int(logits.argmax(-1))], cache)


def _empty_cache(model: torch.nn.Module) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


# -- workers: one per child process ----------------------------------------------------------------
WARM_UP_TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 16)


class _Worker:
    """Grows one kind of memory through the sizes and answers measured turns."""

    conditions: tuple[Condition, ...] = ()
    #: keeps its grown memory under ``workdir``, so a fresh process can open it and measure
    persistent = False

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        from deltamem_agents.model.backbone import default_device, load_backbone, resolve_dtype

        self.config, self.workdir = config, workdir
        self.device = torch.device(config.device) if config.device else default_device()
        self.model, self.tokenizer = load_backbone(
            config.backbone, device=self.device, dtype=resolve_dtype(config.dtype, self.device), progress=False
        )
        self.conversation = SyntheticConversation(self.tokenizer, seed=config.seed)
        self.peak = PeakMemory(self.device)

    # how many conversation messages the stored memory holds (survives a reopen)
    @property
    def fed(self) -> int:
        path = self.workdir / "fed"
        return int(path.read_text()) if path.exists() else 0

    @fed.setter
    def fed(self, count: int) -> None:
        (self.workdir / "fed").write_text(str(count))

    # memory a turn adds at ``size`` tokens of history (an estimate, for the fit check)
    def extra_mib(self, size: int) -> float:
        return self._activation_mib(self.config.window) + self._kv_mib(self.config.window + 2 * self.config.decode_tokens)

    def _kv_mib(self, tokens: int) -> float:
        cfg = self.model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        width = next(self.model.parameters()).element_size()
        return cfg.num_hidden_layers * 2 * heads * head_dim * width * tokens / 2**20

    def _activation_mib(self, tokens: int) -> float:
        cfg = self.model.config
        width = next(self.model.parameters()).element_size()
        per_token = 8 * cfg.hidden_size + 3 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
        attention = 0.0
        if getattr(cfg, "_attn_implementation", "sdpa") == "eager":  # eager keeps a seq x seq matrix per head
            attention = cfg.num_attention_heads * tokens * tokens * width
        return (per_token * width * tokens + attention) / 2**20

    def warm_up(self) -> None:
        """One throwaway turn so lazy initialisation is not measured."""

    def grow(self, history: list[Any]) -> None:
        """Bring this worker's memory to ``history`` (the messages so far; untimed)."""

    def turn(self, history: list[Any], question: str) -> dict[Condition, TurnMeasure]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FullReplay(_Worker):
    """The whole history in context: re-prefilled every turn (``full``), or kept in a KV cache
    between turns (``full-cached``: only the new turn is prefilled)."""

    conditions = ("full", "full-cached")

    def extra_mib(self, size: int) -> float:
        return self._activation_mib(size) + self._kv_mib(size + 2 * self.config.decode_tokens + 128)

    def warm_up(self) -> None:
        with torch.inference_mode():
            logits, cache = _forward(self.model, self.tokenizer(WARM_UP_TEXT)["input_ids"], _empty_cache(self.model))
            _decode(self.model, logits, cache, 4)

    def turn(self, history: list[Any], question: str) -> dict[Condition, TurnMeasure]:
        from deltamem_agents.session.chat import ChatEncoder
        from deltamem_agents.session.session import template_view

        encoder = ChatEncoder(self.tokenizer)
        views = [template_view(m) for m in history]
        (history_ids, question_ids), render_ms = _timed(lambda: self._encode(encoder, views, question), self.device)
        n = self.config.decode_tokens
        with torch.inference_mode():
            self.peak.reset()
            (logits, cache), history_ms = _timed(lambda: _forward(self.model, history_ids, _empty_cache(self.model)), self.device)
            history_peak = self.peak.peak_mib()
            self.peak.reset()
            (logits, cache), question_ms = _timed(lambda: _forward(self.model, question_ids, cache), self.device)
            _, decode_ms = _timed(lambda: _decode(self.model, logits, cache, n), self.device)
            turn_peak = self.peak.peak_mib()
        context = len(history_ids) + len(question_ids)
        full = TurnMeasure(
            turn_ms=render_ms + history_ms + question_ms + decode_ms, prefill_ms=history_ms + question_ms,
            decode_ms=decode_ms, decode_tokens=n, context_tokens=context, prefill_tokens=context,
            peak_mem_mib=max(history_peak, turn_peak),
        )
        cached = TurnMeasure(
            turn_ms=question_ms + decode_ms, prefill_ms=question_ms, decode_ms=decode_ms, decode_tokens=n,
            context_tokens=context, prefill_tokens=len(question_ids), peak_mem_mib=turn_peak,
        )
        return {"full": full, "full-cached": cached}

    @staticmethod
    def _encode(encoder: Any, views: list[dict[str, Any]], question: str) -> tuple[list[int], list[int]]:
        history_text = encoder.render(views)
        prompt = encoder.render([*views, {"role": "user", "content": question}], add_generation_prompt=True)
        return encoder.tokenize(history_text), encoder.tokenize(prompt[len(history_text) :])


class _SessionWorker(_Worker):
    """A `MemorySession` on the runtime: recent window + OSAM state."""

    conditions = ("delta-mem",)
    persistent = True

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        super().__init__(config, workdir)
        from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning
        from deltamem_agents.session import GenerationOptions, SessionConfig

        session_config = SessionConfig(
            context_window=config.window,
            generation=GenerationOptions(max_new_tokens=config.decode_tokens, ignore_eos=True),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedMemoryWarning)
            self.runtime = DeltaMemRuntime(
                config.backbone, model=self.model, tokenizer=self.tokenizer, adapter=config.adapter,
                store=workdir / "sessions", session_config=session_config, progress=False,
            )

    def warm_up(self) -> None:
        self.runtime.session("warm-up", user_id=USER).reply(WARM_UP_TEXT, max_new_tokens=4)

    def grow(self, history: list[Any]) -> None:
        if len(history) > (fed := self.fed):
            self.runtime.session(SESSION, user_id=USER).ingest(history[fed:])
            self.fed = len(history)

    def turn(self, history: list[Any], question: str) -> dict[Condition, TurnMeasure]:
        session = self.runtime.session(SESSION, user_id=USER)
        self.peak.reset()
        context, started = None, time.perf_counter()
        for _ in session.stream(question):
            context = len(session._window) if context is None else context  # the context the answer starts from
        turn_ms = (time.perf_counter() - started) * 1e3
        return {"delta-mem": _from_stats(session.last_stats, turn_ms, context, self.peak.peak_mib())}


class _HybridWorker(_SessionWorker):
    """`HybridMemory`: the session + the Chroma text log + the router, committing every turn."""

    conditions = ("hybrid",)

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        super().__init__(config, workdir)
        from deltamem_agents.memory import TextLog, TextLogConfig
        from deltamem_agents.memory.hybrid import HybridMemory

        self.textlog = TextLog(TextLogConfig(path=workdir / "textlog"))
        self.hybrid = HybridMemory(self.runtime, self.textlog)

    def warm_up(self) -> None:
        self.hybrid.reply(WARM_UP_TEXT, session_id="warm-up", user_id=USER, max_new_tokens=4)

    def grow(self, history: list[Any]) -> None:
        if len(history) > (fed := self.fed):
            self.hybrid.ingest(history[fed:], session_id=SESSION, user_id=USER)
            self.fed = len(history)

    def turn(self, history: list[Any], question: str) -> dict[Condition, TurnMeasure]:
        session = self.runtime.session(SESSION, user_id=USER)
        self.peak.reset()
        context, final, started = None, None, time.perf_counter()
        for chunk in self.hybrid.stream_chat(question, session_id=SESSION, user_id=USER):
            if chunk.text and context is None:
                context = len(session._window)
            final = chunk.reply or final
        turn_ms = (time.perf_counter() - started) * 1e3
        assert final is not None
        route = final.decision.route if final.decision is not None else "-"
        measure = _from_stats(final.stats, turn_ms, context, self.peak.peak_mib())
        measure.note = f"route {route}"
        return {"hybrid": measure}

    def close(self) -> None:
        self.textlog.close()


class _RagWorker(_Worker):
    """The bare backbone; each turn: search the log, keep what the router selects, put it before
    the recent window and the question, prefill it all and decode."""

    conditions = ("rag",)
    persistent = True

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        super().__init__(config, workdir)
        from deltamem_agents.memory import TextLog, TextLogConfig
        from deltamem_agents.memory.router import router_from_spec

        self.textlog = TextLog(TextLogConfig(path=workdir / "textlog"))
        self.router = router_from_spec("always")

    def extra_mib(self, size: int) -> float:
        tokens = self.config.window + self.router.token_budget * 2 + 2 * self.config.decode_tokens
        return self._activation_mib(tokens) + self._kv_mib(tokens)

    def warm_up(self) -> None:
        from deltamem_agents.store.records import ChatMessage

        self.textlog.add_message(ChatMessage(role="user", content="Hello there."), user_id=USER, session_id="warm-up", turn=0)
        self.textlog.search("Hello", user_id=USER, session_id="warm-up")
        with torch.inference_mode():
            logits, cache = _forward(self.model, self.tokenizer(WARM_UP_TEXT)["input_ids"], _empty_cache(self.model))
            _decode(self.model, logits, cache, 4)

    def grow(self, history: list[Any]) -> None:
        fed = self.fed
        for index in range(fed, len(history)):
            self.textlog.add_message(history[index], user_id=USER, session_id=SESSION, turn=index // 2)
        self.fed = len(history)

    def turn(self, history: list[Any], question: str) -> dict[Condition, TurnMeasure]:
        from deltamem_agents.memory.hybrid import SNIPPET_HEADER
        from deltamem_agents.memory.router import RouterInput
        from deltamem_agents.session.chat import ChatEncoder
        from deltamem_agents.session.session import template_view

        self.peak.reset()
        started = time.perf_counter()
        hits = self.textlog.search(question, user_id=USER, session_id=SESSION, k=2 * self.router.k)
        decision = self.router.decide(RouterInput(query=question, hits=hits))
        notes = "\n".join(f"- {hit.text}" for hit in decision.snippets)
        recent = self.conversation.recent(len(history), self.config.window)
        views = [{"role": "system", "content": f"{SNIPPET_HEADER}\n{notes}"}] if notes else []
        views += [template_view(m) for m in recent] + [{"role": "user", "content": question}]
        encoder = ChatEncoder(self.tokenizer)
        ids = encoder.tokenize(encoder.render(views, add_generation_prompt=True))
        n = self.config.decode_tokens
        with torch.inference_mode():
            (logits, cache), prefill_ms = _timed(lambda: _forward(self.model, ids, _empty_cache(self.model)), self.device)
            _, decode_ms = _timed(lambda: _decode(self.model, logits, cache, n), self.device)
        turn_ms = (time.perf_counter() - started) * 1e3
        measure = TurnMeasure(
            turn_ms=turn_ms, prefill_ms=prefill_ms, decode_ms=decode_ms, decode_tokens=n, context_tokens=len(ids),
            prefill_tokens=len(ids), peak_mem_mib=self.peak.peak_mib(), note=f"{len(decision.snippets)} snippets",
        )
        return {"rag": measure}

    def close(self) -> None:
        self.textlog.close()


WORKER_CLASSES: dict[str, type[_Worker]] = {
    "full": _FullReplay, "delta-mem": _SessionWorker, "hybrid": _HybridWorker, "rag": _RagWorker,
}


def _from_stats(stats: Any, turn_ms: float, context: int | None, peak: float) -> TurnMeasure:
    return TurnMeasure(
        turn_ms=turn_ms, prefill_ms=stats.prefill_ms, decode_ms=stats.decode_ms, decode_tokens=stats.decode_tokens,
        context_tokens=context if context is not None else stats.context_tokens,
        prefill_tokens=stats.prefill_tokens, peak_mem_mib=peak,
        note="window rebuilt" if stats.window_rebuilt else "",
    )


# -- workers driven by commands (in child processes, or in this one) ------------------------------
def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _row(condition: Condition, size: int, status: Status, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"condition": condition, "history_tokens": size, "status": status}
    row.update(fields)
    return row


def _aggregate(condition: Condition, size: int, actual: int, measures: list[TurnMeasure]) -> dict[str, Any]:
    median = lambda name: statistics.median(getattr(m, name) for m in measures)  # noqa: E731
    notes = sorted({m.note for m in measures if m.note})
    return _row(
        condition, size, "ok",
        history_actual=actual,
        turn_ms=round(median("turn_ms"), 1),
        prefill_ms=round(median("prefill_ms"), 1),
        decode_ms=round(median("decode_ms"), 1),
        context_tokens=int(median("context_tokens")),
        prefill_tokens=int(median("prefill_tokens")),
        peak_mem_mib=round(max(m.peak_mem_mib for m in measures), 1),
        turns=len(measures),
        note="; ".join(notes),
    )


Reply = tuple[Any, ...]


class _Commands:
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


def _serve(name: str, config_json: str, workdir: str, conn: Any) -> None:
    """A child process: one worker answering the parent's commands until ``("stop",)``."""
    config = GrowthConfig.model_validate_json(config_json)
    commands = _Commands(name, config, Path(workdir))
    conn.send(commands.meta())
    try:
        while (command := conn.recv())[0] != "stop":
            conn.send(commands(command))
    finally:
        commands.close()


class _Host:
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


class _InProcess(_Host):
    def __init__(self, name: str, config: GrowthConfig) -> None:
        super().__init__(name, config)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"deltamem-growth-{name}-")
        self._commands = _Commands(name, config, Path(self._tmp.name))
        self._reply: Reply = self._commands.meta()

    def send(self, command: Reply) -> None:
        self._reply = self._commands(command)

    def receive(self) -> Reply:
        return self._reply

    def close(self) -> None:
        self._commands.close()
        self._tmp.cleanup()


class _ChildProcess(_Host):
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
        self._process = context.Process(target=_serve, args=args, daemon=True)
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


# -- the benchmark ----------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], sizes: tuple[int, ...]) -> dict[str, Any]:
    """The goal check, computed from the rows: speed ratio at the largest size, memory flatness."""
    ok = {(r["condition"], r["history_tokens"]): r for r in rows if r["status"] == "ok"}
    summary: dict[str, Any] = {"goal": f"δ-mem turn >= {GOAL_SPEEDUP:g}x faster than full replay at {max(sizes):,} tokens; "
                               f"δ-mem peak memory within {GOAL_SPREAD:.0%} between {min(sizes):,} and {max(sizes):,}; full replay grows"}
    largest, smallest = max(sizes), min(sizes)
    full, delta = ok.get(("full", largest)), ok.get(("delta-mem", largest))
    if full and delta:
        summary["speedup"] = round(full["turn_ms"] / delta["turn_ms"], 2)
    small, large = ok.get(("delta-mem", smallest)), ok.get(("delta-mem", largest))
    if small and large:
        summary["delta_mem_peak_mib"] = [small["peak_mem_mib"], large["peak_mem_mib"]]
        summary["delta_mem_peak_change"] = round(large["peak_mem_mib"] / small["peak_mem_mib"] - 1, 4)
    full_small = ok.get(("full", smallest))
    if full_small and full:
        summary["full_peak_mib"] = [full_small["peak_mem_mib"], full["peak_mem_mib"]]
        summary["full_peak_growth"] = round(full["peak_mem_mib"] / full_small["peak_mem_mib"], 3)
    checks = {
        "speedup": summary.get("speedup", 0) >= GOAL_SPEEDUP if "speedup" in summary else None,
        "flat_memory": abs(summary["delta_mem_peak_change"]) <= GOAL_SPREAD if "delta_mem_peak_change" in summary else None,
        "full_grows": summary["full_peak_growth"] > 1 + GOAL_SPREAD if "full_peak_growth" in summary else None,
    }
    summary["checks"] = checks
    summary["met"] = all(checks.values()) if None not in checks.values() else None
    facts = []
    if full and delta:
        facts.append(f"at {largest:,} tokens of history a δ-mem turn took {delta['turn_ms']:,.0f} ms, full replay "
                     f"{full['turn_ms']:,.0f} ms ({summary['speedup']:g}x faster)")
    if "delta_mem_peak_change" in summary:
        a, b = summary["delta_mem_peak_mib"]
        facts.append(f"δ-mem peak memory {a:,.0f} MiB at {smallest:,} tokens, {b:,.0f} MiB at {largest:,} "
                     f"({summary['delta_mem_peak_change']:+.1%})")
    if "full_peak_growth" in summary:
        a, b = summary["full_peak_mib"]
        facts.append(f"full replay peak memory {a:,.0f} MiB, then {b:,.0f} MiB ({summary['full_peak_growth']:g}x)")
    unmeasured = sorted({(r["condition"], r["status"]) for r in rows if r["status"] != "ok"})
    if unmeasured:
        facts.append("not measured: " + ", ".join(f"{c} ({s})" for c, s in unmeasured))
    summary["headline"] = "; ".join(facts) or None
    return summary


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    full = {r["history_tokens"]: r["turn_ms"] for r in rows if r["condition"] == "full" and r["status"] == "ok"}
    for row in rows:
        if row["status"] == "ok" and row["history_tokens"] in full:
            row["vs_full"] = round(full[row["history_tokens"]] / row["turn_ms"], 2)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    return sorted(rows, key=lambda r: (order[r["condition"]], r["history_tokens"]))


def run_growth_bench(out_dir: Path, config: GrowthConfig | None = None, *, progress: bool = False) -> list[dict[str, Any]]:
    """Measure every condition at every size; writes ``growth.json``, ``growth.md`` and ``growth.png``.

    All workers live at once. For each size they grow their histories at the same time (untimed),
    then their turns are measured one worker at a time, the order rotating from turn to turn, so
    that every condition of a size is measured in the same minutes and alone on the machine."""
    config = config or GrowthConfig()
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    names = config.workers()
    turns = {name: config.full_turns if name == "full" else config.turns for name in names}
    steps = len(config.sizes) * (len(names) + sum(turns.values()))
    rows: list[dict[str, Any]] = []
    meta_info: dict[str, Any] = {}
    hosts: list[_Host] = []
    with Progress(progress, steps, "growth: starting the workers") as bar:
        try:
            for name in names:
                host = (_ChildProcess if config.isolate else _InProcess)(name, config)
                hosts.append(host)
            for host in hosts:
                reply = host.receive()
                if reply[0] == "ready":
                    meta_info.update(reply[1])
                else:
                    host.stopped = (reply[1], reply[2])
            for size in config.sizes:
                rows += _measure_size(hosts, size, turns, bar)
        finally:
            for host in hosts:
                host.close()
    rows = _with_speedups(rows)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = {
        "benchmark": "growth",
        "params": config.model_dump(),
        "device": device,
        "machine": machine_info(device),
        "load_average": {"before": load_before, "after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "wall_s": round(time.perf_counter() - started, 1),
        "protocol": "all workers alive at once; per size: histories grown in parallel (untimed), "
        + ("the windowed workers (delta-mem, hybrid, rag) restarted on their stored memory, " if config.reopen and config.isolate else "")
        + "then turns measured one worker at a time, the order rotating each turn",
        **meta_info,
        "summary": summarize(rows, config.sizes),
        "plots": ["growth.png"],
    }
    write_report("growth", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("growth", {"meta": meta, "rows": rows}, Path(out_dir) / "growth.png")
    failures = [host.failure for host in hosts if host.failure]
    if failures:  # the report is written first: hours of measurements are not lost to one worker
        raise RuntimeError("; ".join(failures))
    return rows


def _reopen(hosts: list[_Host], size: int, bar: Progress) -> None:
    """Restart these workers on their stored memory (in parallel), at ``size`` again: nothing
    is grown, the fresh process only learns the history it will be asked about."""
    if not hosts:
        return
    bar.note(f"{size:,} tokens: reopening {', '.join(h.name for h in hosts)} on the stored memory")
    for host in hosts:
        host.reopen()
    for host in hosts:
        if (reply := host.receive())[0] != "ready":
            host.stopped = (reply[1], reply[2])
            continue
        host.send(("prepare", size))
    for host in hosts:
        if host.stopped is None and (reply := host.receive())[0] != "prepared":
            host.stopped = (reply[1], reply[2])


def _measure_size(hosts: list[_Host], size: int, turns: dict[str, int], bar: Progress) -> list[dict[str, Any]]:
    """Grow every live worker to ``size``, then measure their turns interleaved; the rows."""
    rows: list[dict[str, Any]] = []
    live = [h for h in hosts if h.stopped is None]
    bar.step(f"{size:,} tokens: growing {len(live)} histories")
    for host in live:
        host.send(("prepare", size))
    actual: dict[str, int] = {}
    for host in live:
        reply = host.receive()
        bar.advance()
        if reply[0] == "prepared":
            actual[host.name] = reply[1]
        else:
            host.stopped = (reply[1], reply[2])
    _reopen([h for h in live if h.stopped is None and h.reopens], size, bar)
    measures: dict[str, dict[str, list[TurnMeasure]]] = {h.name: {c: [] for c in h.conditions} for h in hosts}
    for turn in range(max(turns.values())):
        order = [h for h in live if h.stopped is None and turn < turns[h.name]]
        order = order[turn % len(order) :] + order[: turn % len(order)] if order else []
        for host in order:
            bar.step(f"{size:,} tokens: {host.name} turn {turn + 1}/{turns[host.name]}")
            host.send(("turn", turn))
            reply = host.receive()
            bar.advance()
            if reply[0] == "measured":
                for condition, measure in reply[1].items():
                    measures[host.name][condition].append(TurnMeasure.model_validate(measure))
            else:
                host.stopped = (reply[1], reply[2])
    for host in hosts:
        for condition in host.conditions:
            done = measures[host.name][condition]
            if host.stopped is None and done:
                row = _aggregate(condition, size, actual[host.name], done)
            else:
                status, note = host.stopped or ("failed", "no turn was measured")
                row = _row(condition, size, status, note=note)
            rows.append(row)
            bar.note(f"  {condition} at {size:,} tokens: {row['status']}, {row.get('turn_ms', '-')} ms, "
                     f"peak {row.get('peak_mem_mib', '-')} MiB")
    return rows
