"""The six conditions on a tiny model with the real tokenizer and a real embedded Chroma log."""

import pytest

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.data import GeneratorConfig, generate_conversations
from deltamem_agents.eval import (
    CONDITIONS,
    EvalConfig,
    markdown,
    run_eval,
    write_report,
)
from tests.tiny_models import randomize_memory, tiny_model

SMALL = GeneratorConfig(sessions=(2, 2), facts=(1, 1), preferences=(1, 1), instructions=(1, 1), task_updates=(1, 1),
                        filler_per_session=(1, 1), tail_exchanges=2, fact_probes=1, preference_probes=1)


@pytest.fixture(scope="module")
def report(chat_tokenizer, tmp_path_factory):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())  # zero delta heads: the state changes nothing
    conversations = generate_conversations("test", 2, config=SMALL)
    config = EvalConfig(conditions=(*CONDITIONS, "state_other", "hybrid_other"), window_tokens=24, max_new_tokens=4,
                        request_max_new_tokens=4)
    return run_eval(model, chat_tokenizer, handle, conversations, dataset="tiny", backbone="tiny-llama", adapter=None,
                    config=config, max_probes=3, textlog_dir=tmp_path_factory.mktemp("log"), progress=False,
                    perplexity={"source": "x", "tokens": 10, "bare": 10.0, "adapter": 10.1, "ratio": 1.01})


def test_every_condition_answers_every_probe(report):
    assert report.probes == 6
    assert len(report.answers) == 6 * 8
    by = {s.condition: s for s in report.summaries}
    assert list(by) == [*CONDITIONS, "state_other", "hybrid_other"]
    for answer in report.answers:
        assert answer.prompt_tokens > 0 and answer.latency_ms > 0
        assert (answer.f1 is None) == (answer.kind == "request")


def test_prompt_tokens_follow_what_each_condition_puts_in_context(report):
    tokens = {}
    for answer in report.answers:
        tokens.setdefault((answer.conversation, answer.probe), {})[answer.condition] = answer.prompt_tokens
    for per in tokens.values():
        assert per["no_memory"] < per["recent_window"] == per["state"] == per["state_other"]
        assert per["full_history"] > per["recent_window"]
        assert per["rag"] > per["recent_window"]  # the notes
        assert per["hybrid"] >= per["state"]
        assert per["hybrid_other"] == per["hybrid"]  # same notes, another state
        assert per["recent_window"] - per["no_memory"] <= 24 + 30  # the window, minus the default system prompt


def test_an_untrained_state_answers_exactly_like_the_window_alone(report):
    answers = {(a.conversation, a.probe, a.condition): a.prediction for a in report.answers}
    for (conversation, probe, condition), text in answers.items():
        if condition == "state":
            assert text == answers[(conversation, probe, "recent_window")]


def test_the_report_has_a_table_goals_and_a_chart(report, tmp_path):
    text = markdown(report)
    for label in ("1. no memory", "2. recent window", "3. full history", "4. RAG only", "5. δ-mem state", "6. hybrid"):
        assert f"| {label} |" in text
    # 3 goals, 2 controls on F1, 3 state-content goals (recall on facts, on pref+instr+task; the hybrid's F1)
    assert len(report.goals) == 8 and "## Goals" in text and "Empty-memory check" in text
    assert sum(g.name.startswith("content: ") for g in report.goals) == 3
    assert "## What the state's content adds" in text and "## By question category" not in text
    files = write_report(report, tmp_path, "tiny")
    assert [f.name for f in files] == ["tiny.json", "tiny.md", "tiny.png"]
    assert files[2].stat().st_size > 1000


def test_a_memory_that_reads_changes_the_state_answers_only(chat_tokenizer, tmp_path):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle, delta_std=2.0)
    [conversation] = generate_conversations("test", 1, config=SMALL)
    config = EvalConfig(conditions=("recent_window", "state"), window_tokens=24, max_new_tokens=6)
    result = run_eval(model, chat_tokenizer, handle, [conversation], dataset="tiny", backbone="tiny-llama", adapter=None,
                      config=config, max_probes=2, progress=False)
    window = [a.prediction for a in result.answers if a.condition == "recent_window"]
    state = [a.prediction for a in result.answers if a.condition == "state"]
    assert window != state


def test_locomo_format_files_run_through_every_condition(chat_tokenizer, tmp_path):
    import json

    from deltamem_agents.data.locomo import load_locomo
    from tests.data.test_locomo import SAMPLE

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([SAMPLE]))
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())
    config = EvalConfig(window_tokens=16, max_new_tokens=3, full_history_limit=40)
    result = run_eval(model, chat_tokenizer, handle, load_locomo(path), dataset="locomo", backbone="tiny-llama",
                      adapter=None, config=config, textlog_dir=tmp_path, progress=False)
    assert result.probes == 2 and len(result.answers) == 12
    assert {a.kind for a in result.answers} == {"locomo"}
    full = [a.prompt_tokens for a in result.answers if a.condition == "full_history"]
    assert all(n <= 40 + 40 for n in full)  # truncated to the most recent messages that fit


def test_controls_and_free_chat_run_end_to_end(chat_tokenizer, tmp_path):
    from deltamem_agents.data.prompts import FREE_PROMPTS

    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())  # zero delta heads: the state changes nothing
    conversations = generate_conversations("test", 2, config=SMALL)
    config = EvalConfig(conditions=("state", "state_other"), window_tokens=24, max_new_tokens=4,
                        request_max_new_tokens=4, free_prompts=2, free_tokens=8)
    report = run_eval(model, chat_tokenizer, handle, conversations, dataset="tiny", backbone="tiny-llama", adapter=None,
                      config=config, max_probes=2, progress=False)
    assert len(report.answers) == 2 * 2 * 2
    # content deltas: paired per probe; an untrained state answers as another's, so nothing is added
    overall = [d for d in report.content_deltas if d.by == "overall"]
    assert [(d.condition, d.control) for d in overall] == [("state", "state_other")]
    assert overall[0].questions + overall[0].requests == 4
    assert all(d.f1_points in (None, 0.0) and d.recall_points in (None, 0.0) for d in report.content_deltas)
    # free chat: prompt i on conversation i, each with the state and bare, on the same context
    chat = report.free_chat
    assert chat is not None and chat.prompts == 2 and chat.free_tokens == 8
    assert [(r.conversation, r.prompt, r.memory) for r in chat.replies] == [
        (conversations[0].id, FREE_PROMPTS[0], "adapter"), (conversations[0].id, FREE_PROMPTS[0], "bare"),
        (conversations[1].id, FREE_PROMPTS[1], "adapter"), (conversations[1].id, FREE_PROMPTS[1], "bare")]
    adapter = [r for r in chat.replies if r.memory == "adapter"]
    bare = [r for r in chat.replies if r.memory == "bare"]
    assert [r.reply for r in adapter] == [r.reply for r in bare]  # a state that reads nothing is the bare backbone
    assert all(0 < r.tokens <= 16 and 0.0 <= r.repeated_share <= 1.0 for r in chat.replies)
    assert chat.adapter_share == chat.bare_share
    names = [g.name for g in report.goals]
    assert any(n.startswith("free chat") for n in names)
    assert any(n.startswith("content: state − state_other") for n in names)
    text = markdown(report)
    assert "## What the state's content adds" in text and "## Free chat" in text


def test_controls_need_a_second_conversation(chat_tokenizer):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())
    [conversation] = generate_conversations("test", 1, config=SMALL)
    with pytest.raises(ValueError, match="need at least two conversations"):
        run_eval(model, chat_tokenizer, handle, [conversation], dataset="tiny", backbone="tiny-llama", adapter=None,
                 config=EvalConfig(conditions=("state", "hybrid_other")), progress=False)


def test_free_chat_with_a_memory_that_reads_differs_from_bare(chat_tokenizer):
    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle, delta_std=2.0)
    conversations = generate_conversations("test", 2, config=SMALL)
    config = EvalConfig(conditions=("recent_window",), window_tokens=24, max_new_tokens=2, free_prompts=1, free_tokens=8)
    report = run_eval(model, chat_tokenizer, handle, conversations, dataset="tiny", backbone="tiny-llama", adapter=None,
                      config=config, max_probes=1, progress=False)
    assert report.free_chat is not None
    adapter, bare = report.free_chat.replies
    assert (adapter.memory, bare.memory) == ("adapter", "bare")
    assert adapter.reply != bare.reply  # the state is written even with no state condition, and read
    assert report.content_deltas == []  # no control ran
