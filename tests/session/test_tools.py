"""Tool calling: the prompt, parsing the model's calls, and sessions that use them."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.session import (
    SessionKey,
)
from deltamem_agents.session import session as session_module
from deltamem_agents.session.tools import (
    ToolCall,
    ToolSpec,
    ToolSpecError,
    as_tool_spec,
    format_tool_calls,
    normalize_tool_choice,
    parse_tool_calls,
    render_tools_prompt,
    tool_call_prefix_length,
)
from deltamem_agents.store.records import ChatMessage
from tests.tiny_models import tiny_runtime

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# -- the format ------------------------------------------------------------------------------------
def test_openai_tools_become_specs_and_the_prompt_shows_them():
    spec = as_tool_spec(WEATHER)
    assert spec == ToolSpec(name="get_weather", description="Weather in a city", parameters=WEATHER["function"]["parameters"])
    assert as_tool_spec(WEATHER["function"]) == spec
    prompt = render_tools_prompt([spec], required="get_weather")
    assert '"name": "get_weather"' in prompt and "<tool_call>" in prompt and "must call the tool 'get_weather'" in prompt
    assert "at least one tool" in render_tools_prompt([spec], required="any")


@pytest.mark.parametrize(
    ("tools", "match"),
    [([], "no tools"), ([WEATHER, WEATHER], "unique"), ([{"function": {"name": "bad name!"}}], "invalid tool"), (["x"], "OpenAI-style")],
)
def test_bad_tools_are_refused_with_the_reason(tools, match):
    with pytest.raises(ToolSpecError, match=match):
        render_tools_prompt(tools)


def test_tool_choice_must_name_a_given_tool():
    with pytest.raises(ToolSpecError, match="not among the tools"):
        render_tools_prompt([WEATHER], required="search")


def test_calls_round_trip_through_the_text_format():
    calls = [ToolCall(name="get_weather", arguments={"city": "Lisbon"}), ToolCall(name="add", arguments={"a": 1, "b": 2})]
    text, parsed = parse_tool_calls("Let me check.\n" + format_tool_calls(calls))
    assert text == "Let me check."
    assert [(c.name, c.arguments) for c in parsed] == [("get_weather", {"city": "Lisbon"}), ("add", {"a": 1, "b": 2})]
    assert len({c.id for c in parsed}) == 2
    openai = calls[0].to_openai()
    assert json.loads(openai["function"]["arguments"]) == {"city": "Lisbon"}
    assert ToolCall.from_openai(openai) == calls[0]


def test_parsing_is_lenient_on_form_and_strict_on_content():
    # a fenced body, string arguments, a missing closing tag at the very end
    _, calls = parse_tool_calls('<tool_call>```json\n{"name": "f", "arguments": "{\\"x\\": 1}"}\n```</tool_call>')
    assert [(c.name, c.arguments) for c in calls] == [("f", {"x": 1})]
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}')
    assert [c.name for c in calls] == ["f"]
    # not JSON, no name, an unknown tool: the text stays as written
    for text in ("<tool_call>call f please</tool_call>", '<tool_call>{"arguments": {}}</tool_call>'):
        assert parse_tool_calls(text) == (text, [])
    unknown = '<tool_call>{"name": "rm", "arguments": {}}</tool_call>'
    assert parse_tool_calls(unknown, known=["f"]) == (unknown, [])


def test_markup_that_may_start_a_call_is_held_back():
    assert tool_call_prefix_length("Sure <tool") == len("<tool")
    assert tool_call_prefix_length('Sure <tool_call>{"na') == len('<tool_call>{"na')
    assert tool_call_prefix_length("Sure.") == 0


# -- in a session ----------------------------------------------------------------------------------
@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store", window=1024, seed=3)


@pytest.fixture
def scripted(monkeypatch, chat_tokenizer):
    """Make the model "say" a given text: sampling returns its tokens, then end of turn. The
    tokens are still fed through the model, so the KV cache and the state are real."""

    def script(text: str) -> None:
        tokens = [*chat_tokenizer(text, add_special_tokens=False)["input_ids"], chat_tokenizer.convert_tokens_to_ids("<|im_end|>")]
        monkeypatch.setattr(session_module, "sample_token", lambda logits, gen, generator: tokens.pop(0))

    return script


def test_a_reply_with_a_call_is_parsed_and_kept_on_the_message(runtime, scripted):
    session = runtime.session("tools")
    scripted('Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    pieces = list(session.stream("Weather in Oslo?", tools=[WEATHER]))
    reply = session.last_reply
    assert "<tool" not in "".join(pieces) and "".join(pieces).strip() == "Checking."
    assert reply.text == "Checking." and reply.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    note, question, answer = session.messages[-3:]
    assert note.role == "system" and note.metadata == {"kind": "tools"} and "get_weather" in note.content
    assert question.content == "Weather in Oslo?"
    assert answer.tool_calls == [reply.tool_calls[0].to_openai()] and "<tool_call>" in answer.content

    # the result goes back as a tool message; the note is not repeated within the turn
    scripted("It is sunny in Oslo.")
    result = ChatMessage(role="tool", content='{"sky": "sunny"}', tool_call_id=reply.tool_calls[0].id)
    final = session.reply(result, tools=[WEATHER])
    assert final.text == "It is sunny in Oslo." and final.finish_reason == "stop" and not final.tool_calls
    assert sum(m.metadata.get("kind") == "tools" for m in session.messages) == 1
    runtime.save(session)
    reloaded = runtime.store.load(SessionKey(session_id="tools"))
    assert reloaded.messages[-2].tool_call_id == reply.tool_calls[0].id


def test_text_that_only_looks_like_a_call_is_streamed_in_full(runtime, scripted):
    session = runtime.session("almost")
    scripted("I would use <tool_call>but not now")
    pieces = list(session.stream("Hi", tools=[WEATHER]))
    assert "".join(pieces) == "I would use <tool_call>but not now" == session.last_reply.text
    assert session.last_reply.tool_calls == []


def test_notes_are_context_only_and_never_written(runtime):
    session = runtime.session("notes")
    session.ingest("Remember the number 42.")
    before = session.state.clone()
    stats = session.ingest(ChatMessage(role="system", content=render_tools_prompt([WEATHER]), metadata={"kind": "tools"}))
    assert stats.tokens_written == 0 and stats.prefill_tokens > 0
    assert session.state.equal(before)


def test_new_messages_drop_what_the_session_already_has(runtime, scripted):
    session = runtime.session("sync")
    scripted('<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    reply = session.reply("Weather in Rome?", tools=[WEATHER])
    # a client sends the conversation back the way frameworks store it: the call without markup
    history = [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [reply.tool_calls[0].to_openai()]},
    ]
    result = {"role": "tool", "content": "rain", "tool_call_id": reply.tool_calls[0].id}
    assert [m.content for m in session.new_messages([*history, result])] == ["rain"]
    assert [m.content for m in session.new_messages([result])] == ["rain"]  # only the new one
    assert session.new_messages(history) == []
    # a different conversation is new as a whole
    other = [{"role": "user", "content": "Weather in Paris?"}]
    assert [m.content for m in session.new_messages(other)] == ["Weather in Paris?"]


def test_a_required_tool_makes_the_answer_start_as_its_call(runtime, scripted):
    session = runtime.session("forced")
    scripted('{"city": "Oslo"}}</tool_call>')  # the model only completes the arguments
    reply = session.reply("Weather in Oslo?", tools=[WEATHER], tool_choice="get_weather")
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert reply.raw_text.startswith('<tool_call>{"name": "get_weather", "arguments": {"city"')
    scripted('get_weather", "arguments": {"city": "Rome"}}</tool_call>')  # "any": the name too
    reply = session.reply("And Rome?", tools=[WEATHER], tool_choice="any")
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", {"city": "Rome"})]
    # the forced start is part of the answer, in the context and in the state
    assert session.messages[-1].content == reply.raw_text
    assert reply.stats.prefill_tokens > 0 and reply.stats.tokens_written > 0


def test_a_response_prefix_starts_the_answer(runtime, scripted):
    session = runtime.session("prefix")
    scripted('"a": 1}')
    pieces = list(session.stream("JSON please", response_prefix="{"))
    assert pieces[0] == "{" and "".join(pieces) == '{"a": 1}' == session.last_reply.text
    from deltamem_agents.session import SessionError, reply_batch

    with pytest.raises(SessionError, match="response_prefix is not batched"):
        reply_batch([(session, "again", {"response_prefix": "{"})])


def test_a_system_prompt_and_a_memory_window_add_only_the_new_turn(runtime, scripted):
    session = runtime.session("window")
    for question in ("One?", "Two?"):
        scripted(f"Answer to {question}")
        session.reply(question)
    session.ingest({"role": "system", "content": "Be brief."})
    said = [{"role": m.role, "content": m.content} for m in session.messages if m.role != "system"]
    # an agent: its system prompt, the last exchange of its memory window, the new question
    sent = [{"role": "system", "content": "Be brief."}, *said[-2:], {"role": "user", "content": "Three?"}]
    assert [m.content for m in session.new_messages(sent)] == ["Three?"]
    new_prompt = [{"role": "system", "content": "Be kind."}, *said, {"role": "user", "content": "Three?"}]
    assert [m.content for m in session.new_messages(new_prompt)] == ["Be kind.", "Three?"]


def test_a_rewound_conversation_is_refused_rather_than_written_twice(runtime, scripted):
    from deltamem_agents.session import ConversationForkError

    session = runtime.session("fork")
    for question in ("One?", "Two?"):
        scripted(f"Answer to {question}")
        session.reply(question)
    said = [{"role": m.role, "content": m.content} for m in session.messages]
    with pytest.raises(ConversationForkError, match="messages 1-2 of 4.*only grows"):
        session.new_messages([*said[:2], {"role": "user", "content": "Two, again?"}])


# -- tool_choice, as every face reads it (normalize_tool_choice) ------------------------------------------
TWO = ["get_weather", "add"]


@pytest.mark.parametrize(
    ("choice", "names", "expected"),
    [
        (None, TWO, None),
        (False, TWO, None),
        ("auto", TWO, None),
        ("none", TWO, "none"),
        ("none", [], "none"),
        (None, [], None),
        ("auto", [], None),
        (True, TWO, "any"),
        ("any", TWO, "any"),
        ("required", TWO, "any"),
        ("required", ["add"], "any"),
        ("add", TWO, "add"),
        ({"type": "function", "function": {"name": "add"}}, TWO, "add"),
        ({"function": {"name": "add"}}, TWO, "add"),
        ({"name": "add"}, TWO, "add"),
    ],
)
def test_every_tool_choice_form_is_read_one_way(choice, names, expected):
    assert normalize_tool_choice(choice, names) == expected


def test_a_single_tool_is_asked_for_by_name_when_wanted():
    assert normalize_tool_choice(True, ["add"], name_single_tool=True) == "add"
    assert normalize_tool_choice("required", ["add"], name_single_tool=True) == "add"
    assert normalize_tool_choice("any", TWO, name_single_tool=True) == "any"


def test_a_pydantic_tool_choice_is_read_as_its_dict():
    from pydantic import BaseModel

    class Function(BaseModel):
        name: str

    class Named(BaseModel):
        type: str = "function"
        function: Function

    assert normalize_tool_choice(Named(function=Function(name="add")), TWO) == "add"


@pytest.mark.parametrize(
    ("choice", "names", "match"),
    [
        ("search", TWO, "'search' is not among the tools"),
        ({"type": "function", "function": {"name": "nope"}}, TWO, "not among the tools"),
        ({"type": "function"}, TWO, "names no tool"),
        ({"function": {"name": ""}}, TWO, "names no tool"),
        ("required", [], "tool_choice needs tools"),
        ("add", [], "tool_choice needs tools"),
        (3, TWO, "tool_choice must be"),
    ],
)
def test_bad_tool_choices_are_refused_with_the_reason(choice, names, match):
    with pytest.raises(ToolSpecError, match=match):
        normalize_tool_choice(choice, names)
    assert issubclass(ToolSpecError, ValueError)


def test_the_error_can_name_the_tools_as_the_face_calls_them():
    with pytest.raises(ToolSpecError, match="not among the bound tools"):
        normalize_tool_choice("missing", ["add"], source="bound tools")
