"""`deltamem ask --hybrid`, `deltamem router calibrate | explain` and `deltamem forget`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.routing import CalibrationResult

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_calibrate_from_precomputed_hits_needs_no_model(tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"query": "What exactly did I say about the budget?", "hits": [{"id": "a", "text": "budget 12k", "distance": 0.2}], "needs_retrieval": True},
        {"query": "hello", "hits": [{"id": "b", "text": "hi", "distance": 0.9}], "state_confidence": 0.8, "needs_retrieval": False},
        {"query": "how many cats?", "hits": [{"id": "c", "text": "two cats", "distance": 0.3}], "needs_retrieval": True},
        {"query": "thanks", "hits": [], "needs_retrieval": False},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "router.json"
    result = invoke("router", "calibrate", str(labels), "--out", str(out), "--policies", "retrieval+state")
    assert result.exit_code == 0, result.output
    calibrated = CalibrationResult.load(out)
    assert calibrated.n_examples == 4 and calibrated.n_positive == 2 and calibrated.f1 == 1.0
    assert "F1 1.000" in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", "labels.jsonl:1: not valid JSON"), ('{"query": "x"}', "labels.jsonl:1: needs_retrieval: Field required")],
)
def test_calibrate_names_the_bad_line(tmp_path, line, message):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(line + "\n")
    result = invoke("router", "calibrate", str(labels), "--out", str(tmp_path / "r.json"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_forget_and_explain_refuse_unknown_sessions_before_loading_a_model(tmp_path):
    for args in (("forget", "--session", "nope", "--yes"), ("router", "explain", "hi", "--session", "nope")):
        result = invoke(*args, "--home", str(tmp_path / "home"))
        assert result.exit_code == 2 and "no session default/nope" in result.output


@pytest.mark.smollm2
def test_hybrid_ask_logs_turns_then_explain_and_forget(tmp_path):
    home, log = str(tmp_path / "home"), str(tmp_path / "log")
    common = ("--home", home, "--adapter", "none")
    result = invoke("ask", "My locker code is 7312.", "--session", "gym", "--create", "--hybrid", "--textlog", log,
                    "--max-new-tokens", "8", "--json", *common)
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)
    assert first["turn_count"] == 1 and first["route"]["route"] in ("state", "retrieve", "both")

    textlog = TextLog(TextLogConfig(path=tmp_path / "log"))
    try:
        assert textlog.count(user_id="default", session_id="gym") == 2
        secret = textlog.search("locker code", user_id="default", session_id="gym", k=1)[0]
    finally:
        textlog.close()
    assert "7312" in secret.text

    result = invoke("router", "explain", "What is my locker code exactly?", "--session", "gym", "--textlog", log,
                    "--router", "cues+retrieval", "--json", *common)
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["retrieval_wanted"] and secret.id in decision["retrieved_ids"]

    result = invoke("forget", "--session", "gym", "--entry", secret.id, "--textlog", log, *common)
    assert result.exit_code == 0, result.output
    assert "the state was rebuilt" in result.output
    result = invoke("sessions", "show", "gym", "--home", home)
    assert result.exit_code == 0 and "7312" not in result.output
