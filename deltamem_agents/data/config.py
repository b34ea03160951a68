"""How generated conversations are made: one configuration shared by the chat and dialogue generators."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.open_vocab import closed_slots, open_slots, slot_counts
from deltamem_agents.data.values import SplitName


class GeneratorConfig(BaseModel):
    """How many of each thing a generated conversation holds (inclusive ranges)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions: tuple[int, int] = (3, 4)
    facts: tuple[int, int] = (3, 4)
    preferences: tuple[int, int] = (2, 3)
    instructions: tuple[int, int] = (1, 2)
    task_updates: tuple[int, int] = (1, 2)
    filler_per_session: tuple[int, int] = (2, 3)
    tail_exchanges: int = Field(3, ge=1, description="small-talk exchanges after the last information")
    fact_probes: int = Field(2, ge=0)
    preference_probes: int = Field(2, ge=0)
    requests: bool = Field(True, description="add a request whose reply is checked against the instructions")
    passing_share: float = Field(0.6, ge=0, le=1, description="share of facts/preferences told inside small talk")
    vocabulary: Literal["closed", "open"] = Field(
        "closed", description="closed: the short lists of data/vocab.py, shared by every split (what earlier adapters "
        "trained on); open: large value pools (data/values.py), each split drawing only from its own, so no dev or "
        "test value ever occurs in training")
    dialogue_share: float = Field(0.0, ge=0, le=1, description="share of conversations generated as LoCoMo-style "
                                  "dialogue between two named speakers over dated sessions (data/dialogue.py)")

    @model_validator(mode="after")
    def _ranges(self) -> GeneratorConfig:
        for name in ("sessions", "facts", "preferences", "instructions", "task_updates", "filler_per_session"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")
        if self.sessions[0] < 2:
            raise ValueError("a conversation needs at least 2 sessions (a task is planned, then changed)")
        counts = slot_counts(self.vocabulary)
        if self.facts[1] > counts["facts"] or self.preferences[1] > counts["preferences"]:
            raise ValueError(f"more facts or preferences asked for than the {self.vocabulary} vocabulary has slots "
                             f"({counts['facts']} facts, {counts['preferences']} preferences)")
        if self.instructions[1] > counts["instructions"]:
            raise ValueError(f"at most {counts['instructions']} instructions")
        return self

    def slots(self, split: SplitName) -> dict[str, tuple[vocab.Slot, ...]]:
        """The slots a conversation of ``split`` draws from (the split matters for open vocabulary only)."""
        return open_slots(split) if self.vocabulary == "open" else closed_slots()
