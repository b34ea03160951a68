"""`deltamem chat | ingest | ask | sessions | inspect | demo`, through typer's CliRunner.

Stores live in tmp_path (``--home``). Only the tests marked ``smollm2`` load the real backbone;
the others use a store prepared directly, and must fail or finish before any model loads.
"""

from __future__ import annotations

import sys

import pytest
import torch
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.cli.ingest import decoded_blocks, text_chunks
from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.session import (
    ChatMessage,
    DirectorySessionStore,
    Fingerprint,
    SessionKey,
)

runner = CliRunner()
FINGERPRINT = Fingerprint(backbone="smollm2-135m-instruct", backbone_signature="test", adapter="none", config="test")


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def one_line_error(result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def store(tmp_path):
    """Two sessions written with the store alone: default/trip (2 turns, a state) and bob/notes (empty)."""
    store = DirectorySessionStore(tmp_path / "home")
    record = store.create(SessionKey(session_id="trip"), FINGERPRINT)
    generator = torch.Generator().manual_seed(0)
    state = DeltaMemState({i: torch.randn(1, 2, 4, 4, generator=generator) for i in range(3)})
    record = store.commit(
        record, new_messages=[ChatMessage(role="user", content="I land in Lisbon on Friday."),
                              ChatMessage(role="assistant", content="Noted: Lisbon, Friday.")],
        state=state, tokens_written=20,
    )
    store.commit(record, new_messages=[ChatMessage(role="user", content="I am vegetarian.")], state=state, tokens_written=7)
    store.create(SessionKey(user_id="bob", session_id="notes"), FINGERPRINT)
    return store


# -- sessions list | show | delete (no model) ---------------------------------------------------------
def test_sessions_list_show_delete(store):
    home = str(store.root)
    result = invoke("sessions", "list", "--home", home)
    assert result.exit_code == 0, result.output
    assert "trip" in result.output and "notes" in result.output and "bob" in result.output
    assert "27" in result.output  # tokens written by default/trip

    result = invoke("sessions", "list", "--home", home, "--user", "bob")
    assert result.exit_code == 0 and "notes" in result.output and "trip" not in result.output

    result = invoke("sessions", "show", "trip", "--home", home, "--last", "2")
    assert result.exit_code == 0, result.output
    assert "default/trip" in result.output and "3 layers x 2 head(s), rank 4" in result.output
    assert "Noted: Lisbon, Friday." in result.output and "I am vegetarian." in result.output
    assert "I land in Lisbon" not in result.output  # only the last 2 messages

    result = invoke("sessions", "show", "bob/notes", "--home", home)
    assert result.exit_code == 0 and "none yet" in result.output

    result = invoke("sessions", "delete", "trip", "--home", home, input="n\n")
    assert result.exit_code == 1 and store.exists(SessionKey(session_id="trip"))
    result = invoke("sessions", "delete", "trip", "--home", home, "--yes")
    assert result.exit_code == 0, result.output
    assert not store.exists(SessionKey(session_id="trip"))
    assert "no session default/trip" in one_line_error(invoke("sessions", "delete", "trip", "--home", home, "--yes"))
    assert "no session default/trip" in one_line_error(invoke("sessions", "show", "trip", "--home", home))


def test_sessions_list_of_an_empty_store(tmp_path):
    result = invoke("sessions", "list", "--home", str(tmp_path))
    assert result.exit_code == 0 and "no sessions in" in result.output


# -- input errors: one line, exit 2, before any model loads ----------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text\x00\x01\x02binary", "looks like a binary file (NUL byte at byte offset 4)"),
        ("caf\u00e9 au lait".encode("latin-1"), "is not UTF-8 text: byte 0xe9 at byte offset 3"),
        (b"", "is empty"),
        (b"  \n\n\t ", "holds only whitespace"),
        (None, "no such file"),
    ],
    ids=["binary", "latin-1", "empty", "blank", "missing"],
)
def test_ingest_refuses_bad_input(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    line = one_line_error(invoke("ingest", str(path), "--session", "s", "--home", str(tmp_path / "home")))
    assert message in line and str(path) in line
    assert not DirectorySessionStore(tmp_path / "home").exists(SessionKey(session_id="s"))


def test_ask_needs_an_existing_session(tmp_path):
    line = one_line_error(invoke("ask", "--session", "nope", "--home", str(tmp_path), "hello?"))
    assert "no session default/nope" in line and "deltamem sessions list" in line
    assert "the question is empty" in one_line_error(invoke("ask", "--session", "nope", "--home", str(tmp_path), " "))
    assert "invalid session_id" in one_line_error(invoke("ask", "--session", "bad id!", "--home", str(tmp_path), "hi"))


def test_chunks_split_at_boundaries_and_count_every_byte(tmp_path):
    text = "\n\n".join(f"Paragraph {i}: " + "word " * (5 + i % 10) for i in range(30)) + "\n"
    path = tmp_path / "doc.txt"
    path.write_text("\ufeff" + text, encoding="utf-8")  # a byte-order mark is dropped
    with open(path, "rb") as stream:
        chunks = list(text_chunks(decoded_blocks(stream, "doc"), 200))
    contents = [chunk for chunk, _ in chunks if chunk]
    assert all(len(chunk) <= 200 for chunk in contents) and len(contents) > 5
    assert all(chunk.startswith("Paragraph") for chunk in contents)  # cut at paragraph ends
    assert " ".join(contents).split() == text.split()
    assert sum(size for _, size in chunks) == len(text.encode())


# -- inspect (no model) -----------------------------------------------------------------------------------
def test_inspect_prints_norms_and_plots(store, tmp_path):
    plot = tmp_path / "plots" / "state.png"
    result = invoke("inspect", "--session", "trip", "--home", str(store.root), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    state = store.load(SessionKey(session_id="trip")).state
    for layer, norm in state.norms().items():
        assert f"{norm:.4g}" in result.output, (layer, result.output)
    assert "rank 4" in result.output and "write gate" not in result.output  # no gate statistics saved
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = invoke("inspect", "--session", "bob/notes", "--home", str(store.root))
    assert result.exit_code == 0 and "no δ-mem state yet" in result.output
    assert "nothing to plot" in one_line_error(
        invoke("inspect", "--session", "bob/notes", "--home", str(store.root), "--plot", str(plot))
    )


def test_inspect_plot_without_matplotlib(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    line = one_line_error(invoke("inspect", "--session", "trip", "--home", str(store.root), "--plot", str(tmp_path / "x.png")))
    assert "pip install matplotlib" in line


# -- the real backbone ---------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_ingest_then_ask(tmp_path):
    home = str(tmp_path / "home")
    text = "\n\n".join([
        "Ada Lovelace lives in Lisbon. Her cat is called Pixel and it sleeps on the piano all afternoon.",
        "The project deadline is the fourth of March, and the budget is twelve thousand euros in total.",
        "Meeting notes: the team agreed to ship the memory feature first, then the server, then the docs.",
        "Ada prefers cardamom tea over coffee, and she runs every Sunday morning along the river Tagus.",
    ]) + "\n"
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, "rb") as stream:
        parts = sum(bool(chunk) for chunk, _ in text_chunks(decoded_blocks(stream, "notes"), 200))
    assert parts >= 2

    result = invoke("ingest", str(path), "--session", "notes", "--home", home, "--chunk-chars", "200")
    assert result.exit_code == 0, result.output
    assert f"{parts} message(s)" in result.output
    store = DirectorySessionStore(home)
    record = store.load(SessionKey(session_id="notes"))
    assert record.metadata.message_count == parts and record.metadata.turn_count == parts
    assert record.state is not None and record.metadata.tokens_written > 0
    assert [m.metadata["part"] for m in record.messages] == list(range(parts))
    assert record.messages[0].metadata["source"] == str(path.resolve())

    result = invoke("ask", "--session", "notes", "--home", home, "--max-new-tokens", "6", "--no-write", "Where does Ada live?")
    assert result.exit_code == 0, result.output
    assert store.load(SessionKey(session_id="notes")).metadata.message_count == parts  # a probe writes nothing

    result = invoke("ask", "--session", "notes", "--home", home, "--max-new-tokens", "6", "What is the cat called?")
    assert result.exit_code == 0, result.output
    meta = store.load(SessionKey(session_id="notes")).metadata
    assert meta.message_count == parts + 2 and meta.turn_count == parts + 1

    result = invoke("inspect", "--session", "notes", "--home", home, "--probe", "Ada also likes green tea.")
    assert result.exit_code == 0, result.output
    assert "write gate β (mean)" in result.output and "probe of 25 characters, not saved" in result.output
    assert store.load(SessionKey(session_id="notes")).metadata.turn_count == parts + 1  # the probe saved nothing


@pytest.mark.smollm2
def test_chat_from_stdin_saves_each_turn(tmp_path):
    home = str(tmp_path / "home")
    result = invoke("chat", "--session", "c", "--home", home, "--max-new-tokens", "6", input="hello\n/stats\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "tokens written" in result.output  # /stats
    record = DirectorySessionStore(home).load(SessionKey(session_id="c"))
    assert record.metadata.turn_count == 1
    assert [m.role for m in record.messages] == ["user", "assistant"] and record.messages[0].content == "hello"
    assert record.state is not None
