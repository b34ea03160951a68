"""`deltamem train` from the command line: the options reach the run, the run trains and reports."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.data import GeneratorConfig, SplitSizes, write_splits
from tests.tiny_models import tiny_model

runner = CliRunner()
SMALL = GeneratorConfig(sessions=(2, 2), facts=(1, 1), preferences=(1, 1), instructions=(1, 1), task_updates=(1, 1),
                        filler_per_session=(1, 1), tail_exchanges=2, fact_probes=1, preference_probes=1)


def test_train_with_the_contrastive_and_preservation_terms(tmp_path, chat_tokenizer):
    backbone = tmp_path / "tiny"
    tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048).save_pretrained(backbone)
    chat_tokenizer.save_pretrained(backbone)
    data = tmp_path / "data"
    write_splits(data, sizes=SplitSizes(train=2, dev=1, test=0), seed=1, config=SMALL)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--data", str(data), "--backbone", str(backbone),
                                 "--steps", "1", "--batch", "2", "--window", "16", "--contrast-weight", "1",
                                 "--preserve-weight", "2", "--preserve-tokens", "64", "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "train_config.json").read_text())
    assert config["preserve_weight"] == 2.0 and config["preserve_tokens"] == 64 and config["contrast_weight"] == 1.0
    step = next(r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["kind"] == "step")
    assert step["preserve_kl"] >= 0 and "state_gap" in step
    assert (out / "adapter" / "adapter.safetensors").is_file() and "trained 1 steps" in result.output


def test_a_bad_option_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--preserve-weight", "-1", "--no-progress"])
    assert result.exit_code == 2 and "preserve_weight" in result.output
    assert not (tmp_path / "run").exists()
