import pytest

from deltamem_agents.data import (
    SPLITS,
    Conversation,
    GeneratorConfig,
    generate_conversation,
    generate_conversations,
    make_split,
    read_jsonl,
    vocab,
    write_jsonl,
    write_splits,
)
from deltamem_agents.data.splits import SplitSizes
from deltamem_agents.eval.metrics import check_rule


def test_a_conversation_depends_only_on_its_id_and_seed():
    a = generate_conversation("train-00003", seed=1)
    assert a == generate_conversation("train-00003", seed=1)
    assert a == generate_conversations("train", 4, seed=1)[3]
    assert a != generate_conversation("train-00003", seed=2)
    assert a != generate_conversation("train-00004", seed=1)


def test_splits_never_share_a_conversation():
    histories = {split: {tuple(t.content for t in c.turns) for c in make_split(split, 20)} for split in SPLITS}
    assert len(histories["train"]) == 20
    assert not histories["train"] & histories["dev"]
    assert not histories["train"] & histories["test"]
    assert not histories["dev"] & histories["test"]
    with pytest.raises(ValueError, match="unknown split"):
        make_split("validation", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", range(12))
def test_probes_point_at_what_the_history_says(index):
    conversation = generate_conversation(f"test-{index:05d}")
    kinds = [p.kind for p in conversation.probes]
    assert "task" in kinds and "fact" in kinds and "preference" in kinds
    for probe in conversation.probes:
        assert probe.evidence, probe
        for turn in probe.evidence:
            assert conversation.turns[turn].role == "user"
        if probe.kind == "request":
            assert probe.rules and all(check_rule(probe.answer, rule) for rule in probe.rules)
            continue
        assert probe.answer.lower() in conversation.turns[probe.evidence[0]].content.lower()
    task = next(p for p in conversation.probes if p.kind == "task")
    updates = [i for i, t in enumerate(conversation.turns) if any(
        u.format(v="") .split("{")[0][:12] in t.content for s in vocab.TASKS for u in s.updates)]
    assert task.evidence[0] == max(updates)  # the latest change is the answer


def test_the_information_is_out_of_the_recent_window():
    config = GeneratorConfig(tail_exchanges=3)
    for index in range(20):
        conversation = generate_conversation(f"dev-{index:05d}", config=config)
        last = max(i for p in conversation.probes for i in p.evidence)
        assert last < len(conversation.turns) - 2 * config.tail_exchanges


def test_bad_generator_settings_are_refused():
    with pytest.raises(ValueError, match="at least 2 sessions"):
        GeneratorConfig(sessions=(1, 2))
    with pytest.raises(ValueError, match="range"):
        GeneratorConfig(facts=(3, 1))


def test_splits_round_trip_through_jsonl(tmp_path):
    manifest = write_splits(tmp_path, seed=5, sizes=SplitSizes(train=3, dev=2, test=1))
    assert manifest.files == {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}
    assert read_jsonl(tmp_path / "train.jsonl") == make_split("train", 3, seed=5)
    path = write_jsonl([generate_conversation("x-1")], tmp_path / "one.jsonl")
    assert isinstance(read_jsonl(path)[0], Conversation)
    path.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="one.jsonl:1"):
        read_jsonl(path)
