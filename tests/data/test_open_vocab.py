"""Open-vocabulary data: held-out values never occur in training, by construction and on what is written."""

from __future__ import annotations

import json
import re

import pytest

from deltamem_agents.data import GeneratorConfig, generate_conversation, make_split, read_jsonl, vocab, write_splits
from deltamem_agents.data.dialogue import generate_dialogue
from deltamem_agents.data.open_vocab import OPEN_FACTS, OPEN_PREFERENCES, OPEN_TASKS, open_slots
from deltamem_agents.data.splits import SplitSizes, held_out_overlap
from deltamem_agents.data.templates import template_text
from deltamem_agents.data.values import (
    SHAPE_WORDS,
    VALUE_KINDS,
    pool_sizes,
    split_of,
    trained_words,
    value_pool,
    value_words,
)

OPEN = GeneratorConfig(vocabulary="open")
MIXED = GeneratorConfig(vocabulary="open", dialogue_share=0.5)
#: kinds whose values only need to differ as a whole (a number shares its digits' shape with others)
VALUE_LEVEL = {"number", "date", "time"}


@pytest.mark.parametrize("kind", VALUE_KINDS)
def test_pools_are_large_sorted_and_disjoint(kind):
    train, dev, test = (value_pool(kind, s) for s in ("train", "dev", "test"))
    assert list(train) == sorted(train) and len(set(train)) == len(train)
    assert dev and test and not set(train) & set(dev) and not set(train) & set(test) and not set(dev) & set(test)
    if kind not in VALUE_LEVEL:
        trained = trained_words()
        assert not [v for v in (*dev, *test) if set(value_words(v)) - SHAPE_WORDS & trained]


def test_name_pools_hold_thousands_and_the_closed_lists_are_training_only():
    sizes = pool_sizes()
    for kind in ("given_name", "surname", "city", "made_up_word", "code_word"):
        assert sizes[kind]["train"] >= 5000 and sizes[kind]["test"] >= 500, (kind, sizes[kind])
    closed = {w.lower() for w in (*vocab.NAMES, *vocab.CITIES, *vocab.PET_NAMES)}
    held_out = {v.lower() for kind in ("given_name", "city", "made_up_word") for s in ("dev", "test")
                for v in value_pool(kind, s)}
    assert not closed & held_out


def test_the_split_of_a_value_is_a_stable_hash():
    assert split_of("Quillon") == split_of("quillon")  # case does not move a value between splits
    assert {split_of(f"Name{i}") for i in range(400)} == {"train", "dev", "test"}


def test_no_held_out_value_hides_in_the_templates_or_the_small_talk():
    text = template_text()
    assert vocab.FILLER_USER[0] in text and "Big news" in text  # the small talk and the dialogue lines are in it
    words = set(re.findall(r"[a-z0-9:]+", text.lower())) - SHAPE_WORDS
    leaked = [v for kind in VALUE_KINDS if kind not in VALUE_LEVEL for s in ("dev", "test")
              for v in value_pool(kind, s) if set(value_words(v)) <= words]
    assert not leaked, leaked[:10]


def test_open_conversations_draw_each_split_from_its_own_pool():
    for split in ("train", "dev", "test"):
        slots = {s.name: s for group in open_slots(split).values() for s in group}
        for conversation in make_split(split, 15, config=OPEN):
            for probe in conversation.probes:
                if probe.kind in ("fact", "preference", "task"):
                    owner = [s for s in slots.values() if s.kind == probe.kind and probe.answer in s.values]
                    assert owner, (split, probe)
                    assert probe.answer in " ".join(conversation.turns[i].content for i in probe.evidence)


def test_held_out_answers_never_occur_in_training():
    train = make_split("train", 400, config=MIXED)
    held_out = make_split("dev", 40, config=MIXED) + make_split("test", 40, config=MIXED)
    assert held_out_overlap(train, held_out) == []
    # the check itself can fail: a closed vocabulary shares its values between splits
    closed = held_out_overlap(make_split("train", 200), make_split("test", 30))
    assert closed


def test_open_generation_is_deterministic_and_closed_is_unchanged():
    a = generate_conversation("test-00007", seed=3, config=MIXED, split="test")
    assert a == generate_conversation("test-00007", seed=3, config=MIXED, split="test")
    assert a != generate_conversation("test-00007", seed=4, config=MIXED, split="test")
    # the closed default does not depend on the split argument (and so stays what earlier adapters trained on)
    assert generate_conversation("test-00007") == generate_conversation("test-00007", split="dev")


def test_open_slots_have_several_phrasings():
    for slot in (*OPEN_FACTS, *OPEN_PREFERENCES, *OPEN_TASKS):
        assert len(slot.statements) >= 2 and all("{v}" in s for s in slot.statements), slot.name
        assert all("{v}" in u for u in slot.updates)


def test_a_dialogue_has_two_named_speakers_dated_sessions_and_third_person_questions():
    conversation = generate_dialogue("test-00001", seed=0, config=OPEN, split="test")
    speakers = {t.content.split("] ")[-1].split(":")[0] for t in conversation.turns}
    assert len(speakers) == 2
    first_of_session = [t for i, t in enumerate(conversation.turns) if i == 0 or t.session != conversation.turns[i - 1].session]
    assert all(re.match(r"^\[\d{1,2}:\d\d (am|pm) on \d{1,2} \w+, 2028\] ", t.content) for t in first_of_session)
    assert len(first_of_session) >= 2
    categories = {p.category for p in conversation.probes}
    assert {"2", "4"} <= categories
    for probe in conversation.probes:
        assert any(name in probe.question for name in speakers), probe.question
        evidence = conversation.turns[probe.evidence[0]]
        if probe.category == "4":
            assert probe.answer in evidence.content
    # the changed fact is asked as it is now: the second move's city, told after the first
    task = next(p for p in conversation.probes if p.kind == "task")
    temporal = next(p for p in conversation.probes if p.category == "2")
    assert task.evidence[0] > temporal.evidence[0]
    answers = [p.answer for p in conversation.probes]
    assert len(answers) == len(set(answers))


def test_write_splits_records_the_open_vocabulary_in_the_manifest(tmp_path):
    manifest = write_splits(tmp_path, seed=2, sizes=SplitSizes(train=30, dev=5, test=5), config=MIXED)
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["vocabulary"] == "open" and saved["held_out_answers_disjoint"] is True
    assert saved["held_out_answers_overlapping"] == []
    assert saved["value_pools"]["given_name"]["test"] == len(value_pool("given_name", "test"))
    assert saved["faker_version"] == manifest.faker_version and manifest.faker_version
    assert len(read_jsonl(tmp_path / "test.jsonl")) == 5
    closed = write_splits(tmp_path / "closed", sizes=SplitSizes(train=2, dev=1, test=1))
    assert closed.vocabulary == "closed" and closed.held_out_answers_disjoint is None


def test_an_open_config_refuses_more_slots_than_it_has():
    with pytest.raises(ValueError, match="open vocabulary"):
        GeneratorConfig(vocabulary="open", facts=(1, len(OPEN_FACTS) + 1))
