"""Smoke tests of the LangChain examples: each runs as its own process, offline, on the embedded
backbone, with its data in a temporary DELTAMEM_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

pytestmark = pytest.mark.smollm2


def run_example(name: str, home: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DELTAMEM_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env, cwd=home, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_01_swap_llm(tmp_path):
    out = run_example("01_swap_llm.py", tmp_path)
    assert "=== stand-in chat model (no memory) ===" in out
    assert "Welcome! Lisbon has great vegetarian food." in out and "Sorry, where are you landing?" in out
    assert "=== DeltaMemLLM (memory per session) ===" in out
    # two chain calls, each sending the same system prompt and one question: the session holds both
    # turns, and the repeated system prompt is recognised (by content) and written once
    assert "holds 5 messages: ['system', 'user', 'assistant', 'user', 'assistant']" in out
    assert "committed turns: 2" in out and "text-log entries: 3" in out
    assert "a third call, turn 3: route=" in out
    assert (tmp_path / "sessions" / "ada" / "swap-demo").is_dir() and (tmp_path / "textlog").is_dir()


def test_02_tool_agent_makes_23_tool_calls_and_reads_the_task_state_back(tmp_path):
    out = run_example("02_tool_agent.py", tmp_path)
    lines = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert len(lines) == 23 and lines[-1].split()[2].startswith("submit_report")
    assert "reorder" in lines[12] and "PO-FIG-027" in out  # figs: 3 left, reordered up to 30
    assert "-> report accepted" in lines[-1]
    assert "tool calls: 23 (" in out
    assert "products read back from the log: 7; lowest stock: figs" in out


def test_03_the_second_run_remembers_the_first(tmp_path):
    first = run_example("03_persist_between_runs.py", tmp_path)
    assert "first run: telling the assistant 2 facts" in first and "saved: 2 turns, 4 messages" in first
    second = run_example("03_persist_between_runs.py", tmp_path)
    assert "second run: resumed session ada/persist-demo with 2 turns" in second
    assert "it was told ['My gym locker code is 7312.', 'My sister Ines lives in Porto.']" in second
    assert "text log, closest entry to the question: 'My gym locker code is 7312.' (turn 0)" in second
    reset = run_example("03_persist_between_runs.py", tmp_path, "--reset")
    assert "forgot session ada/persist-demo" in reset
    assert "first run" in run_example("03_persist_between_runs.py", tmp_path)
