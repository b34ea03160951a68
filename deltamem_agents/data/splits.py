"""Train / dev / test splits of generated conversations that never share a conversation.

A split is a conversation-id prefix: ``train-00017`` and ``test-00017`` are different
conversations (the id seeds the generator), so no history, and no question about one, can be
in two splits. With an open vocabulary each split also draws its values from its own pool
(data/values.py), so no dev or test *answer* occurs in training either; the manifest records the
pools and checks it on the conversations written. `write_splits` writes ``<split>.jsonl`` files
plus that manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.records import Conversation, write_jsonl
from deltamem_agents.data.synthetic import GeneratorConfig, generate_conversations
from deltamem_agents.data.values import (
    SplitName,
    faker_version,
    pool_sizes,
    trained_words,
    value_words,
)
from deltamem_agents.fileio import atomic_write_text

SPLITS: tuple[SplitName, ...] = ("train", "dev", "test")


class SplitSizes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: int = Field(2000, ge=0)
    dev: int = Field(24, ge=0)
    test: int = Field(30, ge=0)


class SplitManifest(BaseModel):
    """What `write_splits` made, so a data folder says how to make it again."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    sizes: SplitSizes
    generator: GeneratorConfig
    files: dict[str, str]
    vocabulary: Literal["closed", "open"] = "closed"
    value_pools: dict[str, dict[str, int]] | None = Field(
        None, description="open vocabulary: values per kind per split (data/values.py)")
    faker_version: str | None = Field(None, description="open vocabulary: the Faker release the pools were read from")
    held_out_answers_disjoint: bool | None = Field(
        None, description="open vocabulary: no dev/test answer shares a word with any training answer or training "
        "value pool (checked on the written conversations)")
    held_out_answers_overlapping: list[str] = Field(
        default_factory=list, description="the dev/test answers that broke it (empty when disjoint)")


#: answers that are closed choices by design (a language, a word limit): the same in every split
CLOSED_CHOICES = frozenset((*vocab.LANGUAGES, *vocab.WORD_LIMITS))


def _answers(conversations: list[Conversation]) -> set[str]:
    return {p.answer for c in conversations for p in c.probes if p.kind != "request" and p.answer not in CLOSED_CHOICES}


def held_out_overlap(train: list[Conversation], held_out: list[Conversation]) -> list[str]:
    """Dev/test answers that occur among the training answers or share a word with the training
    value pools (shape words such as month names aside). Languages and word limits are left out:
    they are closed choices by design."""
    train_answers = _answers(train)
    trained = trained_words()
    return sorted(a for a in _answers(held_out)
                  if a in train_answers or any(w in trained for w in value_words(a) if not w.isdigit()))


def make_split(split: SplitName, count: int, *, seed: int = 0, config: GeneratorConfig | None = None) -> list[Conversation]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return generate_conversations(split, count, seed=seed, config=config, split=split)


def write_splits(folder: str | Path, *, seed: int = 0, sizes: SplitSizes | None = None,
                 config: GeneratorConfig | None = None) -> SplitManifest:
    folder = Path(folder)
    sizes = sizes or SplitSizes()
    config = config or GeneratorConfig()
    files = {}
    made: dict[str, list[Conversation]] = {}
    for split in SPLITS:
        made[split] = make_split(split, getattr(sizes, split), seed=seed, config=config)
        files[split] = write_jsonl(made[split], folder / f"{split}.jsonl").name
    manifest = SplitManifest(seed=seed, sizes=sizes, generator=config, files=files, vocabulary=config.vocabulary)
    if config.vocabulary == "open":
        overlap = held_out_overlap(made["train"], made["dev"] + made["test"])
        manifest = manifest.model_copy(update={"value_pools": pool_sizes(), "faker_version": faker_version(),
                                               "held_out_answers_disjoint": not overlap,
                                               "held_out_answers_overlapping": overlap})
    atomic_write_text(folder / "manifest.json", manifest.model_dump_json(indent=2) + "\n")
    return manifest
