"""`deltamem data generate`: split files a training run can read, and refusals that protect them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.data import read_jsonl

runner = CliRunner()


def test_generate_writes_splits_with_the_asked_generator(tmp_path):
    out = tmp_path / "data"
    result = runner.invoke(app, ["data", "generate", "--out", str(out), "--train", "3", "--dev", "2", "--test", "1",
                                 "--filler", "0", "--tail", "1", "--passing-share", "0", "--seed", "5"])
    assert result.exit_code == 0, result.output
    train, dev, test = (read_jsonl(out / f"{s}.jsonl") for s in ("train", "dev", "test"))
    assert [len(train), len(dev), len(test)] == [3, 2, 1]
    assert not {c.id for c in train} & {c.id for c in dev}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["generator"]["filler_per_session"] == [0, 0]
    assert manifest["generator"]["tail_exchanges"] == 1
    # no filler: every user turn but the tail carries news, so conversations are shorter than the default's
    default = tmp_path / "default"
    assert runner.invoke(app, ["data", "generate", "--out", str(default), "--train", "3", "--dev", "0", "--test", "0",
                               "--seed", "5"]).exit_code == 0
    assert sum(len(c.turns) for c in train) < sum(len(c.turns) for c in read_jsonl(default / "train.jsonl"))


def test_existing_splits_are_not_overwritten_without_force(tmp_path):
    args = ["data", "generate", "--out", str(tmp_path), "--train", "1", "--dev", "0", "--test", "0"]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "train.jsonl").read_text()
    result = runner.invoke(app, [*args, "--seed", "9"])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "train.jsonl").read_text() == before
    assert runner.invoke(app, [*args, "--seed", "9", "--force"]).exit_code == 0
    assert (tmp_path / "train.jsonl").read_text() != before


def test_an_impossible_generator_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["data", "generate", "--out", str(tmp_path), "--sessions", "1"])
    assert result.exit_code == 2 and "at least 2 sessions" in result.output
    result = runner.invoke(app, ["data", "generate", "--out", str(tmp_path), "--filler", "1,2,3"])
    assert result.exit_code == 2 and "LOW,HIGH" in result.output


def test_generate_open_vocabulary_with_dialogue(tmp_path):
    out = tmp_path / "open"
    result = runner.invoke(app, ["data", "generate", "--out", str(out), "--train", "6", "--dev", "2", "--test", "2",
                                 "--vocabulary", "open", "--dialogue-share", "0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vocabulary"] == "open" and manifest["held_out_answers_disjoint"] is True
    assert manifest["generator"]["dialogue_share"] == 0.5
    assert any(c.turns[0].content.startswith("[") for c in read_jsonl(out / "train.jsonl"))
    bad = runner.invoke(app, ["data", "generate", "--out", str(tmp_path / "bad"), "--train", "1", "--vocabulary", "huge"])
    assert bad.exit_code != 0 and "vocabulary" in bad.output
