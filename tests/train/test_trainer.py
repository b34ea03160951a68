import json

import pytest
import torch

from deltamem_agents.model.adapters import read_adapter
from deltamem_agents.train import TrainConfig, Trainer, TrainingError
from deltamem_agents.train.trainer import batch_order, lr_factor


def _trainer(tmp_path, tokenizer, model, conversations, name="run", **overrides):
    train, dev = conversations
    config = TrainConfig(**{"steps": 3, "batch": 2, "save_every": 1, "eval_every": 2, "window_tokens": 16,
                            "snippet_share": 0.5, "learning_rate": 1e-2, **overrides})
    return Trainer(config, tmp_path / name, model=model, tokenizer=tokenizer, train=train, dev=dev)


def _weights(path):
    return read_adapter(path)[1]


def test_a_run_writes_an_adapter_a_log_a_curve_and_a_report(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    trainer = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations)
    before = {n: p.detach().clone() for n, p in trainer.handle.named_parameters()}
    report = trainer.run(progress=False)
    out = tmp_path / "run"
    assert report.steps == 3 and report.tokens > 0 and report.final_loss > 0
    assert [d.step for d in report.dev] == [0, 2, 3]
    assert (out / "loss.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [0, 1, 2]
    weights = _weights(out / "adapter")
    assert any(not torch.equal(weights[n], before[n]) for n in before)
    assert len(list((out / "checkpoints").iterdir())) == 2  # keep_checkpoints


def test_the_same_seed_gives_the_same_adapter(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    first = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "a", steps=2)
    first.run(progress=False)
    first.handle.detach()
    second = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "b", steps=2)
    second.run(progress=False)
    a, b = _weights(tmp_path / "a" / "adapter"), _weights(tmp_path / "b" / "adapter")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    straight = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "straight", steps=3)
    straight.run(progress=False)
    straight.handle.detach()
    part = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "resumed", steps=3)
    assert part.run(progress=False, stop_after=2).steps == 2  # stopped early, as an interrupted run would be
    part.handle.detach()
    resumed = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "resumed", steps=3)
    report = resumed.run(progress=False)
    assert report.steps == 3
    a, b = _weights(tmp_path / "straight" / "adapter"), _weights(tmp_path / "resumed" / "adapter")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    resumed.handle.detach()
    with pytest.raises(TrainingError, match="differs in learning_rate"):
        _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "resumed", learning_rate=1e-3).run(progress=False)


def test_the_schedule_and_the_data_order(tmp_path):
    config = TrainConfig(steps=100, warmup_share=0.1, min_lr_share=0.1)
    factors = [lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and max(factors) == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1, abs=0.01)
    order = [i for step in range(5) for i in batch_order(10, step, 2, seed=3)]
    assert sorted(order) == list(range(10))  # one epoch sees every conversation once
    assert order == [i for step in range(5) for i in batch_order(10, step, 2, seed=3)]
    assert order != [i for step in range(5) for i in batch_order(10, step, 2, seed=4)]


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="num_state_heads"):
        TrainConfig(write_strategy="tsw", num_state_heads=4)
    with pytest.raises(ValueError):
        TrainConfig(delta_heads=("x",))  # type: ignore[arg-type]


def test_the_model_card_is_written_from_the_reports(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    from deltamem_agents.train.card import write_model_card

    trainer = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, steps=1)
    trainer.run(progress=False)
    card = write_model_card(tmp_path / "run" / "train_report.json", None, tmp_path / "CARD.md", title="Tiny", notes="n")
    text = card.read_text()
    assert text.startswith("# Tiny") and "steps: 1 of 1" in text and "Reproduce:" in text and "## Notes" in text


def test_the_model_card_describes_every_stage_of_a_chained_adapter(tmp_path, chat_tokenizer, tiny_chat_model,
                                                                  small_conversations):
    from deltamem_agents.train.card import write_model_card

    first = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "first", steps=2)
    first.run(progress=False)
    first.handle.detach()
    second = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "second", steps=1,
                      init_adapter=tmp_path / "first" / "adapter", preserve_weight=1.0, preserve_tokens=64)
    second.run(progress=False)
    reports = [tmp_path / name / "train_report.json" for name in ("first", "second")]
    text = write_model_card(reports, None, tmp_path / "CARD.md", title="Tiny").read_text()
    assert "2 stages, each starting from the previous one's adapter; 3 steps" in text
    one, two = text.split("### Stage 1")[1].split("### Stage 2")
    assert "steps: 2 of 2" in one and "preservation term" not in one and "initialised" not in one
    assert "steps: 1 of 1" in two and "preservation term weight 1.0" in two
    assert "initialised from the adapter of stage 1 (`adapter`)" in two
    with pytest.raises(ValueError, match="at least one"):
        write_model_card([], None, tmp_path / "EMPTY.md", title="Tiny")
    assert not (tmp_path / "EMPTY.md").exists()


def test_the_model_card_names_a_data_folder_and_every_evaluation(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    """An adapter trained on `deltamem data generate` output and judged on two test splits says so."""
    from deltamem_agents.data import SplitSizes, write_splits
    from deltamem_agents.eval import EvalConfig, run_eval, write_report
    from deltamem_agents.train.card import write_model_card
    from tests.train.conftest import SMALL

    data = tmp_path / "news"
    write_splits(data, sizes=SplitSizes(train=2, dev=1, test=1), seed=3, config=SMALL)
    trainer = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, steps=1, data_dir=data)
    trainer.run(progress=False)
    reports = []
    for name, conversations in (("default", small_conversations[1]), ("news", small_conversations[1])):
        result = run_eval(tiny_chat_model, chat_tokenizer, trainer.handle, conversations, dataset=f"{name} split",
                          backbone="tiny", adapter=None, progress=False, max_probes=1,
                          config=EvalConfig(conditions=("recent_window", "state"), window_tokens=16, max_new_tokens=2,
                                                            request_max_new_tokens=2))
        reports.append(next(f for f in write_report(result, tmp_path / "eval", name) if f.suffix == ".json"))
    text = write_model_card(tmp_path / "run" / "train_report.json", reports, tmp_path / "CARD.md", title="Tiny",
                            command="deltamem data generate ...\ndeltamem train ...").read_text()
    assert "the `train.jsonl` of the `deltamem data generate` folder `news` (2 conversations, data seed 3;" in text
    assert "closing exchanges 2" in text
    assert "## Evaluation 1: default split" in text and "## Evaluation 2: news split" in text
    assert text.count("| 5. δ-mem state |") == 2 and "deltamem data generate ...\ndeltamem train ..." in text


def _step_rows(out):
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["kind"] == "step"]


def test_the_contrastive_term_changes_the_update_and_is_logged(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    plain = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "plain", steps=1, snippet_share=0.0)
    plain.run(progress=False)
    plain.handle.detach()
    contrast = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "contrast", steps=1,
                        snippet_share=0.0, contrast_weight=1.0, contrast_margin=2.0)
    report = contrast.run(progress=False)
    contrast.handle.detach()
    plain_row, contrast_row = _step_rows(tmp_path / "plain")[0], _step_rows(tmp_path / "contrast")[0]
    assert "state_gap" not in plain_row and isinstance(contrast_row["state_gap"], float)
    # the logged answer loss is the same objective's (same step, same weights before it) ...
    assert contrast_row["loss"] == pytest.approx(plain_row["loss"], rel=1e-5)
    # ... but the update is not: the contrastive term moved the weights elsewhere
    a, b = _weights(tmp_path / "plain" / "adapter"), _weights(tmp_path / "contrast" / "adapter")
    assert any(not torch.equal(a[n], b[n]) for n in a)
    assert report.dev[0].other_state is None  # one dev conversation: no other state to read


def test_the_preservation_term_changes_the_update_and_is_logged(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    plain = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "plain", steps=1)
    plain.run(progress=False)
    plain.handle.detach()
    kept = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "kept", steps=1,
                    preserve_weight=2.0, preserve_tokens=64)
    assert kept.generic_chunks and all(len(c) == 64 for c in kept.generic_chunks)
    kept.run(progress=False)
    kept.handle.detach()
    plain_row, kept_row = _step_rows(tmp_path / "plain")[0], _step_rows(tmp_path / "kept")[0]
    assert "preserve_kl" not in plain_row and kept_row["preserve_kl"] >= 0.0
    assert kept_row["loss"] == pytest.approx(plain_row["loss"], rel=1e-5)
    assert kept_row["tokens"] == plain_row["tokens"] + 64  # the generic chunk is counted
    a, b = _weights(tmp_path / "plain" / "adapter"), _weights(tmp_path / "kept" / "adapter")
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_a_preservation_chunk_longer_than_the_text_is_refused(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    with pytest.raises(TrainingError, match="lower --preserve-tokens"):
        _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, preserve_weight=1.0, preserve_tokens=10**7)


def test_dev_loss_reports_the_other_conversation_control(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    train, _ = small_conversations
    trainer = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, (train, train[:2]), steps=1)
    dev = trainer.dev_loss()
    assert dev.other_state is not None and dev.other_state > 0
    trainer.handle.detach()


def test_a_run_can_start_from_an_adapter(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations):
    first = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "first", steps=1)
    first.run(progress=False)
    first.handle.detach()
    second = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "second", steps=1,
                      init_adapter=tmp_path / "first" / "adapter")
    trained = _weights(tmp_path / "first" / "adapter")
    for name, param in second.handle.named_parameters():
        assert torch.equal(param.detach(), trained[name])
    second.handle.detach()
    with pytest.raises(TrainingError, match="differs in rank"):
        _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "third", rank=4,
                 init_adapter=tmp_path / "first" / "adapter")
    with pytest.raises(TrainingError, match="not an adapter folder"):
        _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "fourth", init_adapter=tmp_path)



def test_a_run_started_from_an_adapter_resumes_from_its_checkpoint(tmp_path, chat_tokenizer, tiny_chat_model,
                                                                   small_conversations):
    first = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "first", steps=1)
    first.run(progress=False)
    first.handle.detach()
    init = tmp_path / "first" / "adapter"
    part = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "second", steps=2, init_adapter=init)
    part.run(progress=False, stop_after=1)
    checkpoint = {n: p.detach().clone() for n, p in part.handle.named_parameters()}
    part.handle.detach()
    for name in list(init.iterdir()):
        name.unlink()  # the starting adapter is gone: resuming must not need it
    resumed = _trainer(tmp_path, chat_tokenizer, tiny_chat_model, small_conversations, "second", steps=2, init_adapter=init)
    assert resumed.resume()
    for name, param in resumed.handle.named_parameters():
        assert torch.equal(param.detach(), checkpoint[name])
    assert resumed.run(progress=False).steps == 2
    resumed.handle.detach()


def test_contrast_needs_two_conversations_per_step():
    with pytest.raises(ValueError, match="batch >= 2"):
        TrainConfig(batch=1, contrast_weight=0.5)
