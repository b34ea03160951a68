"""with_structured_output on a scripted tiny backbone: JSON found, validated, repaired once."""

from __future__ import annotations

from typing import Annotated

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_deltamem import DeltaMemLLM
from langchain_deltamem._structured import JSON_MODE_INSTRUCTION, extract_json
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1
from typing_extensions import TypedDict


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


class JokeDict(TypedDict):
    """Joke to tell user."""

    setup: Annotated[str, ..., "question to set up a joke"]
    punchline: Annotated[str, ..., "answer to resolve the joke"]


class JokeV1(BaseModelV1):
    """Joke to tell user."""

    setup: str
    punchline: str


GOOD = '{"setup": "Why did the cat sit on the computer?", "punchline": "To keep an eye on the mouse."}'


def session_texts(runtime, role):
    return [m.content for m in runtime.session("default").messages if m.role == role]


def test_a_pydantic_schema_is_shown_to_the_model_and_its_json_validated(memory, script, tiny_runtime):
    script.say(f"Here you go: {GOOD} Enjoy!")
    joke = DeltaMemLLM(memory=memory, max_tokens=60).with_structured_output(Joke).invoke("Tell me a joke about cats.")
    assert joke == Joke(setup="Why did the cat sit on the computer?", punchline="To keep an eye on the mouse.")
    systems = session_texts(tiny_runtime, "system")
    assert len(systems) == 1 and systems[0].startswith(JSON_MODE_INSTRUCTION) and '"punchline"' in systems[0]
    assert session_texts(tiny_runtime, "user") == ["Tell me a joke about cats."]  # the question is logged as asked


def test_a_bad_answer_gets_one_repair_turn(memory, script, tiny_runtime):
    script.say('{"setup": "Why?"}', GOOD)
    joke = DeltaMemLLM(memory=memory, max_tokens=60).with_structured_output(Joke).invoke("Tell me a joke.")
    assert joke.punchline == "To keep an eye on the mouse."
    repair = session_texts(tiny_runtime, "user")[-1]
    assert repair.startswith("That answer could not be used: punchline: Field required")
    assert script.turns == 2


def test_two_bad_answers_raise_or_come_back_raw(memory, script):
    script.say("No JSON here.", "Still none.", "Nope.", "{not json")
    structured = DeltaMemLLM(memory=memory, max_tokens=20).with_structured_output(Joke)
    with pytest.raises(OutputParserException, match="even after one repair turn: the answer holds no JSON object"):
        structured.invoke("Tell me a joke.")
    raw = DeltaMemLLM(memory=memory, max_tokens=20).with_structured_output(Joke, include_raw=True).invoke("Another.")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)
    assert raw["raw"].content == "{not json"


def test_typeddicts_json_schemas_and_pydantic_v1_models(memory, script):
    script.say(GOOD, GOOD, GOOD, '{"setup": 1, "punchline": "x"}', GOOD)
    llm = DeltaMemLLM(memory=memory, max_tokens=60)
    assert llm.with_structured_output(JokeDict).invoke("A.") == {
        "setup": "Why did the cat sit on the computer?", "punchline": "To keep an eye on the mouse.",
    }
    assert set(llm.with_structured_output(Joke.model_json_schema(), method="json_mode").invoke("B.")) == {"setup", "punchline"}
    assert isinstance(llm.with_structured_output(JokeV1).invoke("C."), JokeV1)
    # a JSON schema is checked too: "setup" must be a string
    assert llm.with_structured_output(Joke.model_json_schema()).invoke("D.")["setup"].startswith("Why")
    assert script.turns == 5


def test_function_calling_asks_for_the_schema_tool(memory, script, tiny_runtime):
    script.say(f'<tool_call>{{"name": "Joke", "arguments": {GOOD}}}</tool_call>')
    joke = DeltaMemLLM(memory=memory, max_tokens=60).with_structured_output(Joke, method="function_calling").invoke("Joke.")
    assert isinstance(joke, Joke)
    notes = [m.content for m in tiny_runtime.session("default").messages if m.metadata.get("kind") == "tools"]
    assert "You must call the tool 'Joke' now." in notes[0]


async def test_structured_output_async_and_streamed(memory, script):
    script.say(GOOD, GOOD)
    structured = DeltaMemLLM(memory=memory, max_tokens=60).with_structured_output(Joke)
    assert isinstance(await structured.ainvoke("Async joke."), Joke)
    assert [type(chunk) for chunk in structured.stream("Streamed joke.")] == [Joke]


def test_the_schema_is_reported_to_tracing_callbacks(memory, script):
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.utils.function_calling import convert_to_json_schema

    class Options(BaseCallbackHandler):
        options: list = []

        def on_chat_model_start(self, serialized, messages, *, options=None, **kwargs):
            self.options.append(options)

    handler = Options()
    script.say(GOOD)
    DeltaMemLLM(memory=memory, max_tokens=60).with_structured_output(Joke).invoke("Joke.", config={"callbacks": [handler]})
    assert handler.options[0]["ls_structured_output_format"]["schema"] == convert_to_json_schema(Joke)


def test_bad_arguments_are_refused(memory):
    llm = DeltaMemLLM(memory=memory)
    with pytest.raises(ValueError, match="method must be"):
        llm.with_structured_output(Joke, method="xml")
    with pytest.raises(TypeError, match="unexpected arguments \\['tools'\\]"):
        llm.with_structured_output(Joke, tools=[])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": {"b": [1, 2]}}\n```', {"a": {"b": [1, 2]}}),
        ('Sure! {broken {"a": "}"} trailing', {"a": "}"}),
    ],
    ids=["bare", "fenced-nested", "after-a-broken-brace"],
)
def test_extract_json_finds_the_first_object(text, expected):
    assert extract_json(text) == expected
