"""Continuous batching: turns of different sessions join a running batch at the next token
step and leave it when they end, as Orca / vLLM / SGLang schedule at the iteration level.

`SessionBatch` decodes a fixed set of rows: a turn that arrives while it runs waits for the
whole batch to drain. A server with many clients needs the opposite: every step serves the
turns that are running now. `ContinuousBatch` keeps the padded batch of `session.batch` alive
between steps:

- `join` begins a row's `Turn`. When its new tokens are one plain forward on its context
  (`Turn.begin_batched_prefill`: nothing to rebuild, no notes, no response prefix), they are
  prefilled at the next `step` in one forward with the other rows joining then; otherwise the
  session's own code prefills it now (window rebuilds, notes, tools note, response prefix). Its
  first token is chosen at the next `step`, where it is stacked under the rows already decoding
  (one copy of the cache, left-padded).
- `step` chooses one token for every row, takes out the rows that ended or whose window is
  full (rebuilt alone, then stacked again), runs one batched forward and commits every row
  that finished: each turn is committed on its own the moment it ends.
- `drop` aborts a row (its client went away): nothing of that turn is committed.

The handle holds the stacked states only inside a step, so the caller may release the model
lock between steps and let other work (another turn's preparation) run on the model. Each
row's text and reply equal what `MemorySession.stream` gives alone, within float32 tolerance
(``tests/session/test_continuous.py``). Not thread-safe: one thread drives it, holding the
rows' session locks and ``torch.inference_mode()`` around `join`, `step` and `drop`.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from pydantic import BaseModel, Field

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.model.compat import cache_kwargs, output_cache
from deltamem_agents.session.batch import (
    BatchRequest,
    KVLayers,
    _cache_from_layers,
    _cache_layers,
    _left_pad,
    _PaddedBatch,
    _Row,
)
from deltamem_agents.session.session import Reply, SessionError
from deltamem_agents.session.tools import VisibleText

__all__ = ["BatchEvent", "ContinuousBatch", "ContinuousStats"]


class BatchEvent(NamedTuple):
    """Text of a row as it may be shown (tool-call markup held back), or its end: ``reply``
    set once the row's turn is committed (the row has left the batch)."""

    key: Hashable
    text: str = ""
    reply: Reply | None = None


class ContinuousStats(BaseModel):
    """What the batch has done since it was made (wall-clock milliseconds)."""

    joins: int = 0
    steps: int = Field(0, description="batched forwards")
    row_steps: int = Field(0, description="rows summed over those forwards (tokens decoded in batch)")
    max_rows: int = 0
    prefill_tokens: int = Field(0, description="tokens fed by the joining rows' prefills")
    prefill_forwards: int = Field(0, description="batched forwards that prefilled several joining rows at once")
    prefill_ms: float = 0.0
    merge_ms: float = Field(0.0, description="stacking and unstacking rows' KV caches and states")
    decode_ms: float = 0.0
    window_rebuilds: int = 0


@dataclass
class _Live:
    key: Hashable
    row: _Row
    visible: VisibleText


class ContinuousBatch:
    """The running batch of one model and δ-mem handle (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, handle: DeltaMemHandle, *, max_rows: int = 16) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.model, self.handle, self.max_rows = model, handle, max_rows
        self.stats = ContinuousStats()
        self._live: dict[Hashable, _Live] = {}
        self._by_row: dict[int, _Live] = {}  # id(row) -> its live row
        self._joined: list[_Live] = []  # prefilled, not yet stacked
        self._prefilling: list[tuple[_Live, list[int]]] = []  # to prefill together at the next step
        self._batch: _PaddedBatch | None = None

    # -- membership -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    @property
    def room(self) -> int:
        return self.max_rows - len(self._live)

    def join(self, key: Hashable, request: BatchRequest) -> list[BatchEvent]:
        """Begin and prefill a row's turn; it decodes from the next `step`. A bad request
        raises `SessionError` here and touches nothing; a failed prefill leaves its session as
        before. Returns the text to show first (a response prefix)."""
        if key in self._live:
            raise SessionError(f"row {key!r} is in the batch already")
        if self.room <= 0:
            raise SessionError(f"the batch is full ({self.max_rows} rows)")
        session = request.session
        if session.model is not self.model or session.handle is not self.handle:
            raise SessionError("the session runs on another model or δ-mem handle than this batch")
        if any(live.row.turn.session is session for live in self._live.values()):
            raise SessionError("a session can take only one row of a batch")
        turn = session.begin_turn(
            request.message, tools=request.tools, tool_choice=request.tool_choice, options=request.options
        )
        row = _Row(index=len(self._live), turn=turn)
        started = time.perf_counter()
        try:
            ids = turn.begin_batched_prefill()
            if ids is None:  # a context to rebuild, notes, a response prefix...: the session's own prefill
                row.logits = turn.prefill()
            row.kv = _cache_layers(turn.take_cache())
        except BaseException:
            turn.abort()
            raise
        live = _Live(key, row, VisibleText(tools=bool(turn.tools), prefix=turn.gen.response_prefix))
        self._live[key] = live
        self._by_row[id(row)] = live
        self.stats.joins += 1
        if ids is None:
            self.stats.prefill_ms += (time.perf_counter() - started) * 1e3
            self.stats.prefill_tokens += turn.stats.prefill_tokens
            self._joined.append(live)
        else:
            self._prefilling.append((live, ids))
        text = live.visible.start()
        return [BatchEvent(key, text)] if text else []

    def drop(self, key: Hashable) -> None:
        """Abort a row (its client went away): its session is as before its turn."""
        live = self._live.pop(key, None)
        if live is None:
            return
        del self._by_row[id(live.row)]
        if live in self._joined:
            self._joined.remove(live)
        elif any(waiting is live for waiting, _ in self._prefilling):
            self._prefilling = [(w, ids) for w, ids in self._prefilling if w is not live]
        else:
            self._take_out([live.row])
        live.row.turn.abort()

    def abort_all(self) -> None:
        """Abort every row (the batch failed): no session keeps anything of these turns."""
        for live in self._live.values():
            live.row.turn.abort()
        self._live.clear()
        self._by_row.clear()
        self._joined, self._prefilling = [], []
        self._batch = None
        self.handle.reset_state()

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> list[BatchEvent]:
        """One token for every row: choose, regroup, one batched forward, commit the ended rows."""
        events: list[BatchEvent] = []
        ended: list[_Live] = []
        if self._prefilling:
            self._prefill_together()
        stacked = self._batch.rows if self._batch is not None else []
        lives = [self._owner(row) for row in stacked] + self._joined
        for live in lives:
            assert live.row.logits is not None
            text, live.row.token = live.row.turn.choose(live.row.logits)
            self._show(live, text, events)
            if live.row.token is None:
                ended.append(live)
        started = time.perf_counter()
        feeding = [live for live in lives if live.row.token is not None]
        full = [live for live in feeding if live.row.turn.window_full]
        leaving = {id(live.row) for live in ended + full}
        self._take_out([row for row in stacked if id(row) in leaving])
        for live in full:
            live.row.turn.rebuild_window()
            live.row.kv = _cache_layers(live.row.turn.take_cache())
            self.stats.window_rebuilds += 1
        joining = [live.row for live in self._joined if live.row.token is not None] + [live.row for live in full]
        self._joined = []
        if joining:
            if self._batch is None:
                self._batch = _PaddedBatch(self.model, self.handle, joining)
            else:
                self._batch.add(joining)
        self.stats.merge_ms += (time.perf_counter() - started) * 1e3
        if self._batch is not None:
            started = time.perf_counter()
            logits = self._batch.step()
            self.stats.decode_ms += (time.perf_counter() - started) * 1e3
            rows = len(self._batch.rows)
            self.stats.steps += 1
            self.stats.row_steps += rows
            self.stats.max_rows = max(self.stats.max_rows, rows)
            finished = []
            for b, row in enumerate(self._batch.rows):
                row.logits = logits[b : b + 1]
                assert row.token is not None
                live = self._owner(row)
                self._show(live, row.turn.fed_in_batch(row.token), events)
                if row.turn.finished:
                    finished.append(row)
                    ended.append(live)
            self._take_out(finished)
        for live in ended:
            events.extend(self._commit(live))
        return events

    # -- joining rows' prefills, as one forward -----------------------------------------------------
    def _prefill_together(self) -> None:
        """One forward for the new tokens of every row waiting to join: each row's KV cache
        left-padded to the longest context, its new tokens left-padded to the longest prompt, an
        attention mask over both (padding neither reads nor writes the memory), positions of its
        own. A prefill alone is mostly compute on 2 CPUs, yet one forward for 16 short prompts
        costs ~2.4x less than 16 forwards (fixed per-forward costs). A failure aborts these rows."""
        pending, self._prefilling = self._prefilling, []
        started = time.perf_counter()
        try:
            logits, state, kvs = self._forward_prefills([(live.row, ids) for live, ids in pending])
        except BaseException:
            for live, _ in pending:
                del self._live[live.key], self._by_row[id(live.row)]
                live.row.turn.abort()
            raise
        elapsed = (time.perf_counter() - started) * 1e3
        for b, (live, ids) in enumerate(pending):
            live.row.kv, live.row.logits = kvs[b], logits[b : b + 1]
            live.row.turn.finish_batched_prefill(state.select(b), elapsed / len(pending))
            self.stats.prefill_tokens += len(ids)
            self._joined.append(live)
        self.stats.prefill_ms += elapsed
        self.stats.prefill_forwards += 1

    def _forward_prefills(self, rows: list[tuple[_Row, list[int]]]) -> tuple[torch.Tensor, DeltaMemState, list[KVLayers]]:
        past = max(row.turn.context_length for row, _ in rows)
        width = max(len(ids) for _, ids in rows)
        device = next(self.model.parameters()).device
        # every row has a context (`plan_batched_prefill`), so a KV cache to stack
        layers = [
            (
                torch.cat([_left_pad(row.kv[i][0], past) for row, _ in rows]),
                torch.cat([_left_pad(row.kv[i][1], past) for row, _ in rows]),
            )
            for i in range(len(rows[0][0].kv))
        ]
        cache = _cache_from_layers(self.model.config, layers)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        positions = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), past + width, dtype=torch.long, device=device)
        for b, (row, ids) in enumerate(rows):
            context, n = row.turn.context_length, len(ids)
            input_ids[b, width - n :] = torch.tensor(ids, device=device)
            positions[b, width - n :] = torch.arange(context, context + n, device=device)
            mask[b, past - context : past] = 1
            mask[b, past + width - n :] = 1
        self.handle.set_state(DeltaMemState.concat([row.turn.state for row, _ in rows]))  # type: ignore[misc]
        try:
            with self.handle.writing(True):
                out = self.model(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                    **cache_kwargs(self.model, cache),
                )
            state = self.handle.get_state()
        finally:
            self.handle.reset_state()
        real = mask.bool()
        kvs = [
            [(k[b : b + 1, :, real[b]], v[b : b + 1, :, real[b]]) for k, v in _cache_layers(output_cache(out))]
            for b in range(len(rows))
        ]
        return out.logits[:, -1, :].float(), state, kvs

    # -- helpers ----------------------------------------------------------------------------------
    def _owner(self, row: _Row) -> _Live:
        return self._by_row[id(row)]

    @staticmethod
    def _show(live: _Live, text: str, events: list[BatchEvent]) -> None:
        if text and (shown := live.visible.push(text)):
            events.append(BatchEvent(live.key, shown))

    def _take_out(self, rows: list[_Row]) -> None:
        """Unstack ``rows``: each gets its own state and KV entries back."""
        if not rows or self._batch is None:
            return
        started = time.perf_counter()
        leaving = {id(row) for row in rows}
        staying = []
        for b, row in enumerate(self._batch.rows):
            if id(row) in leaving:
                self._batch.take_out(b)
            else:
                staying.append(b)
        if staying:
            self._batch.keep(staying)
        else:
            self._batch = None
        self.stats.merge_ms += (time.perf_counter() - started) * 1e3

    def _commit(self, live: _Live) -> list[BatchEvent]:
        row = live.row
        cache = _cache_from_layers(self.model.config, row.kv) if row.kv else None
        del self._live[live.key], self._by_row[id(row)]
        reply = row.turn.commit(cache=cache)
        row.kv = []
        tail = live.visible.finish(reply.text) if not reply.tool_calls else ""
        return [*([BatchEvent(live.key, tail)] if tail else []), BatchEvent(live.key, reply=reply)]
