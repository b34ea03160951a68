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

This module drives `MemorySession`'s internals (``_feed_messages``, ``_shrink_window``, the
window, cache and template bookkeeping) and mirrors its decoding loop token for token; the
equality tests keep the two in step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import DynamicCache

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.model.compat import cache_kwargs, output_cache
from deltamem_agents.session.sampling import (
    find_stop,
    longest_stop_prefix,
    sample_token,
)
from deltamem_agents.session.session import (
    GenerationOptions,
    MemorySession,
    MessageLike,
    Reply,
    SessionError,
    TurnStats,
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


@contextlib.contextmanager
def _one_row(handle: DeltaMemHandle, state: DeltaMemState | None, *, write: bool) -> Iterator[None]:
    """The handle holds one session's state (batch size 1) for a forward of that session alone."""
    if state is None:
        handle.reset_state()
    else:
        handle.set_state(state)
    with handle.writing(write):
        yield


# -- one row ----------------------------------------------------------------------------------
@dataclass
class _Row:
    """One session's turn inside the batch: its decoding state and what to commit or undo."""

    index: int
    session: MemorySession
    new: list[ChatMessage]
    gen: GenerationOptions
    stats: TurnStats = field(default_factory=TurnStats)
    start: int = 0
    saved: tuple[int, int] = (0, 0)
    touched: bool = False
    stop_ids: set[int] = field(default_factory=set)
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: Literal["stop", "length"] | None = None
    state: DeltaMemState | None = None
    kv: KVLayers = field(default_factory=list)
    logits: torch.Tensor | None = None
    token: int | None = None
    decode_started: float = 0.0

    @property
    def window(self) -> list[int]:
        return self.session._window

    def accept(self, token: int) -> tuple[list[str], bool]:
        """Take a sampled token: the text to stream, and whether the token is fed to the model
        (mirrors `MemorySession._decode`)."""
        pieces: list[str] = []
        if token in self.stop_ids:
            self.finish = "stop"
            return pieces, False
        self.generated.append(token)
        text = self.session.tokenizer.decode(self.generated, skip_special_tokens=True)
        stop_at = find_stop(text, self.gen.stop)
        if stop_at is not None:
            self.finish = "stop"
            if stop_at > len(self.emitted):
                pieces.append(text[len(self.emitted) : stop_at])
            self.emitted = text[:stop_at]
            return pieces, False
        if not text.endswith("\ufffd") and len(text) > len(self.emitted):  # wait for whole characters
            held = longest_stop_prefix(text, self.gen.stop)
            if len(text) - held > len(self.emitted):
                pieces.append(text[len(self.emitted) : len(text) - held])
                self.emitted = text[: len(text) - held]
        self.token = token
        return pieces, True

    def fed(self) -> list[str]:
        """The accepted token went through the model; at ``max_new_tokens`` the row ends."""
        self.window.append(self.token)  # type: ignore[arg-type]
        self.stats.tokens_written += 1
        if len(self.generated) < self.gen.max_new_tokens:
            return []
        self.finish = "length"
        text = self.session.tokenizer.decode(self.generated, skip_special_tokens=True)
        pieces = [text[len(self.emitted) :]] if len(text) > len(self.emitted) else []
        self.emitted = text if pieces else self.emitted
        return pieces

    def close_decoding(self) -> None:
        self.stats.decode_tokens = len(self.generated)
        self.stats.decode_ms = (time.perf_counter() - self.decode_started) * 1e3

    def commit(self) -> Reply:
        """Hand the turn to the session, as `MemorySession.stream` and ``_turn`` do on success."""
        s = self.session
        assert self.finish is not None and self.state is not None
        if s._rendered is not None:
            s._rendered += self.emitted
        s.messages.append(ChatMessage(role="assistant", content=self.emitted))
        s._written = len(s.messages)
        s._next_segment += 1
        s._cache = _cache_from_layers(s.model.config, self.kv) if self.kv else None
        s._state = self.state
        s.tokens_written += self.stats.tokens_written
        self.stats.context_tokens = len(s._window)
        s.last_stats = self.stats
        s._finish_reason = self.finish
        reply = Reply(text=self.emitted, raw_text=self.emitted, finish_reason=self.finish, stats=self.stats)
        s.last_reply = reply
        return reply

    def undo(self) -> None:
        """Leave the session as before the turn; its context is rebuilt on the next call."""
        if not self.touched:
            return
        s = self.session
        del s.messages[self.start :]
        s._written, s._next_segment = self.saved
        s._cache, s._window, s._rendered = None, [], None
        s.last_stats = self.stats


# -- the rows' KV caches as one padded batch ---------------------------------------------------
class _PaddedBatch:
    """Stacked, left-padded KV caches of the rows still decoding, with their attention mask.

    The handle holds the stacked states while the batch exists; the cache is updated in place
    by each step and copied only when rows leave."""

    def __init__(self, model: torch.nn.Module, handle: DeltaMemHandle, rows: list[_Row]) -> None:
        self.model, self.handle, self.rows = model, handle, rows
        length = max(len(row.window) for row in rows)
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
            self.mask[b, length - len(row.window) :] = 1
            row.kv = []  # the batch holds the entries now
        handle.set_state(DeltaMemState.concat([row.state for row in rows]))  # type: ignore[misc]

    def step(self) -> torch.Tensor:
        """Feed every row's accepted token; returns next-token logits ``[rows, vocab]``."""
        device = self.mask.device
        tokens = torch.tensor([[row.token] for row in self.rows], device=device)
        positions = torch.tensor([[len(row.window)] for row in self.rows], device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.model(
            input_ids=tokens, attention_mask=self.mask, position_ids=positions, use_cache=True,
            **cache_kwargs(self.model, self.cache),
        )
        self.cache = output_cache(out)
        return out.logits[:, -1, :].float()

    def take_out(self, b: int) -> None:
        """Give row ``b`` its own state and unpadded KV entries (it leaves, or is rebuilt)."""
        row, real = self.rows[b], self.mask[b].bool()
        row.state = self.handle.get_state().select(b)
        row.kv = [(k[b : b + 1, :, real], v[b : b + 1, :, real]) for k, v in _cache_layers(self.cache)]

    def keep(self, kept: list[int]) -> None:
        """Keep only rows ``kept`` and drop the padding columns no kept row uses any more."""
        index = torch.tensor(kept, device=self.mask.device)
        self.rows = [self.rows[b] for b in kept]
        self.mask = self.mask.index_select(0, index)
        first = int(self.mask.any(dim=0).long().argmax())
        self.mask = self.mask[:, first:]
        layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:]) for k, v in _cache_layers(self.cache)]
        self.cache = _cache_from_layers(self.model.config, layers)
        self.handle.set_state(self.handle.get_state().select(kept))


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
        session = request.session
        gen = session.config.generation
        if request.options:
            gen = GenerationOptions.model_validate({**gen.model_dump(), **request.options})
        if gen.response_prefix:
            raise SessionError(f"row {index}: response_prefix is not batched; use MemorySession.reply for this turn")
        new = session._coerce(request.message) if request.message is not None else []
        if not new and (not session.messages or session.messages[-1].role == "assistant"):
            raise SessionError(f"row {index}: nothing to answer: give a user message")
        return _Row(index=index, session=session, new=new, gen=gen)

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
            for lock in sorted({id(r.session.lock): r.session.lock for r in self._rows}.items()):
                locks.enter_context(lock[1])
            try:
                yield from self._prefill_and_decode()
                self.replies = [row.commit() for row in self._rows]
            except BaseException:
                for row in self._rows:
                    row.undo()
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
                pieces, feed = row.accept(sample_token(row.logits, row.gen, row.generator))
                yield from (BatchPiece(row.index, p) for p in pieces)
                if feed:
                    forward.append(row)
                else:
                    row.close_decoding()
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
                yield from (BatchPiece(row.index, p) for p in row.fed())
                if row.finish is None:
                    pending.append(row)
                else:
                    row.close_decoding()

    def _prefill(self, row: _Row) -> None:
        """Feed the row's new messages and generation prompt with the session's own code."""
        s = row.session
        row.start, row.saved, row.touched = len(s.messages), (s._written, s._next_segment), True
        row.stats = TurnStats(wrote=True)
        row.stop_ids = set() if row.gen.ignore_eos else s._stop_ids()
        s.messages.extend(row.new)
        with torch.inference_mode(), _one_row(self.handle, s._state, write=True):
            row.logits = s._feed_messages(row.stats, write=True, generation_prompt=True)
            row.state = self.handle.get_state()
        row.kv = _cache_layers(s._cache)
        s._cache = None  # the batch holds the entries while decoding
        if row.gen.temperature > 0:
            row.generator = torch.Generator(device=row.logits.device)
            row.generator.manual_seed(row.gen.seed if row.gen.seed is not None else int(time.time_ns() % 2**63))
        row.decode_started = time.perf_counter()

    def _regroup(self, batch: _PaddedBatch | None, forward: list[_Row]) -> _PaddedBatch | None:
        """The batch for the next step, of the rows in ``forward``: finished rows take their
        state and KV entries out; a row whose window is full is rebuilt alone (writing off, as
        `MemorySession._shrink_window`) and everything is stacked again."""
        started = time.perf_counter()
        limit = {id(row): row.session.config.context_window for row in forward}
        full = [row for row in forward if len(row.window) >= limit[id(row)]]
        if batch is not None:
            staying = [b for b, row in enumerate(batch.rows) if id(row) in limit]
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
        s = row.session
        with torch.inference_mode(), _one_row(self.handle, row.state, write=False):
            s._shrink_window(row.stats)
        row.kv = _cache_layers(s._cache)
        s._cache = None
        self.stats.window_rebuilds += 1


def reply_batch(requests: Sequence[RequestLike]) -> list[Reply]:
    """Answer several sessions in one batch; one `Reply` per request, in order."""
    return SessionBatch(requests).run()


def stream_batch(requests: Sequence[RequestLike]) -> Iterator[BatchPiece]:
    """Stream several sessions' answers decoded in one batch (`BatchPiece`: row, text)."""
    return SessionBatch(requests).stream()
