"""The growth benchmark's workers: each grows one kind of memory through the sizes and answers
measured turns (full replay, the δ-mem session, the hybrid memory, RAG on the bare backbone).

A worker runs in one process and knows nothing of the others; `growth_processes` drives it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deltamem_agents.bench.conversation import SyntheticConversation
from deltamem_agents.bench.growth_config import (
    SESSION,
    USER,
    Condition,
    GrowthConfig,
    TurnMeasure,
)
from deltamem_agents.bench.memory import PeakMemory

__all__ = ["WARM_UP_TEXT", "WORKER_CLASSES", "FullReplay", "HybridWorker", "RagWorker", "SessionWorker", "Worker"]


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


# -- workers: one per process ----------------------------------------------------------------------
WARM_UP_TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 16)


class Worker:
    """Grows one kind of memory through the sizes and answers measured turns."""

    conditions: tuple[Condition, ...] = ()
    #: keeps its grown memory under ``workdir``, so a fresh process can open it and measure
    persistent = False

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        from deltamem_agents.model.backbone import (
            default_device,
            load_backbone,
            resolve_dtype,
        )

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


class FullReplay(Worker):
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


class SessionWorker(Worker):
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
            context = len(session.context_ids) if context is None else context  # the context the answer starts from
        turn_ms = (time.perf_counter() - started) * 1e3
        return {"delta-mem": _from_stats(session.last_stats, turn_ms, context, self.peak.peak_mib())}


class HybridWorker(SessionWorker):
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
                context = len(session.context_ids)
            final = chunk.reply or final
        turn_ms = (time.perf_counter() - started) * 1e3
        assert final is not None
        route = final.decision.route if final.decision is not None else "-"
        measure = _from_stats(final.stats, turn_ms, context, self.peak.peak_mib())
        measure.note = f"route {route}"
        return {"hybrid": measure}

    def close(self) -> None:
        self.textlog.close()


class RagWorker(Worker):
    """The bare backbone; each turn: search the log, keep what the router selects, put it before
    the recent window and the question, prefill it all and decode."""

    conditions = ("rag",)
    persistent = True

    def __init__(self, config: GrowthConfig, workdir: Path) -> None:
        super().__init__(config, workdir)
        from deltamem_agents.memory import TextLog, TextLogConfig
        from deltamem_agents.memory.routing import router_from_spec

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
        from deltamem_agents.memory.notes import snippet_text
        from deltamem_agents.memory.routing import RouterInput
        from deltamem_agents.session.chat import ChatEncoder
        from deltamem_agents.session.session import template_view

        self.peak.reset()
        started = time.perf_counter()
        hits = self.textlog.search(question, user_id=USER, session_id=SESSION, k=2 * self.router.k)
        decision = self.router.decide(RouterInput(query=question, hits=hits))
        notes = snippet_text(hit.text for hit in decision.snippets)  # "" without snippets: no system note
        recent = self.conversation.recent(len(history), self.config.window)
        views = [{"role": "system", "content": notes}] if notes else []
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


WORKER_CLASSES: dict[str, type[Worker]] = {
    "full": FullReplay, "delta-mem": SessionWorker, "hybrid": HybridWorker, "rag": RagWorker,
}


def _from_stats(stats: Any, turn_ms: float, context: int | None, peak: float) -> TurnMeasure:
    return TurnMeasure(
        turn_ms=turn_ms, prefill_ms=stats.prefill_ms, decode_ms=stats.decode_ms, decode_tokens=stats.decode_tokens,
        context_tokens=context if context is not None else stats.context_tokens,
        prefill_tokens=stats.prefill_tokens, peak_mem_mib=peak,
        note="window rebuilt" if stats.window_rebuilt else "",
    )
