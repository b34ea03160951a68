"""Train / dev / test splits of generated conversations that never share a conversation.

A split is a conversation-id prefix: ``train-00017`` and ``test-00017`` are different
conversations (the id seeds the generator), so no history, and no question about one, can be
in two splits. `write_splits` writes ``<split>.jsonl`` files plus a manifest of how they were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.data.records import Conversation, write_jsonl
from deltamem_agents.data.synthetic import GeneratorConfig, generate_conversations
from deltamem_agents.fileio import atomic_write_text

SplitName = Literal["train", "dev", "test"]
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


def make_split(split: SplitName, count: int, *, seed: int = 0, config: GeneratorConfig | None = None) -> list[Conversation]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return generate_conversations(split, count, seed=seed, config=config)


def write_splits(folder: str | Path, *, seed: int = 0, sizes: SplitSizes | None = None,
                 config: GeneratorConfig | None = None) -> SplitManifest:
    folder = Path(folder)
    sizes = sizes or SplitSizes()
    config = config or GeneratorConfig()
    files = {}
    for split in SPLITS:
        path = write_jsonl(make_split(split, getattr(sizes, split), seed=seed, config=config), folder / f"{split}.jsonl")
        files[split] = path.name
    manifest = SplitManifest(seed=seed, sizes=sizes, generator=config, files=files)
    atomic_write_text(folder / "manifest.json", manifest.model_dump_json(indent=2) + "\n")
    return manifest
