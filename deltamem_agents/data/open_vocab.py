"""Open-vocabulary slots: the same kinds of information as `vocab`, with values from large pools.

With the closed lists of `vocab` (22 given names, 30 cities, ...) an adapter can score by picking
among the values it was trained on: a classifier over the training vocabulary, not a memory. Here
each slot names a *value kind* of `values` (thousands of given names, surnames, cities, made-up
words, code words, numbers, dates, times), and a conversation of split S draws only from S's
pool, so no value of a dev or test conversation ever occurs in training. Each slot also has more
phrasings than the closed ones, so the state cannot key on one sentence shape.

Languages and word limits stay closed (their rule checks need known values).
"""

from __future__ import annotations

from functools import cache

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.templates import (
    OPEN_FACTS,
    OPEN_INSTRUCTIONS,
    OPEN_PREFERENCES,
    OPEN_TASKS,
    OpenSlot,
)
from deltamem_agents.data.values import SplitName, ValueKind, value_pool

__all__ = ["OPEN_FACTS", "OPEN_INSTRUCTIONS", "OPEN_PREFERENCES", "OPEN_TASKS", "closed_slots", "open_slots", "slot_counts"]


def bind(slot: OpenSlot, split: SplitName) -> vocab.Slot:
    """The slot with the values of ``split`` (what the generator samples from)."""
    kind: ValueKind = slot.value_kind  # type: ignore[assignment]
    return vocab.Slot(slot.name, slot.kind, value_pool(kind, split), slot.statements, slot.questions, slot.updates)


def _bound(slots: tuple[OpenSlot | vocab.Slot, ...], split: SplitName) -> tuple[vocab.Slot, ...]:
    return tuple(bind(slot, split) if isinstance(slot, OpenSlot) else slot for slot in slots)


@cache
def open_slots(split: SplitName) -> dict[str, tuple[vocab.Slot, ...]]:
    """The facts, preferences, instructions and tasks of ``split``, with that split's values."""
    return {"facts": _bound(OPEN_FACTS, split), "preferences": _bound(OPEN_PREFERENCES, split),
            "instructions": _bound(OPEN_INSTRUCTIONS, split), "tasks": _bound(OPEN_TASKS, split)}


def slot_counts(vocabulary: str) -> dict[str, int]:
    """How many slots of each group a vocabulary has, read from the templates alone: validating a
    configuration must not build the value pools."""
    groups = {"facts": OPEN_FACTS, "preferences": OPEN_PREFERENCES, "instructions": OPEN_INSTRUCTIONS,
              "tasks": OPEN_TASKS} if vocabulary == "open" else closed_slots()
    return {name: len(slots) for name, slots in groups.items()}


def closed_slots() -> dict[str, tuple[vocab.Slot, ...]]:
    """The closed lists of `vocab`, in the same shape (every split draws from the same values)."""
    return {"facts": vocab.FACTS, "preferences": vocab.PREFERENCES, "instructions": vocab.INSTRUCTIONS,
            "tasks": vocab.TASKS}
