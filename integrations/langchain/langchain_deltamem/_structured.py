"""Structured output for `DeltaMemLLM.with_structured_output`: ask, validate, repair once.

The backbone has no constrained decoding, so an answer is free text. It is searched for one JSON
object (or, with ``function_calling``, for the call of the schema's tool), validated against the
schema, and when it does not fit, the model is told what was wrong and asked once more. Both
exchanges are turns of the session, like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import pydantic
import pydantic.v1
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig

JSON_MODE_INSTRUCTION = "Answer with one JSON object and nothing else: no prose before or after it, no code fence."
JSON_SCHEMA_INSTRUCTION = JSON_MODE_INSTRUCTION + " The object must match this JSON schema:\n{schema}"
REPAIR_JSON = "That answer could not be used: {error}. Answer again with only the corrected JSON object."
REPAIR_TOOL = "That answer could not be used: {error}. Call the tool {name!r} again, with arguments that fit its schema."


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (prose or a code fence around it is ignored)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise OutputParserException(f"the answer holds no JSON object: {text[:200]!r}", llm_output=text)


@dataclass
class StructuredOutput:
    """The callable behind the runnable that `with_structured_output` returns."""

    bound: Runnable[Any, Any]
    schema: dict[str, Any] | type
    json_schema: dict[str, Any]
    method: str
    include_raw: bool
    to_messages: Callable[[Any], list[BaseMessage]]

    @property
    def tool_name(self) -> str:
        return str(self.json_schema.get("title") or "")

    def prompt(self, value: Any) -> list[BaseMessage]:
        """The caller's messages, with the JSON instruction just before the last one."""
        messages = self.to_messages(value)
        if self.method == "function_calling" or not messages:
            return messages
        text = JSON_MODE_INSTRUCTION
        if self.method == "json_schema":
            text = JSON_SCHEMA_INSTRUCTION.format(schema=json.dumps(self.json_schema, ensure_ascii=False))
        return [*messages[:-1], SystemMessage(content=text), messages[-1]]

    def parse(self, message: AIMessage) -> Any:
        """The validated value of an answer; `OutputParserException` says what is wrong."""
        if self.method == "function_calling":
            calls = [call for call in message.tool_calls if call["name"] == self.tool_name]
            if not calls:
                raise OutputParserException(f"the answer has no call of the tool {self.tool_name!r}", llm_output=message.text)
            data: Any = calls[0]["args"]
        else:
            data = extract_json(message.text)
        return self.validate(data, message.text)

    def validate(self, data: Any, text: str) -> Any:
        schema = self.schema
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            try:
                return schema.model_validate(data)
            except pydantic.ValidationError as exc:
                raise OutputParserException(_pydantic_errors(exc.errors()), llm_output=text) from exc
        if isinstance(schema, type) and issubclass(schema, pydantic.v1.BaseModel):
            try:
                return schema.parse_obj(data)
            except pydantic.v1.ValidationError as exc:
                raise OutputParserException(_pydantic_errors(exc.errors()), llm_output=text) from exc
        try:
            jsonschema.validate(data, self.json_schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the object"
            raise OutputParserException(f"{where}: {exc.message}", llm_output=text) from exc
        return data

    def repair(self, messages: list[BaseMessage], answer: AIMessage, error: OutputParserException) -> list[BaseMessage]:
        reason = str(error).split("\n")[0]
        if self.method == "function_calling":
            text = REPAIR_TOOL.format(error=reason, name=self.tool_name)
        else:
            text = REPAIR_JSON.format(error=reason)
        return [*messages, answer, HumanMessage(content=text)]

    def result(self, raw: AIMessage, parsed: Any, error: OutputParserException | None) -> Any:
        if self.include_raw:
            return {"raw": raw, "parsed": parsed, "parsing_error": error}
        if error is not None:
            raise OutputParserException(
                f"the model's answer did not fit the schema, even after one repair turn: {error}", llm_output=raw.text
            ) from error
        return parsed

    def invoke(self, value: Any, config: RunnableConfig | None = None) -> Any:
        messages = self.prompt(value)
        answer = self.bound.invoke(messages, config)
        try:
            return self.result(answer, self.parse(answer), None)
        except OutputParserException as first:
            messages = self.repair(messages, answer, first)
        answer = self.bound.invoke(messages, config)
        try:
            return self.result(answer, self.parse(answer), None)
        except OutputParserException as second:
            return self.result(answer, None, second)

    async def ainvoke(self, value: Any, config: RunnableConfig | None = None) -> Any:
        messages = self.prompt(value)
        answer = await self.bound.ainvoke(messages, config)
        try:
            return self.result(answer, self.parse(answer), None)
        except OutputParserException as first:
            messages = self.repair(messages, answer, first)
        answer = await self.bound.ainvoke(messages, config)
        try:
            return self.result(answer, self.parse(answer), None)
        except OutputParserException as second:
            return self.result(answer, None, second)


def _pydantic_errors(errors: Any) -> str:
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "the object"
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)
