"""`MemorySession`: a chat over a δ-mem model whose memory outlives the attention context.

The session keeps only the most recent ``context_window`` tokens of the conversation in the
KV cache; every token fed with writing on also goes into the OSAM state, so what leaves the
window is still (lossily) remembered. A new turn prefills only its new tokens. When the window
overflows, it is rebuilt from its most recent part, re-prefilled with writing off (those
tokens are already in the state). Several sessions can share one model: each operation
installs the session's state into the model's handle and takes it back afterwards, under a lock.

An answer is a `Turn` (`MemorySession.begin_turn`): prefill, decoding token by token, commit or
abort. `MemorySession.stream` runs one alone; `SessionBatch` runs several rows' decoding steps
in one batched forward, with the same `Turn` code for everything else.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from deltamem_agents.concurrency import FairRLock
from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.model.compat import cache_kwargs, output_cache
from deltamem_agents.progress import ProgressLike

# The message helpers live in chat.py; re-exported here, where callers have always imported them.
from deltamem_agents.session.chat import (  # noqa: F401
    NOTE_KINDS, ChatEncoder, ChatTemplateError, ConversationForkError, Encoded, MessageLike, SessionError,
    as_message, conversation_key, is_note, template_view, unseen_messages,
)
from deltamem_agents.session.feeding import (
    IngestPlan, apply_batched_prefill, feed, keep_tokens, plan_batched_prefill, shrink_window,
)
from deltamem_agents.session.options import GenerationOptions, Reply, SessionConfig, TurnStats
from deltamem_agents.session.sampling import ReplyDecoder, sample_token
from deltamem_agents.session.tools import (
    ToolCall, ToolSpec, as_tool_spec, forced_call_prefix, parse_tool_calls, render_tools_prompt, VisibleText,
)
from deltamem_agents.store.records import ChatMessage

ToolLike = ToolSpec | dict[str, Any]


class MemorySession:
    """One conversation with a δ-mem model. Not thread-safe on its own; the shared ``lock``
    serialises sessions that share a model."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        handle: DeltaMemHandle,
        *,
        config: SessionConfig | None = None,
        state: DeltaMemState | None = None,
        messages: Iterable[MessageLike] = (),
        lock: threading.RLock | FairRLock | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.handle = handle
        self.config = config or SessionConfig()
        self.encoder = ChatEncoder(tokenizer, handle.config.segment_granularity)
        self.lock = lock or threading.RLock()
        self.messages: list[ChatMessage] = [as_message(m) for m in messages]
        self._state = state
        # Everything in ``messages[:_written]`` is in the state. ``_rendered`` is the template
        # text fed so far (None: must be rebuilt from the messages), ``_window`` the token ids
        # in the KV cache ``_cache``.
        self._written = len(self.messages)
        self._next_segment = sum(m.role != "system" for m in self.messages)
        self._rendered: str | None = "" if not self.messages else None  # None: rebuild on first use
        self._window: list[int] = []
        self._cache: DynamicCache | None = None
        self.tokens_written = 0
        self.last_stats: TurnStats | None = None
        self.last_reply: Reply | None = None
        if not self.messages and self.config.system_prompt:
            self.messages.append(ChatMessage(role="system", content=self.config.system_prompt))

    # -- public API -------------------------------------------------------------------------------
    @property
    def state(self) -> DeltaMemState | None:
        return self._state

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_ids(self) -> list[int]:
        """The token ids the model holds in context now (a copy): what the next token attends to,
        so a caller can show or check exactly what a reply was conditioned on."""
        return list(self._window)

    @property
    def resident_bytes(self) -> int:
        """Bytes of the KV cache and δ-state tensors this session keeps in memory (runtime LRU)."""
        kv = [getattr(layer, name, None) for layer in getattr(self._cache, "layers", ()) for name in ("keys", "values")]
        tensors = [*kv, *(self._state.layers.values() if self._state is not None else ())]
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    def ingest(
        self, messages: MessageLike | Sequence[MessageLike] | str, *, write: bool = True, progress: ProgressLike = False
    ) -> TurnStats:
        """Add messages to the conversation and feed them (writing them into memory). A long input
        is fed in blocks, without a re-prefill at every window fill (session/feeding.py; the
        config's ``ingest_mode``). ``progress``: a reporter, or True for a bar from 2048 tokens on."""
        new = self._coerce(messages)
        plan = IngestPlan(blocks=self.config.ingest_mode == "blocks", progress=progress)
        with self._turn(write) as stats:
            start = len(self.messages)
            self.messages.extend(new)
            try:
                self._feed_messages(stats, write=write, generation_prompt=False, plan=plan)
            except BaseException:
                del self.messages[start:]
                raise
        return stats

    def reply(
        self,
        user_text: str | MessageLike | None = None,
        *,
        write: bool = True,
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        **options: Any,
    ) -> Reply:
        """Answer the conversation (after adding ``user_text`` as a user message, if given).

        ``tools`` (`ToolSpec`s or OpenAI tool dicts) are described to the model in a system note
        (not written into the state); calls in its answer come back parsed in ``Reply.tool_calls``
        and are kept on the assistant message. ``tool_choice``: ``"any"`` or a tool name."""
        for _ in self.stream(user_text, write=write, tools=tools, tool_choice=tool_choice, **options):
            pass  # streaming to the end records the reply
        assert self.last_reply is not None
        return self.last_reply

    def stream(
        self,
        user_text: str | MessageLike | None = None,
        *,
        write: bool = True,
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """Like `reply`, yielding the text as it is decoded (tool-call markup is held back);
        `last_reply` holds the whole `Reply` once the stream ends. ``write=False`` is a probe:
        the state, the context and the message list are as before once the stream ends."""
        turn = self.begin_turn(user_text, write=write, tools=tools, tool_choice=tool_choice, options=options)
        self.last_reply = None
        with self.lock, torch.inference_mode():
            try:
                logits = turn.prefill()
                visible = VisibleText(tools=bool(turn.tools), prefix=turn.gen.response_prefix)
                if start := visible.start():
                    yield start
                for piece in turn.decode_alone(logits):
                    if shown := visible.push(piece):
                        yield shown
                content, calls = turn.split_tool_calls()
                if not calls and (rest := visible.finish(content)):
                    yield rest  # held back as a possible call, but it was not one
                turn.commit()
            except BaseException:
                turn.abort()
                raise

    def begin_turn(
        self,
        message: str | MessageLike | Sequence[MessageLike] | None = None,
        *,
        write: bool = True,
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Turn:
        """A `Turn` that answers the conversation after ``message`` (if given): the input is
        checked and coerced here, and nothing changes until `Turn.prefill`, so a batch can
        refuse a bad row before it touches any session. ``options``: `GenerationOptions` fields."""
        gen = self.config.generation
        if options:
            gen = GenerationOptions.model_validate({**gen.model_dump(), **options})
        new = self._coerce(message) if message is not None else []
        if not new and (not self.messages or self.messages[-1].role == "assistant"):
            raise SessionError("nothing to answer: give a user message")
        specs = [as_tool_spec(t) for t in tools or ()]
        if specs:
            new = [*self._tools_note(specs, tool_choice), *new]
        elif tool_choice is not None:
            raise SessionError("tool_choice given without tools")
        prefix = gen.response_prefix or forced_call_prefix(specs, tool_choice)
        if prefix != gen.response_prefix:  # decoding sees what the answer was made to start with
            gen = gen.model_copy(update={"response_prefix": prefix})
        return Turn(self, new, gen, write=write, tools=specs)

    def _feed_reply_prefix(self, prefix: str, stats: TurnStats, *, write: bool) -> torch.Tensor:
        """Feed the start of the answer as if the model had written it (the answer's segment)."""
        ids = self.encoder.tokenize(prefix)
        logits = feed(self, Encoded(ids, [self._next_segment] * len(ids), prefix), stats, write=write)
        assert self._rendered is not None
        self._rendered += prefix
        return logits

    def new_messages(self, conversation: Sequence[MessageLike]) -> list[ChatMessage]:
        """The part of ``conversation`` this session has not seen yet (see `unseen_messages`):
        a client that sends the whole history again, even after a restart, adds nothing twice."""
        return unseen_messages(self.messages, conversation)

    def _tools_note(self, specs: Sequence[ToolSpec], tool_choice: str | None) -> list[ChatMessage]:
        """The tools note for this turn, unless the same one was given since the last user message."""
        prompt = render_tools_prompt(specs, required=tool_choice)
        after_user = False
        for message in reversed(self.messages):
            if message.metadata.get("kind") == "tools" and message.content == prompt:
                return []
            if after_user and not is_note(message):
                break
            after_user = after_user or message.role == "user"
        return [ChatMessage(role="system", content=prompt, metadata={"kind": "tools"})]

    def state_confidence(self, text: str) -> float | None:
        """How much of the δ-mem state the question's memory keys read out (0: nothing
        stored answers it; see `DeltaMemHandle.read_ratio`). A probe: nothing changes."""
        new = self._coerce(text)
        with self._turn(False) as stats, self.handle.recording_stats():
            snapshot = self._snapshot()
            self.messages.extend(new)
            try:
                self._feed_messages(stats, write=False, generation_prompt=False)
                return self.handle.read_ratio()
            finally:
                self._restore(snapshot)

    # -- turn bookkeeping ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _turn(self, write: bool) -> Iterator[TurnStats]:
        stats = TurnStats(wrote=write)
        with self.lock, torch.inference_mode():
            if self._state is None:
                self.handle.reset_state()
            else:
                self.handle.set_state(self._state)
            try:
                with self.handle.writing(write):
                    yield stats
            except BaseException:
                # An aborted turn (error, Ctrl-C, a stream closed early) keeps none of its writes;
                # its tokens may be in the KV cache, so the context is rebuilt next time.
                self._cache, self._window, self._rendered = None, [], None
                raise
            else:
                if write:
                    self._state = self.handle.get_state()
                    self.tokens_written += stats.tokens_written
            finally:
                self.handle.reset_state()
                stats.context_tokens = len(self._window)
                self.last_stats = stats

    def _snapshot(self) -> tuple[Any, ...]:
        return (len(self.messages), self._written, self._next_segment, self._rendered, list(self._window))

    def _restore(self, snapshot: tuple[Any, ...]) -> None:
        count, self._written, self._next_segment, rendered, window = snapshot
        del self.messages[count:]
        if self._cache is not None and len(self._window) >= len(window) and self._window[: len(window)] == window:
            surplus = len(self._window) - len(window)
            if surplus:
                self._cache.crop(-surplus)  # a negative n removes n tokens (transformers 4.56 and 5.x alike)
            self._window, self._rendered = window, rendered
        else:  # the window was rebuilt during the probe
            self._cache, self._window, self._rendered = None, [], None

    def _coerce(self, messages: MessageLike | Sequence[MessageLike] | str) -> list[ChatMessage]:
        if isinstance(messages, str):
            messages = [ChatMessage(role="user", content=messages)]
        elif isinstance(messages, ChatMessage | dict):
            messages = [messages]
        out = [as_message(m) for m in messages]
        if not out:
            raise SessionError("no messages given")
        for message in out:
            if not message.content.strip() and not getattr(message, "tool_calls", None):
                raise SessionError(f"empty {message.role} message")
        return out

    # -- feeding tokens -----------------------------------------------------------------------------------
    def _feed_messages(
        self, stats: TurnStats, *, write: bool, generation_prompt: bool, plan: IngestPlan | None = None
    ) -> torch.Tensor:
        """Feed the messages not yet written (and the generation prompt; ``plan``: an ingest's);
        returns the last logits."""
        views = [template_view(m) for m in self.messages]
        start = self._written
        if self._rendered is None:
            self._resync(views[:start], stats)
        assert self._rendered is not None
        unwritten = {i for i in range(start, len(self.messages)) if is_note(self.messages[i])}
        try:
            encoded, next_segment = self.encoder.encode_delta(
                self._rendered, views, start, next_segment=self._next_segment,
                add_generation_prompt=generation_prompt, unwritten=unwritten,
            )
        except ChatTemplateError:
            self._resync(views[:start], stats)
            encoded, next_segment = self.encoder.encode_delta(
                self._rendered, views, start, next_segment=self._next_segment,
                add_generation_prompt=generation_prompt, unwritten=unwritten,
            )
        if not encoded.ids:
            raise SessionError("the chat template rendered these messages as no tokens")
        logits = feed(self, encoded, stats, write=write, plan=plan)
        self._rendered += encoded.text
        self._written = len(self.messages)
        self._next_segment = next_segment
        return logits

    def _resync(self, views: list[dict[str, Any]], stats: TurnStats) -> None:
        """Rebuild the attention context from the messages already in the state (writing off)."""
        encoded, _ = self.encoder.encode_delta("", views, 0, next_segment=0)
        keep = encoded.ids[-keep_tokens(self.config) :] if encoded.ids else []
        self._cache, self._window = None, []
        if keep:
            with self.handle.writing(False):
                self._forward_window(keep, None, stats)
            stats.window_rebuilt = True
            stats.rebuild_tokens += len(keep)
        self._rendered = encoded.text

    def _forward_window(self, ids: list[int], segments: list[int] | None, stats: TurnStats) -> torch.Tensor:
        """One forward of ``ids`` on top of the KV cache; returns the last position's logits."""
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        input_ids = torch.tensor([ids], device=self.device)
        segment_ids = None
        if segments is not None and self.handle.config.write_strategy == "ssw":
            segment_ids = torch.tensor([segments], device=self.device)
        with self.handle.segments(segment_ids):
            # logits of the last position only: a 512-token chunk's full logits are ~100 MB of
            # float32 at a 49k vocabulary, and would make peak memory depend on the window's state
            out = self.model(
                input_ids=input_ids, use_cache=True, logits_to_keep=1, **cache_kwargs(self.model, self._cache)
            )
        self._cache = output_cache(out)
        self._window.extend(ids)
        return out.logits[:, -1, :].float()

    # -- decoding -----------------------------------------------------------------------------------------
    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(i) for i in source)
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end_of_turn, int) and end_of_turn != self.tokenizer.unk_token_id:
            ids.add(end_of_turn)
        return ids


class Turn:
    """One answer of one session, opened into steps so that `MemorySession.stream` and
    `SessionBatch` run the same code: ``MemorySession.begin_turn`` → `prefill` → per token
    `choose`, one forward, `fed_in_batch` (or all of that: `decode_alone`) → `commit` or `abort`.

    The caller holds the session's lock and ``torch.inference_mode()``. Forwards of this session
    alone install `state` into the handle themselves; a batch that runs the forwards keeps
    `state` current and holds the KV cache (`take_cache`, handed back to `commit`) meanwhile.
    """

    def __init__(
        self, session: MemorySession, new: list[ChatMessage], gen: GenerationOptions, *, write: bool = True,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        #: ``new``: the messages this turn adds before its answer (a tools note first, if any)
        self.session, self.new, self.gen, self.write, self.tools = session, new, gen, write, list(tools)
        self.stats = TurnStats(wrote=write)
        #: the δ-state this turn has reached (None: the session has none yet)
        self.state: DeltaMemState | None = session.state
        #: sampling and stop rules; set by `prefill`
        self.decoder: ReplyDecoder | None = None
        self._restore_point: tuple[Any, ...] | None = None  # set by prefill, before it touches the session
        self._cache_taken = False
        self._batched: tuple[Encoded, int] | None = None  # planned by begin_batched_prefill
        self._ended = False

    @property
    def started(self) -> bool:
        """Whether `prefill` has begun changing the session (so `abort` has something to undo)."""
        return self._restore_point is not None

    @property
    def finished(self) -> bool:
        """Whether the reply has ended (end of turn, stop string or ``max_new_tokens``)."""
        return self.decoder is not None and self.decoder.finished

    def prefill(self) -> torch.Tensor:
        """Feed the new messages, the generation prompt and any response prefix on top of the
        session's context with its own code (window rebuilds, notes, SSW segments); returns the
        logits ``[1, vocab]`` of the reply's first token. The restore point is taken here, under
        the caller's lock, not by ``begin_turn``: a batch begins every row before it locks any."""
        if self.started:
            raise RuntimeError("a turn is prefilled once; begin a new turn for the next answer")
        session = self.session
        self._restore_point = session._snapshot()
        self.state = session.state
        session.messages.extend(self.new)
        with self._holding_state():
            logits = session._feed_messages(self.stats, write=self.write, generation_prompt=True)
            if self.gen.response_prefix:
                logits = session._feed_reply_prefix(self.gen.response_prefix, self.stats, write=self.write)
        # looked up here, not bound in ReplyDecoder: tests script a reply through this module's sample_token
        self.decoder = ReplyDecoder(session.tokenizer, self.gen, session._stop_ids(), logits.device, sampler=sample_token)
        return logits

    def begin_batched_prefill(self) -> list[int] | None:
        """Instead of `prefill`: the tokens to feed, when a batched forward of several sessions'
        prefills can feed them (`plan_batched_prefill`); the caller then takes the KV cache, runs
        the forward and calls `finish_batched_prefill`. None: use `prefill`; nothing changed."""
        if self.started:
            raise RuntimeError("a turn is prefilled once; begin a new turn for the next answer")
        self._batched = plan_batched_prefill(self.session, self.new, self.gen, write=self.write)
        if self._batched is None:
            return None
        self._restore_point, self.state = self.session._snapshot(), self.session.state
        self.session.messages.extend(self.new)
        return list(self._batched[0].ids)

    def finish_batched_prefill(self, state: DeltaMemState, elapsed_ms: float) -> None:
        """The planned tokens went through a batched forward on this turn's KV cache: ``state``
        is what it wrote for this row; decoding may start from the logits it gave."""
        assert self._batched is not None, "begin_batched_prefill first"
        apply_batched_prefill(self.session, *self._batched, self.stats, elapsed_ms)
        self.state = state
        self.decoder = ReplyDecoder(self.session.tokenizer, self.gen, self.session._stop_ids(), self.session.device, sampler=sample_token)

    def decode_alone(self, logits: torch.Tensor) -> Iterator[str]:
        """Decode the whole reply with forwards of this session alone (batch size 1), from the
        logits `prefill` returned; yields the text as it is released."""
        session = self.session
        with self._holding_state():
            while not self.finished:
                text, token = self.choose(logits)
                if text:
                    yield text
                if token is None:
                    break
                if self.window_full:
                    shrink_window(session, self.stats)  # not rebuild_window: the handle holds the state already
                logits = session._forward_window([token], None, self.stats)
                text = self._token_fed()
                if text:
                    yield text

    def choose(self, logits: torch.Tensor) -> tuple[str, int | None]:
        """The next token from ``logits`` ``[1, vocab]`` (see `ReplyDecoder.choose`): the text it
        releases and the token to feed, ``None`` when the reply ended without feeding one."""
        assert self.decoder is not None, "prefill first"
        text, token = self.decoder.choose(logits)
        self._note_if_finished()
        return text, token

    def fed_in_batch(self, token: int) -> str:
        """``token`` (from `choose`) went through the model in a batched forward holding this
        turn's KV cache and state: it joins the context. Returns the text that releases."""
        self.session._window.append(token)
        return self._token_fed()

    def _token_fed(self) -> str:
        """The δ-mem write accounting of a decoded token, and the length rule."""
        assert self.decoder is not None
        if self.write:
            self.stats.tokens_written += 1
        text = self.decoder.fed()
        self._note_if_finished()
        return text

    def _note_if_finished(self) -> None:
        assert self.decoder is not None
        if self.decoder.finished:
            self.stats.decode_tokens = len(self.decoder.tokens)
            self.stats.decode_ms = self.decoder.elapsed_ms

    # -- the context, for a batch that runs the forwards ----------------------------------------------
    @property
    def context_length(self) -> int:
        """Tokens in the session's context: the position of the next token fed."""
        return len(self.session._window)

    @property
    def window_full(self) -> bool:
        """Whether the next token needs `rebuild_window` first."""
        return len(self.session._window) >= self.session.config.context_window

    def rebuild_window(self) -> None:
        """Keep the most recent part of the context and re-prefill it alone from `state`, writing
        off (those tokens are in the state already); the new KV cache is the session's."""
        with self._holding_state(write=False):
            shrink_window(self.session, self.stats)

    def take_cache(self) -> DynamicCache | None:
        """Hand the session's KV cache to a caller that runs the forwards on it until `commit`
        gets it back; the session holds none meanwhile."""
        cache, self.session._cache = self.session._cache, None
        self._cache_taken = True
        return cache

    # -- the end ----------------------------------------------------------------------------------
    @property
    def raw_text(self) -> str:
        """Everything the answer says: the response prefix and the decoded text."""
        return self.gen.response_prefix + (self.decoder.text if self.decoder else "")

    def split_tool_calls(self) -> tuple[str, list[ToolCall]]:
        """The answer's plain text and the calls to this turn's tools in it."""
        if not self.tools:
            return self.raw_text, []
        return parse_tool_calls(self.raw_text, known=[s.name for s in self.tools])

    def commit(self, *, cache: DynamicCache | None = None) -> Reply:
        """The reply becomes the session's: its assistant message, its place in the template text
        and segments, the KV cache (``cache``: what `take_cache` handed out, grown by the
        caller), the state and the token totals. A probe (``write=False``) then puts the session
        back as it was before `prefill`, keeping what it can of the context."""
        if not self.finished or self._ended:
            raise RuntimeError("commit needs a finished reply of a turn not yet committed or aborted")
        if cache is not None and not self._cache_taken:
            raise RuntimeError("commit got a KV cache, but take_cache never handed one out")
        assert self.decoder is not None and self.decoder.finish_reason is not None
        session, (content, calls), raw = self.session, self.split_tool_calls(), self.raw_text
        finish = "tool_calls" if calls else self.decoder.finish_reason
        reply = Reply(text=content, raw_text=raw, finish_reason=finish, stats=self.stats, tool_calls=calls)
        self._ended = True
        if self._cache_taken:
            session._cache = cache
        if session._rendered is not None:
            session._rendered += self.decoder.text  # the prefix is in already (prefill fed it)
        tool_calls = [c.to_openai() for c in calls] or None
        session.messages.append(ChatMessage(role="assistant", content=raw, tool_calls=tool_calls))
        session._written = len(session.messages)
        session._next_segment += 1
        if self.write:
            session._state = self.state
            session.tokens_written += self.stats.tokens_written
        else:
            assert self._restore_point is not None
            session._restore(self._restore_point)
        self.stats.context_tokens = len(session._window)
        session.last_stats, session.last_reply = self.stats, reply
        return reply

    def abort(self) -> None:
        """Undo the turn (an error, a stream closed early): the session's messages, counters,
        state and totals are as before `prefill`. The KV cache may hold the turn's tokens, so
        the context is dropped and rebuilt on the next call. A turn never prefilled, or already
        ended, is left alone: a batch can abort every row whatever happened."""
        if self._ended or self._restore_point is None:
            return
        self._ended = True
        session = self.session
        count, session._written, session._next_segment, _, _ = self._restore_point
        del session.messages[count:]
        session._cache, session._window, session._rendered = None, [], None
        if self.decoder is not None and not self.decoder.finished:
            self.stats.decode_tokens, self.stats.decode_ms = len(self.decoder.tokens), self.decoder.elapsed_ms
        self.stats.context_tokens = 0
        session.last_stats = self.stats

    @contextlib.contextmanager
    def _holding_state(self, *, write: bool | None = None) -> Iterator[None]:
        """The handle holds `state` (batch size 1) for forwards of this session alone; what they
        write becomes the turn's `state`. Never nested: the inner exit resets the handle."""
        handle, writing = self.session.handle, self.write if write is None else write
        if self.state is None:
            handle.reset_state()
        else:
            handle.set_state(self.state)
        try:
            with handle.writing(writing):
                yield
            if writing:
                self.state = handle.get_state()
        finally:
            handle.reset_state()
