"""Conversations for training and evaluating δ-mem: a seeded generator, splits, a LoCoMo loader."""

from deltamem_agents.data.dialogue import generate_dialogue
from deltamem_agents.data.prompts import SHORT_ANSWER_SUFFIX, probe_prompt
from deltamem_agents.data.records import (
    MEMORY_KINDS,
    Conversation,
    Probe,
    Rule,
    Turn,
    iter_probes,
    read_jsonl,
    write_jsonl,
)
from deltamem_agents.data.splits import (
    SPLITS,
    SplitManifest,
    SplitSizes,
    held_out_overlap,
    make_split,
    write_splits,
)
from deltamem_agents.data.synthetic import (
    GeneratorConfig,
    generate_conversation,
    generate_conversations,
)

__all__ = [
    "MEMORY_KINDS",
    "SHORT_ANSWER_SUFFIX",
    "SPLITS",
    "Conversation",
    "GeneratorConfig",
    "Probe",
    "Rule",
    "SplitManifest",
    "SplitSizes",
    "Turn",
    "generate_conversation",
    "generate_conversations",
    "generate_dialogue",
    "held_out_overlap",
    "iter_probes",
    "make_split",
    "probe_prompt",
    "read_jsonl",
    "write_jsonl",
    "write_splits",
]
