"""Batched turns: several `MemorySession`s answer together, one batch row per session.

A server holds many conversations on one model. Decoded one after another, each token is a
one-row matrix product; decoded as one batch, every step serves all rows at once. Each session
keeps its own OSAM state (δ-mem's state is per batch row), its own KV cache and its own
messages, and the result per session equals what `MemorySession.reply` gives alone (text and
state, within float32 tolerance; see ``tests/session/test_batch.py``).

One batched turn, for sessions that share a model and δ-mem handle:

1. **prefill, per session**: each new message and the generation prompt are fed on top of the
   session's own KV cache and state by the session's own code (window rebuilds, notes, SSW
   segments). A prompt is already a many-row matrix product, so batching it gains little.
2. **merge**: the KV caches are left-padded to one length and stacked, the states
   concatenated. An attention mask hides the padding (padding neither reads nor writes the
   memory) and every row keeps its own positions. Merging copies each cache once, which is far
   cheaper than re-prefilling the windows, and keeps the KV entries exactly as they were.
3. **decode**: one forward per step for every unfinished row. Each row samples with its own
   options and finishes on its own (end of turn, ``max_new_tokens``, stop strings) and then
   leaves the batch. A row whose window fills is rebuilt alone, as `MemorySession` does.
4. **commit**: each session gets back its state row, its KV cache without the padding, its
   messages and `TurnStats`, all at the end. An error or a stream closed early commits nothing
   (as a failed `reply`): every session is as before, its context rebuilt on the next call.

```python
from deltamem_agents.session import BatchRequest, reply_batch

replies = reply_batch([(alice, "Where do I land?"), BatchRequest(session=bob, message="Hi", options={"max_new_tokens": 32})])
```

Every row is a `Turn` (``MemorySession.begin_turn``), the same object a session decodes alone
with: prefill, sampling, stop rules, the δ-mem write accounting, commit and abort are the
session's own code. This module only stacks the rows' KV caches and states and runs the
batched forwards; the equality tests check the result against the session alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import DynamicCache

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.model.compat import cache_kwargs, output_cache
from deltamem_agents.session.session import (
    MemorySession,
    MessageLike,
    Reply,
    SessionError,
    Turn,
)
from deltamem_agents.store.records import ChatMessage

__all__ = ["BatchPiece", "BatchRequest", "BatchStats", "SessionBatch", "reply_batch", "stream_batch"]

KVLayers = list[tuple[torch.Tensor, torch.Tensor]]


class BatchRequest(BaseModel):
    """One row of a batch: a session, its new user message (``None``: answer the conversation
    as it is) and generation options for this row (`GenerationOptions` fields)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    session: MemorySession
    message: str | ChatMessage | dict[str, Any] | list[MessageLike] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    tools: list[Any] | None = Field(None, description="ToolSpecs or OpenAI tool dicts (ContinuousBatch only)")
    tool_choice: str | None = None


class BatchPiece(NamedTuple):
    """A piece of streamed text and the batch row (request index) it belongs to."""

    row: int
    text: str


class BatchStats(BaseModel):
    """What a batched turn cost, summed over its phases (wall-clock milliseconds)."""

    rows: int
    prefill_ms: float = 0.0
    merge_ms: float = Field(0.0, description="stacking, splitting and compacting KV caches and states")
    decode_ms: float = 0.0
    decode_steps: int = 0
    tokens: int = Field(0, description="tokens decoded, all rows")
    window_rebuilds: int = Field(0, description="rows whose window filled while decoding (rebuilt alone)")


RequestLike = BatchRequest | tuple[Any, ...]


# -- KV caches as plain per-layer tensors --------------------------------------------------------
def _cache_layers(cache: DynamicCache | None) -> KVLayers:
    if cache is None:
        return []
    return [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "keys", None) is not None]


def _cache_from_layers(config: Any, layers: KVLayers) -> DynamicCache:
    cache = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[-2]
    if missing == 0:
        return tensor
    pad = tensor.new_zeros(*tensor.shape[:-2], missing, tensor.shape[-1])
    return torch.cat([pad, tensor], dim=-2)


# -- one row ----------------------------------------------------------------------------------
@dataclass
class _Row:
    """One session's turn inside the batch, and what the batch holds for it while decoding."""

    index: int
    turn: Turn
    kv: KVLayers = field(default_factory=list)  # the turn's KV entries while out of the padded batch
    logits: torch.Tensor | None = None
    token: int | None = None  # chosen, to be fed by the next batched step


# -- the rows' KV caches as one padded batch ---------------------------------------------------
class _PaddedBatch:
    """Stacked, left-padded KV caches of the rows still decoding, with their attention mask
    and their stacked states.

    The handle holds the stacked states only during a step, so other forwards (another
    session's turn, a joining row's prefill) may run between steps; the cache is updated in
    place by each step and copied only when rows join or leave."""

    def __init__(self, model: torch.nn.Module, handle: DeltaMemHandle, rows: list[_Row]) -> None:
        self.model, self.handle, self.rows = model, handle, rows
        length = max(row.turn.context_length for row in rows)
        device = next(model.parameters()).device
        stacked = [
            (
                torch.cat([_left_pad(row.kv[i][0], length) for row in rows]),
                torch.cat([_left_pad(row.kv[i][1], length) for row in rows]),
            )
            for i in range(len(rows[0].kv))
        ]
        self.cache = _cache_from_layers(model.config, stacked)
        self.mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        for b, row in enumerate(rows):
            self.mask[b, length - row.turn.context_length :] = 1
            row.kv = []  # the batch holds the entries now
        self.state = DeltaMemState.concat([row.turn.state for row in rows])  # type: ignore[misc]

    def step(self) -> torch.Tensor:
        """Feed every row's accepted token; returns next-token logits ``[rows, vocab]``."""
        device = self.mask.device
        tokens = torch.tensor([[row.token] for row in self.rows], device=device)
        positions = torch.tensor([[row.turn.context_length] for row in self.rows], device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.handle.set_state(self.state)
        try:
            with self.handle.writing(True):
                out = self.model(
                    input_ids=tokens, attention_mask=self.mask, position_ids=positions, use_cache=True,
                    **cache_kwargs(self.model, self.cache),
                )
            self.state = self.handle.get_state()
        finally:
            self.handle.reset_state()
        self.cache = output_cache(out)
        return out.logits[:, -1, :].float()

    def take_out(self, b: int) -> None:
        """Give row ``b`` its own state and unpadded KV entries (it leaves, or is rebuilt)."""
        # A row's real positions are the mask's last `context_length` columns (padding is only
        # ever added on the left), so a slice copies them: no boolean gather per layer.
        row = self.rows[b]
        start = self.mask.shape[1] - row.turn.context_length
        row.turn.state = self.state.select(b)
        row.kv = [
            (k[b : b + 1, :, start:].clone(), v[b : b + 1, :, start:].clone()) for k, v in _cache_layers(self.cache)
        ]

    def keep(self, kept: list[int]) -> None:
        """Keep only rows ``kept`` and drop the padding columns no kept row uses any more."""
        index = torch.tensor(kept, device=self.mask.device)
        self.rows = [self.rows[b] for b in kept]
        self.mask = self.mask.index_select(0, index)
        first = int(self.mask.any(dim=0).long().argmax())
        self.mask = self.mask[:, first:]
        layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:]) for k, v in _cache_layers(self.cache)]
        self.cache = _cache_from_layers(self.model.config, layers)
        self.state = self.state.select(kept)

    def add(self, rows: list[_Row]) -> None:
        """Stack ``rows`` (holding their own KV entries and state) under the rows decoding:
        one copy of the cache, left-padded to the longest context."""
        length = max(self.mask.shape[1], *(row.turn.context_length for row in rows))
        layers = [
            (
                torch.cat([_left_pad(k, length), *(_left_pad(row.kv[i][0], length) for row in rows)]),
                torch.cat([_left_pad(v, length), *(_left_pad(row.kv[i][1], length) for row in rows)]),
            )
            for i, (k, v) in enumerate(_cache_layers(self.cache))
        ]
        self.cache = _cache_from_layers(self.model.config, layers)
        mask = self.mask.new_zeros(len(self.rows) + len(rows), length)
        mask[: len(self.rows), length - self.mask.shape[1] :] = self.mask
        for b, row in enumerate(rows, start=len(self.rows)):
            mask[b, length - row.turn.context_length :] = 1
            row.kv = []
        self.mask = mask
        self.state = DeltaMemState.concat([self.state, *(row.turn.state for row in rows)])  # type: ignore[misc]
        self.rows = [*self.rows, *rows]


# -- the batch ------------------------------------------------------------------------------------
class SessionBatch:
    """One batched turn of several sessions that share a model and δ-mem handle.

    Iterate `stream()` for the text as it is decoded (`BatchPiece`s, rows interleaved), or call
    `run()` for the `Reply`s in request order. Afterwards `replies` and `stats` are set. A batch
    runs once. Probes (``write=False``) and tools are not batched: use `MemorySession.reply`.
    """

    def __init__(self, requests: Sequence[RequestLike]) -> None:
        self.requests = [self._request(r) for r in requests]
        if not self.requests:
            raise SessionError("a batch needs at least one request")
        sessions = [r.session for r in self.requests]
        if len({id(s) for s in sessions}) != len(sessions):
            raise SessionError("a session can take only one row of a batch")
        first = sessions[0]
        if any(s.handle is not first.handle or s.model is not first.model for s in sessions):
            raise SessionError("all sessions of a batch must share one model and δ-mem handle (one runtime)")
        self.model, self.handle = first.model, first.handle
        self._rows = [self._row(i, r) for i, r in enumerate(self.requests)]
        self.replies: list[Reply] | None = None
        self.stats = BatchStats(rows=len(self._rows))
        self._started = False

    @staticmethod
    def _request(request: RequestLike) -> BatchRequest:
        if isinstance(request, BatchRequest):
            return request
        if isinstance(request, tuple) and 1 <= len(request) <= 3:
            fields = dict(zip(("session", "message", "options"), request))
            if fields.get("options") is None:
                fields.pop("options", None)
            return BatchRequest(**fields)
        raise SessionError(
            f"a batch request is a BatchRequest or a (session, message[, options]) tuple, got {request!r}"
        )

    @staticmethod
    def _row(index: int, request: BatchRequest) -> _Row:
        """Begin the row's turn: input and options are checked now, before any row is touched."""
        if request.tools or request.tool_choice is not None:
            raise SessionError(f"row {index}: tools are not decoded by SessionBatch; use ContinuousBatch or MemorySession.reply")
        try:
            turn = request.session.begin_turn(request.message, options=request.options)
        except SessionError as exc:
            raise SessionError(f"row {index}: {exc}") from exc
        if turn.gen.response_prefix:
            raise SessionError(f"row {index}: response_prefix is not batched; use MemorySession.reply for this turn")
        return _Row(index=index, turn=turn)

    # -- running ------------------------------------------------------------------------------------
    def run(self) -> list[Reply]:
        """Decode every row to the end; the replies, in request order."""
        for _ in self.stream():
            pass
        assert self.replies is not None
        return self.replies

    def stream(self) -> Iterator[BatchPiece]:
        """The decoded text of every row as it comes; sessions are committed when it ends."""
        if self._started:
            raise SessionError("a SessionBatch runs once; make a new one for the next turn")
        self._started = True
        with contextlib.ExitStack() as locks:
            for _, lock in sorted({id(r.turn.session.lock): r.turn.session.lock for r in self._rows}.items()):
                locks.enter_context(lock)
            try:
                yield from self._prefill_and_decode()
                self.replies = [row.turn.commit(cache=self._cache_of(row)) for row in self._rows]
            except BaseException:
                for row in self._rows:  # a committed or untouched turn ignores this
                    row.turn.abort()
                raise
            finally:
                self.handle.reset_state()

    def _prefill_and_decode(self) -> Iterator[BatchPiece]:
        started = time.perf_counter()
        for row in self._rows:
            self._prefill(row)
        self.stats.prefill_ms = (time.perf_counter() - started) * 1e3
        pending, batch = list(self._rows), None
        while True:
            # one token per row still decoding; a row that stops here is not fed again
            forward: list[_Row] = []
            for row in pending:
                assert row.logits is not None
                text, row.token = row.turn.choose(row.logits)
                if text:
                    yield BatchPiece(row.index, text)
                if row.token is not None:
                    forward.append(row)
            batch = self._regroup(batch, forward)
            if batch is None:
                return
            step_started = time.perf_counter()
            with torch.inference_mode():
                logits = batch.step()
            self.stats.decode_ms += (time.perf_counter() - step_started) * 1e3
            self.stats.decode_steps += 1
            self.stats.tokens += len(batch.rows)
            pending = []
            for b, row in enumerate(batch.rows):
                row.logits = logits[b : b + 1]
                assert row.token is not None
                text = row.turn.fed_in_batch(row.token)
                if text:
                    yield BatchPiece(row.index, text)
                if not row.turn.finished:
                    pending.append(row)

    def _prefill(self, row: _Row) -> None:
        """Feed the row's new messages and generation prompt with the session's own code; the
        batch holds the row's KV cache from here until commit."""
        with torch.inference_mode():
            row.logits = row.turn.prefill()
        row.kv = _cache_layers(row.turn.take_cache())

    def _cache_of(self, row: _Row) -> DynamicCache | None:
        """The row's KV cache to hand back to its session (None: the session had none)."""
        return _cache_from_layers(self.model.config, row.kv) if row.kv else None

    def _regroup(self, batch: _PaddedBatch | None, forward: list[_Row]) -> _PaddedBatch | None:
        """The batch for the next step, of the rows in ``forward``: finished rows take their
        state and KV entries out; a row whose window is full is rebuilt alone (`Turn.rebuild_window`)
        and everything is stacked again."""
        started = time.perf_counter()
        forwarded = {id(row) for row in forward}
        full = [row for row in forward if row.turn.window_full]
        if batch is not None:
            staying = [b for b, row in enumerate(batch.rows) if id(row) in forwarded]
            if full or len(staying) < len(batch.rows):
                for b in range(len(batch.rows)):
                    if full or b not in staying:
                        batch.take_out(b)
                if full or not staying:
                    batch = None
                else:
                    batch.keep(staying)
        for row in full:
            self._rebuild_window(row)
        if batch is None and forward:
            with torch.inference_mode():
                batch = _PaddedBatch(self.model, self.handle, forward)
        self.stats.merge_ms += (time.perf_counter() - started) * 1e3
        return batch

    def _rebuild_window(self, row: _Row) -> None:
        with torch.inference_mode():
            row.turn.rebuild_window()
        row.kv = _cache_layers(row.turn.take_cache())
        self.stats.window_rebuilds += 1


def reply_batch(requests: Sequence[RequestLike]) -> list[Reply]:
    """Answer several sessions in one batch; one `Reply` per request, in order."""
    return SessionBatch(requests).run()


def stream_batch(requests: Sequence[RequestLike]) -> Iterator[BatchPiece]:
    """Stream several sessions' answers decoded in one batch (`BatchPiece`: row, text)."""
    return SessionBatch(requests).stream()
