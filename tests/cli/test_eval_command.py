"""`deltamem eval`: which conversations it judges, and one-line refusals before any model loads."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.cli.eval import choose_conversations
from deltamem_agents.data import (
    GeneratorConfig,
    SplitSizes,
    make_split,
    read_jsonl,
    write_splits,
)

runner = CliRunner()


def test_a_generated_folder_is_evaluated_on_its_own_split(tmp_path):
    folder = tmp_path / "news-only"
    news_only = GeneratorConfig(filler_per_session=(0, 0), tail_exchanges=1, passing_share=0.0)
    write_splits(folder, seed=7, sizes=SplitSizes(train=1, dev=1, test=3), config=news_only)
    chosen, dataset, name = choose_conversations(locomo=None, data=folder, split="test", conversations=2, data_seed=0)
    assert [c.id for c in chosen] == [c.id for c in read_jsonl(folder / "test.jsonl")[:2]]
    assert dataset == "generated test split from news-only/" and name == "news-only-test"
    # the folder's settings are kept: its conversations are not the default generator's
    default = make_split("test", 2, seed=0)
    assert [c.turns for c in chosen] != [c.turns for c in default]


def test_without_a_folder_the_split_is_generated_here():
    chosen, dataset, name = choose_conversations(locomo=None, data=None, split="dev", conversations=2, data_seed=3)
    assert [c.turns for c in chosen] == [c.turns for c in make_split("dev", 2, seed=3)]
    assert dataset == "generated dev split (seed 3)" and name == "synthetic-dev"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/missing"], "test.jsonl does not exist"),
        (["--data", "{tmp}", "--locomo", "{tmp}/x.json"], "--locomo or --data, not both"),
        (["--split", "validation"], "--split must be train, dev or test"),
    ],
)
def test_bad_data_choices_are_one_clear_line(tmp_path, args, message):
    result = runner.invoke(app, ["eval", "--no-perplexity", *(a.format(tmp=tmp_path) for a in args)],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_empty_split_file_is_refused(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(typer.BadParameter, match="holds no conversations"):
        choose_conversations(locomo=None, data=tmp_path, split="test", conversations=5, data_seed=0)


def test_free_prompts_and_the_controls_run_through_the_command(chat_tokenizer, tmp_path, monkeypatch):
    import json

    from deltamem_agents.model import backbone
    from tests.tiny_models import tiny_model

    model = tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096)
    loaded = {}

    def load(*args, **kwargs):
        loaded.update(kwargs)
        return model, chat_tokenizer

    monkeypatch.setattr(backbone, "load_backbone", load)
    result = runner.invoke(app, ["eval", "--no-perplexity", "--no-progress", "--adapter", "none", "--conversations", "2",
                                 "--max-probes", "1", "--conditions", "state,state_other", "--window", "24",
                                 "--free-prompts", "2", "--free-tokens", "4", "--out", str(tmp_path), "--name", "cli",
                                 "--dtype", "float32"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert loaded["dtype"] == "float32"  # --dtype reaches the backbone (the bf16 quality check uses it)
    assert "goal" in result.output and "free chat" in result.output and "content: state − state_other" in result.output
    report = json.loads((tmp_path / "cli.json").read_text())
    assert report["config"]["free_prompts"] == 2 and report["config"]["free_tokens"] == 4
    assert [r["memory"] for r in report["free_chat"]["replies"]] == ["adapter", "bare", "adapter", "bare"]
    assert {d["control"] for d in report["content_deltas"]} == {"state_other"}
    text = (tmp_path / "cli.md").read_text()
    assert "## Free chat" in text and "## What the state's content adds" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--free-prompts", "21"], "--free-prompts"),
        (["--free-tokens", "0"], "--free-tokens"),
        (["--conditions", "state,state_other", "--conversations", "1"], "give at least 2 conversations"),
    ],
)
def test_bad_free_chat_and_control_choices_are_refused_before_any_model_loads(args, message, monkeypatch):
    from deltamem_agents.model import backbone

    def no_model(*args, **kwargs):
        raise AssertionError("no model may load")

    monkeypatch.setattr(backbone, "load_backbone", no_model)
    result = runner.invoke(app, ["eval", "--no-perplexity", *args], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and message in result.output, result.output
