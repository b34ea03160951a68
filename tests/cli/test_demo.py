"""`deltamem demo`: the side-by-side of the bare backbone, the δ-mem state and the hybrid.

The tests run the demo on a tiny random Llama with the real SmolLM2 tokenizer (saved to a folder,
so process 1, a child process, loads it too) and the real text log (MiniLM + Chroma). The tiny
model answers nothing sensible, so the tests that need a known reply replace the demo's
`generate` by an oracle that says the fact exactly when its input holds it. Only the test
marked ``smollm2`` runs the real backbone with its shipped adapter.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from deltamem_agents.cli import _demo_logic, app
from deltamem_agents.cli._demo_logic import (
    ANSWERERS,
    CONVERSATION,
    FACT_VALUE,
    LABELS,
    NICKNAME,
    QUESTIONS,
    source_of,
)
from deltamem_agents.session import DirectorySessionStore, SessionKey
from tests.tiny_models import tiny_model

runner = CliRunner()
ENV = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, chat_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-backbone")
    tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


def run_demo(tmp_path, *args: str):
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["demo", "--home", str(tmp_path / "home"), "--report", str(report), *args], env=ENV)
    assert "Traceback" not in result.output, result.output
    return result, json.loads(report.read_text()) if report.is_file() else None


@pytest.fixture
def oracle(monkeypatch):
    """Replies with the fact exactly when the model's input (window, notes, question) holds it."""
    real = _demo_logic.generate

    def generate(session, question, max_new_tokens):
        _, context = real(session, question, 1)
        seen = session.tokenizer.decode(context or []).lower()
        return (f"{FACT_VALUE}!" if FACT_VALUE.lower() in seen else "I do not know."), context

    monkeypatch.setattr(_demo_logic, "generate", generate)


def test_two_processes_and_the_side_by_side_table(tiny_backbone, tmp_path):
    result, report = run_demo(tmp_path, "--backbone", str(tiny_backbone), "--max-new-tokens", "4")
    out = result.output
    assert report is not None, out
    # the exit code is the check's verdict (a random model does not recall the fact)
    assert result.exit_code == (0 if report["check"]["passed"] else 1), out
    assert ("✓ check passed" in out) == report["check"]["passed"]

    # persistence: process 1 wrote and saved, this process loaded the very same state
    assert "process 1 (pid" in out and "process 2 (pid" in out
    assert "✓ the state process 2 loaded is the one process 1 saved" in out
    assert report["process_1"]["pid"] != os.getpid() and report["process_1"]["state_digest_saved"]
    record = DirectorySessionStore(tmp_path / "home").load(SessionKey(session_id="demo"))
    assert record.metadata.turn_count == len(CONVERSATION)
    assert record.metadata.message_count == 1 + 2 * len(CONVERSATION)  # system + the exchanges; probes write nothing
    assert record.state is not None

    # the table: every question, answered by the three answerers, each with who answered
    answers = report["answers"]
    assert [(a["question"], a["answerer"]) for a in answers] == [(q.text, w) for q in QUESTIONS for w in ANSWERERS]
    for index, question in enumerate(QUESTIONS, 1):
        assert f"Q{index}" in out and question.text in out
    for label in LABELS.values():
        assert out.count(label) == len(QUESTIONS)
    for header in ("its input", "reply", f"has {FACT_VALUE}", f"has {NICKNAME}", "which part answered", "router"):
        assert header in out
    assert out.count("router for (c): ") == len(QUESTIONS)
    for a in answers:
        assert (a["route"] is not None) == (a["answerer"] == "hybrid")
        assert a["source"] == source_of(a["answerer"], in_reply=a["in_reply"], in_window=a["in_window"], in_notes=a["in_notes"])

    # the window truly lacks the fact and the instruction, and every answerer began on exactly it
    window = report["window_text"].lower()
    assert report["window_tokens"] == 64 < report["history_tokens"]
    assert FACT_VALUE.lower() not in window and NICKNAME.lower() not in window
    assert [m["place"] for m in report["messages"][:3]] == ["out", "out", "out"]  # system, the fact, its answer
    assert report["messages"][-1]["place"] == "in"
    assert "'Quillon' no · 'Captain' no" in out
    for a in answers:
        assert a["window_matches"] in (True, None)
        context = (a["context_text"] or "").lower()
        if a["answerer"] == "hybrid":  # the fact reaches the input only inside a retrieved note
            assert context.count(FACT_VALUE.lower()) == sum(n.lower().count(FACT_VALUE.lower()) for n in a["notes"])
        else:
            assert FACT_VALUE.lower() not in context and not a["notes"]
    # the router found the fact in the text log (MiniLM + Chroma are real here)
    fact = answers[ANSWERERS.index("hybrid")]
    assert fact["route"] in ("both", "retrieve") and fact["in_notes"]
    assert f"note shown to (c): - {CONVERSATION[0][0]}" in out


def test_the_check_passes_when_only_the_hybrid_recalls(tiny_backbone, tmp_path, oracle):
    result, report = run_demo(tmp_path, "--backbone", str(tiny_backbone), "--one-process", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert "✓ check passed" in result.output and "✗" not in result.output
    rows = {a["answerer"]: a for a in report["answers"] if a["question"] == QUESTIONS[0].text}
    assert rows["hybrid"]["in_reply"] and rows["hybrid"]["source"] == "the retrieved note"
    assert not rows["bare"]["in_reply"] and rows["bare"]["source"] == "none: not in the reply"
    assert not rows["state"]["in_reply"]
    assert "process 1" not in result.output  # --one-process


@pytest.mark.parametrize(
    ("args", "failed"),
    [
        (["--expect", "Zyxwvutsr"], f"✗ (c) the hybrid answers {QUESTIONS[0].text!r} with 'Zyxwvutsr'"),
        (["--window", "400"], f"✗ {FACT_VALUE!r} is not in the window"),  # the window holds it all: nothing to show
    ],
)
def test_a_failing_check_exits_1(tiny_backbone, tmp_path, oracle, args, failed):
    result, report = run_demo(tmp_path, "--backbone", str(tiny_backbone), "--one-process", "--max-new-tokens", "2", *args)
    assert result.exit_code == 1, result.output
    assert failed in result.output and "✗ check failed (exit code 1)" in result.output
    assert report["check"]["passed"] is False


def test_which_part_answered():
    assert source_of("bare", in_reply=False, in_window=True, in_notes=False) == "none: not in the reply"
    assert source_of("state", in_reply=True, in_window=True, in_notes=False) == "the window"
    assert source_of("hybrid", in_reply=True, in_window=False, in_notes=True) == "the retrieved note"
    assert source_of("state", in_reply=True, in_window=False, in_notes=False) == "the state (no text shown held it)"
    assert source_of("hybrid", in_reply=True, in_window=False, in_notes=False) == "the state (no text shown held it)"
    assert source_of("bare", in_reply=True, in_window=False, in_notes=False).startswith("none: a guess")


@pytest.mark.smollm2
def test_the_real_demo_passes_its_check(tmp_path):
    """The embedded SmolLM2 with its shipped adapter, two processes, as `bash scripts/demo.sh` runs it."""
    result, report = run_demo(tmp_path)
    assert result.exit_code == 0, result.output
    fact = {a["answerer"]: a for a in report["answers"] if a["question"] == QUESTIONS[0].text}
    assert fact["hybrid"]["in_reply"] and fact["hybrid"]["source"] == "the retrieved note"
    assert not fact["bare"]["in_reply"] and not fact["bare"]["in_window"]
