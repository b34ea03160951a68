"""Benchmark: does the δ-mem state hold a value told once, after N tokens of distractor dialogue?

A passkey / needle-in-a-haystack test for the state alone. Each trial tells one fact ("our
ferret is called Quillon"), then small talk; the state is snapshotted when the small talk after
the fact reaches each length N (one write pass serves every N). The question is then asked in a
fresh session holding *only* that state and the question: no window, no notes, so whatever the
answer knows of the value came through the state.

Values come from two pools: ``seen`` (the vocabulary the adapter was trained on: the closed lists
of `data.vocab`, or the open train pool) and ``unseen`` (the open test pool, disjoint from both by
construction). Trials come in pairs that ask the same slot with different values; the control
answers trial i with the state of its partner at the same N: the same question and the same
style switch (a non-empty state), another conversation's value. Only ``own − other`` is credited
to the state, and the score is answer recall (the value's words found in the answer). Beside it,
the value's teacher-forced likelihood under the own vs the partner's state: the same text, only the
state differs, so a state that holds anything of the value shows it here first.
"""

from __future__ import annotations

import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deltamem_agents.bench.report import Progress
from deltamem_agents.data.prompts import SHORT_ANSWER_SUFFIX
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info

PoolName = Literal["seen", "unseen"]
GOALS = {1024: 0.80, 4096: 0.50}  # issue 21: unseen values, state only


class RecallBenchConfig(BaseModel):
    """What `deltamem bench recall` measures; every field is recorded in the report."""

    model_config = ConfigDict(extra="forbid")

    backbone: str | None = None
    adapter: str | None = Field("auto", description="adapter folder, 'auto' (the shipped one) or None (untrained)")
    lengths: tuple[int, ...] = Field((256, 1024, 4096), description="distractor tokens between the fact and the question")
    trials: int = Field(8, ge=2, description="trials per pool, in pairs asking the same slot (even)")
    pools: tuple[PoolName, ...] = ("seen", "unseen")
    seen_vocabulary: Literal["closed", "open"] = Field(
        "closed", description="what the adapter trained on: 'closed' (the lists of data/vocab.py, the shipped "
        "adapter) or 'open' (the open train pool)")
    max_new_tokens: int = Field(12, ge=1)
    write_window: int = Field(2048, ge=64, description="attention window while the history is written")
    ingest_mode: Literal["blocks", "sliding"] = Field(
        "blocks", description="SessionConfig.ingest_mode of the writer: how an ingest meets a full window")
    history_ingest: Literal["turns", "segments"] = Field(
        "turns", description="'turns': one ingest call per small-talk exchange (each call is shorter than the "
        "kept share, so it never feeds in blocks: ingest_mode has no effect); 'segments': the fact and the "
        "small talk up to each length in one ingest call (a long history imported at once, where it has)")
    device: str | None = None
    dtype: str | None = None
    seed: int = 0

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(n < 0 for n in value):
            raise ValueError(f"lengths must be distractor token counts >= 0, not {value}")
        return tuple(sorted(set(value)))

    @field_validator("trials")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"trials come in pairs (each is the other's control): give an even number, not {value}")
        return value


@dataclass(frozen=True)
class Trial:
    """One fact told once, asked after each length of small talk."""

    pool: PoolName
    index: int
    slot: str
    value: str
    statement: str
    question: str


def _slots(pool: PoolName, seen_vocabulary: str) -> tuple[Any, ...]:
    from deltamem_agents.data.open_vocab import closed_slots, open_slots

    if pool == "unseen":
        return open_slots("test")["facts"]
    return closed_slots()["facts"] if seen_vocabulary == "closed" else open_slots("train")["facts"]


def make_trials(pool: PoolName, config: RecallBenchConfig) -> list[Trial]:
    """``config.trials`` facts of ``pool``: pair k asks slot k (cycling) with two different values."""
    slots = _slots(pool, config.seen_vocabulary)
    rng = random.Random(f"recall-{config.seed}-{pool}")
    trials: list[Trial] = []
    for pair in range(config.trials // 2):
        slot = slots[pair % len(slots)]
        values = rng.sample(list(slot.values), 2)
        for offset, value in enumerate(values):
            statement = rng.choice(slot.statements).format(v=value)
            trials.append(Trial(pool, 2 * pair + offset, slot.name, value,
                                statement[0].upper() + statement[1:] + ".", rng.choice(slot.questions)))
    return trials


def _write_snapshots(model: Any, tokenizer: Any, handle: Any, trial: Trial, config: RecallBenchConfig) -> dict[int, Any]:
    """Write the fact and then small talk; the state when the small talk first reaches each length."""
    from deltamem_agents.data import vocab
    from deltamem_agents.session.session import MemorySession, SessionConfig
    from deltamem_agents.store.records import ChatMessage

    rng = random.Random(f"distractor-{config.seed}-{trial.pool}-{trial.index}")
    writer = MemorySession(model, tokenizer, handle,
                           config=SessionConfig(context_window=config.write_window, prefill_chunk=512,
                                                ingest_mode=config.ingest_mode))
    fact = [ChatMessage(role="user", content=trial.statement),
            ChatMessage(role="assistant", content=rng.choice(vocab.ACKNOWLEDGEMENTS))]
    snapshots: dict[int, Any] = {}
    written = 0
    if config.history_ingest == "segments":
        # The same small talk, drawn in the same order, but everything up to each length goes in
        # one ingest call; its length is estimated from the contents (+5 template tokens a message).
        def size(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False).input_ids) + 5

        pending, planned = fact, 0
        for length in config.lengths:
            while planned < length:
                exchange = [ChatMessage(role="user", content=rng.choice(vocab.FILLER_USER)),
                            ChatMessage(role="assistant", content=rng.choice(vocab.FILLER_ASSISTANT))]
                pending += exchange
                planned += sum(size(m.content) for m in exchange)
            if pending:
                writer.ingest(pending)
                pending = []
            snapshots[length] = writer.state.clone() if writer.state is not None else None
        return snapshots
    writer.ingest(fact)
    for length in config.lengths:
        while written < length:
            stats = writer.ingest([ChatMessage(role="user", content=rng.choice(vocab.FILLER_USER)),
                                   ChatMessage(role="assistant", content=rng.choice(vocab.FILLER_ASSISTANT))])
            written += stats.tokens_written
        snapshots[length] = writer.state.clone() if writer.state is not None else None
    return snapshots


def _ask(model: Any, tokenizer: Any, handle: Any, trial: Trial, state: Any, config: RecallBenchConfig) -> Any:
    """The question in a fresh session holding only ``state``: nothing else in context."""
    from deltamem_agents.session.session import (
        GenerationOptions,
        MemorySession,
        SessionConfig,
    )

    session = MemorySession(model, tokenizer, handle, state=state,
                            config=SessionConfig(generation=GenerationOptions(max_new_tokens=config.max_new_tokens)))
    return session.reply(trial.question + SHORT_ANSWER_SUFFIX, write=False)


def value_nll(model: Any, tokenizer: Any, handle: Any, question: str, value: str, state: Any) -> float:
    """Mean per-token NLL (nats) of ``value`` as the answer to ``question``, with only ``state`` in
    memory, teacher-forced: the same text under two states differs only by what the states hold,
    so it shows a state's information about the value even where greedy decoding never spells it."""
    import torch
    import torch.nn.functional as F

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    value_ids = tokenizer(value, add_special_tokens=False).input_ids
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + value_ids], device=device)
    try:
        with torch.no_grad(), handle.writing(False):
            handle.reset_state()
            if state is not None:
                handle.set_state(state)
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
        return float(F.cross_entropy(logits.float(), torch.tensor(value_ids, device=device)))
    finally:
        handle.reset_state()


def run_recall_bench(out_dir: Path, config: RecallBenchConfig | None = None, *, progress: bool = False) -> list[dict[str, Any]]:
    """Answer recall of the state alone vs distractor length, seen vs unseen values, own vs another
    trial's state; writes recall.json/md/png into ``out_dir``."""
    from deltamem_agents.eval.metrics import answer_recall
    from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning

    config = config or RecallBenchConfig()
    started = time.perf_counter()
    answers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deltamem-recall-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(config.backbone, adapter=config.adapter, store=Path(tmp) / "sessions",
                                  device=config.device, dtype=config.dtype, progress=False)
        model, tokenizer, handle = runtime.model, runtime.tokenizer, runtime.handle
        plan = {pool: make_trials(pool, config) for pool in config.pools}
        total = sum(len(t) for t in plan.values()) * (1 + 2 * len(config.lengths))
        with Progress(progress, total, "recall") as bar:
            for pool, trials in plan.items():
                snapshots = []
                for trial in trials:
                    bar.step(f"{pool} trial {trial.index}: writing {trial.slot} = {trial.value!r}")
                    snapshots.append(_write_snapshots(model, tokenizer, handle, trial, config))
                    bar.advance()
                for trial in trials:
                    partner = trial.index ^ 1  # the other value of the same slot
                    for length in config.lengths:
                        for state_of, states in (("own", snapshots[trial.index]), ("other", snapshots[partner])):
                            bar.step(f"{pool} trial {trial.index}, {length} tokens, {state_of} state")
                            reply = _ask(model, tokenizer, handle, trial, states[length], config)
                            nll = value_nll(model, tokenizer, handle, trial.question + SHORT_ANSWER_SUFFIX, trial.value,
                                            states[length])
                            answers.append({
                                "pool": pool, "trial": trial.index, "slot": trial.slot, "value": trial.value,
                                "distractor_tokens": length, "state": state_of, "question": trial.question,
                                "answer": reply.text, "recall": round(answer_recall(reply.text, trial.value), 4),
                                "value_nll": round(nll, 4),
                                # everything the answer was conditioned on besides the state
                                "context_tokens": reply.stats.context_tokens,
                            })
                            bar.advance()
        adapter = str(runtime.adapter_path) if runtime.adapter_path is not None else None
        device = str(next(model.parameters()).device)
    rows = summarize(answers, config)
    meta = {
        "benchmark": "recall",
        "params": config.model_dump(),
        "adapter": adapter,
        "backbone": runtime.backbone_name,
        "device": device,
        "machine": machine_info(device),
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary(rows),
        "answers": answers,
        "plots": ["recall.png"],
    }
    write_report("recall", rows, Path(out_dir), meta)
    from deltamem_agents.bench.plots import plot_report

    plot_report("recall", {"meta": meta, "rows": rows}, Path(out_dir) / "recall.png")
    return rows


def summarize(answers: list[dict[str, Any]], config: RecallBenchConfig) -> list[dict[str, Any]]:
    """One row per pool and length: recall with the trial's own state, with its partner's, and the gap."""
    rows = []
    for pool in config.pools:
        for length in config.lengths:
            picked = {s: sorted((a for a in answers if (a["pool"], a["distractor_tokens"], a["state"]) == (pool, length, s)),
                                key=lambda a: a["trial"]) for s in ("own", "other")}
            own, other = picked["own"], picked["other"]
            if not own:
                continue
            row = {
                "pool": pool, "distractor_tokens": length, "trials": len(own),
                "recall_own_state": round(100 * mean(a["recall"] for a in own), 1),
                "recall_other_state": round(100 * mean(a["recall"] for a in other), 1),
                "own_minus_other": round(100 * (mean(a["recall"] for a in own) - mean(a["recall"] for a in other)), 1),
            }
            if all("value_nll" in a for a in own + other):
                # the same value's likelihood under the trial's own state vs its partner's: chance is 50 %
                gains = [b["value_nll"] - a["value_nll"] for a, b in zip(own, other, strict=True)]
                row["value_nll_own"] = round(mean(a["value_nll"] for a in own), 3)
                row["value_nll_other"] = round(mean(a["value_nll"] for a in other), 3)
                row["own_state_likelier"] = round(100 * mean(g > 0 for g in gains), 1)
            rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals on unseen values (state only); a goal whose length was not run is undecided."""
    unseen = {r["distractor_tokens"]: r for r in rows if r["pool"] == "unseen"}
    checks = {f"unseen_{n}": unseen[n]["recall_own_state"] >= 100 * goal for n, goal in GOALS.items() if n in unseen}
    headline = "; ".join(
        f"{r['pool']} values, {r['distractor_tokens']} tokens: {r['recall_own_state']:g}% own state vs "
        f"{r['recall_other_state']:g}% another's" for r in rows
    )
    return {
        "goal": "unseen values, state only: answer recall >= 80% at 1k distractor tokens, >= 50% at 4k",
        "headline": headline,
        "checks": checks,
        # missed as soon as one measured goal is missed; met only when every goal's length was run
        "met": False if not all(checks.values()) else (True if len(checks) == len(GOALS) else None),
    }
