"""`MemorySession`: a chat over a δ-mem model whose memory outlives the attention context.

The session keeps only the most recent ``context_window`` tokens of the conversation in the
KV cache; every token fed with writing on also goes into the OSAM state, so what leaves the
window is still (lossily) remembered. A new turn prefills only its new tokens. When the window
overflows, it is rebuilt from its most recent part, re-prefilled with writing off (those
tokens are already in the state). Several sessions can share one model: each operation
installs the session's state into the model's handle and takes it back afterwards, under a lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from transformers import DynamicCache

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.errors import UserError
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.model.compat import cache_kwargs, output_cache
from deltamem_agents.session.chat import ChatEncoder, ChatTemplateError, Encoded
from deltamem_agents.session.options import (
    GenerationOptions,
    Reply,
    SessionConfig,
    TurnStats,
)
from deltamem_agents.session.sampling import (
    find_stop,
    longest_stop_prefix,
    sample_token,
)
from deltamem_agents.session.tools import (
    TOOL_CALL_OPEN,
    ToolSpec,
    as_tool_spec,
    forced_call_prefix,
    format_tool_calls,
    parse_tool_calls,
    render_tools_prompt,
    tool_call_prefix_length,
)
from deltamem_agents.store.records import ChatMessage

MessageLike = ChatMessage | dict[str, Any]
ToolLike = ToolSpec | dict[str, Any]

#: ``ChatMessage.metadata["kind"]`` of the system notes a session adds for one turn (tool
#: descriptions, retrieved snippets): context only, never written into the state, and not part
#: of the conversation a client sends back.
NOTE_KINDS = frozenset({"tools", "retrieved"})


class SessionError(UserError, ValueError):
    """Bad input to a session (empty message, unknown role...)."""


def as_message(message: MessageLike) -> ChatMessage:
    if isinstance(message, ChatMessage):
        return message
    if isinstance(message, dict):
        return ChatMessage.model_validate(message)
    raise SessionError(f"a message must be a ChatMessage or a dict, got {type(message).__name__}")


def template_view(message: ChatMessage) -> dict[str, Any]:
    """What the chat template sees of a message. Tool calls are written into the content in
    the format the model is asked to use (see `tools`), whatever the template knows of tools."""
    content = message.content
    if message.tool_calls and TOOL_CALL_OPEN not in content:
        calls = format_tool_calls(message.tool_calls)
        content = f"{content}\n{calls}" if content.strip() else calls
    view: dict[str, Any] = {"role": message.role, "content": content}
    for key in ("name", "tool_call_id"):
        value = getattr(message, key, None)
        if value:
            view[key] = value
    return view


def is_note(message: ChatMessage) -> bool:
    """A system note added for one turn (tools, retrieved snippets), not said by anyone."""
    return message.role == "system" and message.metadata.get("kind") in NOTE_KINDS


def conversation_key(message: ChatMessage) -> tuple[Any, ...]:
    """What makes two messages "the same message" when a client sends the conversation back:
    role, visible text, and for a tool result the call it answers. Timestamps, metadata and the
    tool-call markup the model wrote do not count, and neither do an assistant's tool calls: an
    agent that keeps only the first of several calls sends the same turn back with fewer calls."""
    content = message.content
    if message.role == "assistant" and TOOL_CALL_OPEN in content:
        content = parse_tool_calls(content)[0]
    return (message.role, " ".join(content.split()), message.tool_call_id if message.role == "tool" else None)


class ConversationForkError(SessionError):
    """A conversation that rewinds a session (e.g. a retry from an earlier point): it cannot be
    appended without writing messages twice, and a δ-mem state cannot be rewound."""


def unseen_messages(said: Sequence[ChatMessage], conversation: Sequence[MessageLike]) -> list[ChatMessage]:
    """The messages of ``conversation`` that a session whose messages are ``said`` has not seen.

    Clients send only the new messages, or the whole conversation each time, or (chains with a
    memory window, agents) a system prompt plus the latest part of the conversation. So:

    - a system message is seen if the session has one with the same text, wherever it stands;
    - the other messages are cut after the last place where they repeat the session's last two
      messages (normally the last question and its answer); what follows is new;
    - when they do not repeat them at all, all of them are new, unless their first two messages
      are two consecutive messages from earlier in the session: that conversation goes back to
      an earlier point, and `ConversationForkError` says so instead of writing it twice.

    New system messages come first in the result, then the other new messages in order.
    """
    incoming = [as_message(m) for m in conversation]
    seen_systems = {m.content.strip() for m in said if m.role == "system" and not is_note(m)}
    spoken = [conversation_key(m) for m in said if m.role != "system"]
    rest = [m for m in incoming if m.role != "system"]
    keys = [conversation_key(m) for m in rest]
    start = 0
    if spoken:
        ends = (e for e in range(len(keys) - 1, -1, -1) if keys[e] == spoken[-1])
        cut = next((e for e in ends if e == 0 or len(spoken) < 2 or keys[e - 1] == spoken[-2]), None)
        if cut is not None:
            start = cut + 1
        elif len(keys) >= 2:
            fork = next((i for i in range(len(spoken) - 1) if spoken[i : i + 2] == keys[:2]), None)
            if fork is not None:
                raise ConversationForkError(
                    f"the conversation sent goes back to an earlier point of the session (its first messages are "
                    f"messages {fork + 1}-{fork + 2} of {len(spoken)}, but it does not continue from the session's "
                    "end), and a δ-mem session only grows. Send the conversation up to its latest message, or only "
                    "the new messages, or use another session_id"
                )
    systems: list[ChatMessage] = []
    for message in incoming:
        text = message.content.strip()
        if message.role == "system" and not is_note(message) and text not in seen_systems:
            seen_systems.add(text)
            systems.append(message)
    return [*systems, *rest[start:]]


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
        lock: threading.RLock | None = None,
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

    def ingest(self, messages: MessageLike | Sequence[MessageLike] | str, *, write: bool = True) -> TurnStats:
        """Add messages to the conversation and feed them (writing them into memory)."""
        new = self._coerce(messages)
        with self._turn(write) as stats:
            start = len(self.messages)
            self.messages.extend(new)
            try:
                self._feed_messages(stats, write=write, generation_prompt=False)
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
        gen = self.config.generation.model_copy(update=options) if options else self.config.generation
        if options:
            gen = GenerationOptions.model_validate(gen.model_dump())
        new = self._coerce(user_text) if user_text is not None else []
        if not new and (not self.messages or self.messages[-1].role == "assistant"):
            raise SessionError("nothing to answer: give a user message")
        specs = [as_tool_spec(t) for t in tools or ()]
        if specs:
            new = [*self._tools_note(specs, tool_choice), *new]
        elif tool_choice is not None:
            raise SessionError("tool_choice given without tools")
        self.last_reply = None
        with self._turn(write) as stats:
            snapshot = self._snapshot() if not write else None
            start = len(self.messages)
            self.messages.extend(new)
            try:
                logits = self._feed_messages(stats, write=write, generation_prompt=True)
                prefix = gen.response_prefix or forced_call_prefix(specs, tool_choice)
                if prefix != gen.response_prefix:  # decoding sees what the answer was made to start with
                    gen = gen.model_copy(update={"response_prefix": prefix})
                if prefix:
                    logits = self._feed_reply_prefix(prefix, stats, write=write)
                pieces: list[str] = [prefix] if prefix else []
                shown = 0
                if prefix and not specs:
                    yield prefix
                for piece in self._decode(logits, gen, stats, write=write):
                    pieces.append(piece)
                    if not specs:
                        yield piece
                        continue
                    text = "".join(pieces)
                    visible = len(text) - tool_call_prefix_length(text)
                    if visible > shown:
                        yield text[shown:visible]
                        shown = visible
                raw = "".join(pieces)
                content, calls = parse_tool_calls(raw, known=[s.name for s in specs]) if specs else (raw, [])
                if specs and not calls and len(content) > shown:
                    yield content[shown:]  # held back as a possible call, but it was not one
                self.messages.append(
                    ChatMessage(role="assistant", content=raw, tool_calls=[c.to_openai() for c in calls] or None)
                )
                self._written = len(self.messages)
                self._next_segment += 1
                finish = "tool_calls" if calls else self._finish_reason
                self.last_reply = Reply(text=content, raw_text=raw, finish_reason=finish, stats=stats, tool_calls=calls)
            except BaseException:
                del self.messages[start:]
                raise
            finally:
                if snapshot is not None:
                    self._restore(snapshot)

    def _feed_reply_prefix(self, prefix: str, stats: TurnStats, *, write: bool) -> torch.Tensor:
        """Feed the start of the answer as if the model had written it (the answer's segment)."""
        ids = self.encoder.tokenize(prefix)
        logits = self._feed(Encoded(ids, [self._next_segment] * len(ids), prefix), stats, write=write)
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
    def _feed_messages(self, stats: TurnStats, *, write: bool, generation_prompt: bool) -> torch.Tensor:
        """Feed the messages not yet written (and the generation prompt); returns the last logits."""
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
        logits = self._feed(encoded, stats, write=write)
        self._rendered += encoded.text
        self._written = len(self.messages)
        self._next_segment = next_segment
        return logits

    def _resync(self, views: list[dict[str, Any]], stats: TurnStats) -> None:
        """Rebuild the attention context from the messages already in the state (writing off)."""
        encoded, _ = self.encoder.encode_delta("", views, 0, next_segment=0)
        keep = encoded.ids[-self._keep_tokens() :] if encoded.ids else []
        self._cache, self._window = None, []
        if keep:
            with self.handle.writing(False):
                self._forward_window(keep, None, stats)
            stats.window_rebuilt = True
        self._rendered = encoded.text

    def _keep_tokens(self) -> int:
        return max(1, int(self.config.context_window * self.config.rebuild_keep))

    def _feed(self, encoded: Encoded, stats: TurnStats, *, write: bool) -> torch.Tensor:
        ids, segments = encoded.ids, encoded.segment_ids
        started = time.perf_counter()
        logits = None
        for run_start, run_end, run_writes in encoded.runs():
            writes = write and run_writes
            position = run_start
            with self.handle.writing(writes):
                while position < run_end:
                    if len(self._window) >= self.config.context_window:
                        self._shrink_window(stats)
                    room = self.config.context_window - len(self._window)
                    n = min(room, self.config.prefill_chunk, run_end - position)
                    logits = self._forward_window(ids[position : position + n], segments[position : position + n], stats)
                    if writes:
                        stats.tokens_written += n
                    position += n
        stats.prefill_tokens += len(ids)
        stats.prefill_ms += (time.perf_counter() - started) * 1e3
        assert logits is not None
        return logits

    def _shrink_window(self, stats: TurnStats) -> None:
        keep = self._window[-self._keep_tokens() :]
        self._cache, self._window = None, []
        with self.handle.writing(False):
            self._forward_window(keep, None, stats)
        stats.window_rebuilt = True

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

    def _decode(self, logits: torch.Tensor, gen: GenerationOptions, stats: TurnStats, *, write: bool) -> Iterator[str]:
        stop_ids = set() if gen.ignore_eos else self._stop_ids()
        generator = None
        if gen.temperature > 0:
            generator = torch.Generator(device=logits.device)
            generator.manual_seed(gen.seed if gen.seed is not None else int(time.time_ns() % 2**63))
        generated: list[int] = []
        emitted = ""
        self._finish_reason: Literal["stop", "length"] = "length"
        started = time.perf_counter()
        try:
            for _ in range(gen.max_new_tokens):
                token = sample_token(logits, gen, generator)
                if token in stop_ids:
                    self._finish_reason = "stop"
                    break
                generated.append(token)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                stop_at = find_stop(text, gen.stop)
                if stop_at is not None:
                    self._finish_reason = "stop"
                    if stop_at > len(emitted):
                        yield text[len(emitted) : stop_at]
                    emitted = text[:stop_at]
                    break
                if not text.endswith("\ufffd") and len(text) > len(emitted):  # wait for whole characters
                    held = longest_stop_prefix(text, gen.stop)
                    if len(text) - held > len(emitted):
                        yield text[len(emitted) : len(text) - held]
                        emitted = text[: len(text) - held]
                if len(self._window) >= self.config.context_window:
                    self._shrink_window(stats)
                logits = self._forward_window([token], None, stats)
                if write:
                    stats.tokens_written += 1
            else:
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if len(text) > len(emitted):
                    yield text[len(emitted) :]
                    emitted = text
        finally:
            stats.decode_tokens = len(generated)
            stats.decode_ms = (time.perf_counter() - started) * 1e3
        # What the context holds of this reply: the text up to a stop string (the rest, if any,
        # makes the next turn's template delta fail and triggers a context rebuild).
        if self._rendered is not None:
            self._rendered += emitted
