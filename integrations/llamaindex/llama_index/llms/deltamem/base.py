"""`DeltaMemLLM`: a frozen Hugging Face LLM with a δ-mem memory, as a LlamaIndex `FunctionCallingLLM`.

Every call is a turn of one δ-mem session (``session_id``/``user_id``): what the session has not
seen is written into its OSAM state and its text log, the answer too, and the session is
committed. LlamaIndex sends the whole conversation on every call; the session keeps only what is new
(`deltamem_agents.session.unseen_messages`), so nothing is written twice. Pair it with `DeltaMemMemory.from_defaults(llm=llm)` so that the
agent's memory and the model share the session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.llms.deltamem.utils import (
    DEFAULT_SESSION_ID,
    reply_message,
    reply_raw,
    shared_hybrid,
    to_deltamem,
)

from deltamem_agents.concurrency import iterate_in_thread
from deltamem_agents.memory.hybrid import HybridChunk, HybridMemory
from deltamem_agents.session import SessionConfig, SessionKey
from deltamem_agents.session.tools import as_tool_spec, normalize_tool_choice

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

#: Keyword arguments of `chat` and friends besides the messages.
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")
_CALL_KEYS = frozenset({*GENERATION_KEYS, "tools", "tool_choice"})


class DeltaMemLLM(FunctionCallingLLM):
    """A frozen LLM with δ-mem memory (the embedded SmolLM2-135M-Instruct by default, offline).

    Examples:
        ```python
        from llama_index.llms.deltamem import DeltaMemLLM

        llm = DeltaMemLLM(session_id="trip", user_id="ada")
        print(llm.complete("I land in Lisbon on Friday."))
        ```

    The backbone is loaded on first use, once per process and configuration. Pass ``hybrid=``
    (a `HybridMemory`) to use your own runtime, session store or text log.
    """

    session_id: str = Field(default=DEFAULT_SESSION_ID, description="the δ-mem session every call continues")
    user_id: str = Field(default="default", description="owner of the session and of its text-log entries")
    backbone: str | None = Field(default=None, description="HF id, folder or .gguf; None: the embedded SmolLM2")
    adapter: str | None = Field(
        default="auto", description="δ-mem adapter folder; 'auto': the one shipped for the backbone; None: untrained"
    )
    store_path: str | None = Field(
        default=None, description="session store folder; None: $DELTAMEM_HOME/sessions (else ~/.local/share/deltamem)"
    )
    text_log: bool = Field(
        default=True, description="keep messages verbatim in the Chroma text log and route retrieval"
    )
    device: str | None = Field(default=None, description="torch device; None: cuda when available, else cpu")
    dtype: str | None = Field(default=None, description="torch dtype name; None: bfloat16 on cuda, float32 on cpu")
    max_new_tokens: int = Field(default=256, ge=1, description="most tokens in one answer")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy decoding")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, description="strings that end an answer")
    seed: int | None = Field(default=None, description="sampling seed when temperature > 0")
    context_window: int | None = Field(
        default=None, description="tokens the session keeps in attention; None: the runtime's session config"
    )

    _hybrid: HybridMemory | None = PrivateAttr(default=None)

    def __init__(self, *, hybrid: HybridMemory | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hybrid = hybrid
        # Checked now, not on the first call deep inside an agent.
        SessionKey(user_id=self.user_id, session_id=self.session_id)

    @classmethod
    def class_name(cls) -> str:
        return "DeltaMemLLM"

    @property
    def hybrid(self) -> HybridMemory:
        """The `HybridMemory` behind this LLM (loaded on first use)."""
        if self._hybrid is None:
            self._hybrid = shared_hybrid(
                backbone=self.backbone, adapter=self.adapter, store_path=self.store_path,
                device=self.device, dtype=self.dtype, text_log=self.text_log,
            )
        return self._hybrid

    @property
    def metadata(self) -> LLMMetadata:
        """Chat and function calling; the context window is the session's attention window
        (older turns live in the δ-mem state and the text log). Never loads the backbone."""
        if self.context_window is not None:
            window = self.context_window
        elif self._hybrid is not None:
            window = self._hybrid.runtime.session_config.context_window
        else:
            window = SessionConfig().context_window
        if self._hybrid is not None:
            name = self._hybrid.runtime.backbone_name
        else:
            from deltamem_agents.model.backbone import DEFAULT_BACKBONE

            name = self.backbone or DEFAULT_BACKBONE
        return LLMMetadata(
            context_window=window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=name,
        )

    # -- the one conversation path ---------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]] | None, str | None]:
        unknown = sorted(set(kwargs) - _CALL_KEYS)
        if unknown:
            raise TypeError(f"DeltaMemLLM got unexpected keyword arguments {unknown}; it accepts {sorted(_CALL_KEYS)}")
        generation: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": tuple(self.stop),
            "seed": self.seed,
        }
        generation.update({k: kwargs[k] for k in GENERATION_KEYS if k in kwargs})
        if isinstance(generation["stop"], str):
            generation["stop"] = (generation["stop"],)
        generation["stop"] = tuple(generation["stop"] or ())
        tools = kwargs.get("tools") or None
        choice = _tool_choice(kwargs.get("tool_choice"), tools)
        if choice == "none":  # tools not shown this turn
            return generation, None, None
        return generation, tools, choice

    def _stream(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[HybridChunk]:
        """Send what the session has not seen, stream the answer. Runs in one thread from start
        to end: the session's lock is held across the yields."""
        generation, tools, tool_choice = self._options(kwargs)
        incoming = [to_deltamem(m) for m in messages]
        hybrid = self.hybrid
        # stream_chat sends the session only what it has not seen (unseen_messages)
        yield from hybrid.stream_chat(
            incoming, session_id=self.session_id, user_id=self.user_id,
            tools=tools, tool_choice=tool_choice, **generation,
        )

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        final = None
        for chunk in self._stream(messages, **kwargs):  # to its end, so the lock is released here
            final = chunk.reply or final
        if final is None:
            raise RuntimeError("the δ-mem stream ended without its final reply")
        return ChatResponse(message=reply_message(final), raw=reply_raw(final))

    def _stream_responses(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        text = ""
        for chunk in self._stream(messages, **kwargs):
            if chunk.reply is None:
                text += chunk.text
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=chunk.text)
            else:  # the last chunk: the whole reply, tool calls included
                yield ChatResponse(message=reply_message(chunk.reply), delta="", raw=reply_raw(chunk.reply))

    # -- LlamaIndex LLM interface ------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Iterate it from one thread to its end (or close it: an abandoned turn commits nothing)."""
        return self._stream_responses(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """The sync stream runs whole in one worker thread (it holds the session lock across its
        yields) and hands its chunks over (`deltamem_agents.concurrency.iterate_in_thread`)."""
        return iterate_in_thread(lambda: self._stream_responses(messages, **kwargs), name="deltamem-astream")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # -- function calling --------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Tools as OpenAI schemas; the session describes them to the model in a system note
        (never written into the state) and parses its ``<tool_call>`` blocks."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        choice = tool_choice if tool_choice is not None else ("required" if tool_required else None)
        out: dict[str, Any] = {"messages": messages, **kwargs}
        if specs and choice != "none":
            out["tools"] = specs
            if choice is not None:
                out["tool_choice"] = choice
        return out

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first call unless parallel calls are allowed (as LlamaIndex's own LLMs do)."""
        if not allow_parallel_tool_calls:
            calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
            for extra in calls[1:]:
                response.message.blocks.remove(extra)
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The `ToolCallBlock`s of a response as `ToolSelection`s."""
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError(
                "the model answered without calling a tool; small backbones often do. Pass "
                "error_on_no_tool_call=False, force a call with tool_required=True / tool_choice=NAME, "
                "or use a larger backbone"
            )
        return [
            ToolSelection(
                tool_id=call.tool_call_id or call.tool_name, tool_name=call.tool_name, tool_kwargs=_kwargs(call)
            )
            for call in calls
        ]


def _kwargs(call: ToolCallBlock) -> dict[str, Any]:
    """A call's arguments as a dict (blocks built elsewhere may hold them as a JSON string)."""
    if isinstance(call.tool_kwargs, dict):
        return call.tool_kwargs
    try:
        arguments = json.loads(call.tool_kwargs or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"tool call {call.tool_name!r} has arguments that are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {call.tool_name!r} has arguments that are not a JSON object: {call.tool_kwargs!r}")
    return arguments


def _tool_choice(choice: str | dict[str, Any] | None, tools: Sequence[Any] | None) -> str | None:
    """LlamaIndex/OpenAI tool_choice -> the session's: None (the model decides), "none", "any",
    or a tool name; read by the library's one rule (`normalize_tool_choice`)."""
    names = [as_tool_spec(tool).name for tool in tools or ()]
    return normalize_tool_choice(choice, names)
