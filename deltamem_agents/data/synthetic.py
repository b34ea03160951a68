"""Generated multi-session conversations with questions asked after the history is gone.

A conversation is a few sessions (days) of small talk in which the user tells facts in passing,
states preferences, gives instructions ("call me Captain", "answer in French", "keep answers
under 15 words") and plans a task that later changes. It ends with enough small talk that none
of that is in a short recent window, then asks about it. Everything is drawn from one
`random.Random` seeded by ``(seed, conversation id)``, so a conversation is the same on every
machine and does not depend on which other conversations are generated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.config import GeneratorConfig
from deltamem_agents.data.dialogue import generate_dialogue
from deltamem_agents.data.records import Conversation, Probe, Rule, Turn
from deltamem_agents.data.values import SplitName

__all__ = ["GeneratorConfig", "generate_conversation", "generate_conversations", "is_dialogue", "reference_reply"]


@dataclass
class _Event:
    """A user message carrying information, placed in a session."""

    text: str
    slot: vocab.Slot
    value: str
    session: int
    index: int = -1  # its turn index once placed


def _sentence(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _told(rng: random.Random, statement: str, config: GeneratorConfig) -> str:
    """A statement told in passing inside small talk, or on its own."""
    if rng.random() < config.passing_share:
        return f"{rng.choice(vocab.FILLER_USER)} {rng.choice(vocab.PASSING_OPENERS)}{statement}."
    return _sentence(statement)


def is_dialogue(conversation_id: str, *, seed: int, config: GeneratorConfig) -> bool:
    """Whether this conversation is a two-speaker dialogue; drawn apart from the conversation's own
    random stream, so closed-vocabulary chats stay exactly what they were."""
    return config.dialogue_share > 0 and random.Random(f"deltamem-style:{seed}:{conversation_id}").random() < config.dialogue_share


def generate_conversation(conversation_id: str, *, seed: int = 0, config: GeneratorConfig | None = None,
                          split: SplitName = "train") -> Conversation:
    """One conversation, fully determined by ``(seed, conversation_id, config, split)``; ``split``
    picks the value pools of an open vocabulary (a closed one ignores it)."""
    config = config or GeneratorConfig()
    if is_dialogue(conversation_id, seed=seed, config=config):
        return generate_dialogue(conversation_id, seed=seed, config=config, split=split)
    slots = config.slots(split)
    rng = random.Random(f"deltamem-synthetic:{seed}:{conversation_id}")
    n_sessions = rng.randint(*config.sessions)
    events: list[_Event] = []

    for slot in rng.sample(slots["facts"], rng.randint(*config.facts)):
        value = rng.choice(slot.values)
        text = _told(rng, rng.choice(slot.statements).format(v=value), config)
        events.append(_Event(text, slot, value, rng.randrange(n_sessions)))
    for slot in rng.sample(slots["preferences"], rng.randint(*config.preferences)):
        value = rng.choice(slot.values)
        text = _told(rng, rng.choice(slot.statements).format(v=value), config)
        events.append(_Event(text, slot, value, rng.randrange(n_sessions)))
    for slot in rng.sample(slots["instructions"], rng.randint(*config.instructions)):
        value = rng.choice(slot.values)
        events.append(_Event(rng.choice(slot.statements).format(v=value), slot, value, rng.randrange(n_sessions)))

    task = rng.choice(slots["tasks"])
    n_updates = min(rng.randint(*config.task_updates), n_sessions - 1)
    chain = rng.sample(task.values, n_updates + 1)
    plan_session = rng.randrange(n_sessions - n_updates)
    plan = _Event(f"Quick planning note: {task.statements[0].format(v=chain[0])}.", task, chain[0], plan_session)
    events.append(plan)
    update_sessions = sorted(rng.sample(range(plan_session + 1, n_sessions), n_updates))
    task_events = []
    for value, session in zip(chain[1:], update_sessions, strict=True):
        task_events.append(_Event(rng.choice(task.updates).format(v=value), task, value, session))
    events.extend(task_events)

    turns: list[Turn] = []
    for session in range(n_sessions):
        items: list[_Event | None] = [e for e in events if e.session == session and e not in task_events]
        items += [None] * rng.randint(*config.filler_per_session)
        rng.shuffle(items)
        # a task update comes after that session's other news, so the plan is never "updated" before it is made
        items += [e for e in task_events if e.session == session]
        if session == n_sessions - 1:
            items += [None] * config.tail_exchanges
        for position, item in enumerate(items):
            opener = rng.choice(vocab.SESSION_OPENERS) + " " if position == 0 else ""
            if item is None:
                turns.append(Turn(role="user", content=opener + rng.choice(vocab.FILLER_USER), session=session))
                turns.append(Turn(role="assistant", content=rng.choice(vocab.FILLER_ASSISTANT), session=session))
            else:
                item.index = len(turns)
                turns.append(Turn(role="user", content=opener + item.text, session=session))
                turns.append(Turn(role="assistant", content=rng.choice(vocab.ACKNOWLEDGEMENTS), session=session))

    probes = _probes(rng, events, task_events or [plan], config)
    return Conversation(id=conversation_id, turns=turns, probes=probes)


def _probes(rng: random.Random, events: list[_Event], task_events: list[_Event], config: GeneratorConfig) -> list[Probe]:
    """The questions; ``task_events`` ends with the task's current value (the plan itself when it never changed)."""
    probes: list[Probe] = []

    def ask(event: _Event, kind: str, answer: str, evidence: list[int]) -> None:
        probes.append(Probe(kind=kind, question=rng.choice(event.slot.questions), answer=answer, evidence=evidence))  # type: ignore[arg-type]

    facts = [e for e in events if e.slot.kind == "fact"]
    for event in rng.sample(facts, min(config.fact_probes, len(facts))):
        ask(event, "fact", event.value, [event.index])
    preferences = [e for e in events if e.slot.kind == "preference"]
    for event in rng.sample(preferences, min(config.preference_probes, len(preferences))):
        ask(event, "preference", event.value, [event.index])
    instructions = [e for e in events if e.slot.kind == "instruction"]
    if instructions:
        event = rng.choice(instructions)
        ask(event, "instruction", event.value, [event.index])
    final = task_events[-1]
    ask(final, "task", final.value, [final.index])
    if config.requests and instructions:
        request, replies = rng.choice(vocab.REQUESTS)
        rules = [Rule(kind=e.slot.name, value=e.value) for e in instructions]  # type: ignore[arg-type]
        probes.append(Probe(kind="request", question=request, answer=reference_reply(replies, rules),
                            evidence=[e.index for e in instructions], rules=rules))
    rng.shuffle(probes)
    return probes


def reference_reply(replies: dict[str, str], rules: list[Rule]) -> str:
    """The canned reply in the asked language, addressed by the asked nickname."""
    language = next((r.value for r in rules if r.kind == "language"), "English")
    text = replies[language]
    nickname = next((r.value for r in rules if r.kind == "nickname"), None)
    if nickname:
        text = f"{nickname}, {text[0].lower() + text[1:] if language != 'German' else text}"
    return text


def generate_conversations(prefix: str, count: int, *, seed: int = 0, config: GeneratorConfig | None = None,
                           split: SplitName = "train") -> list[Conversation]:
    """``count`` conversations with ids ``{prefix}-00000`` ..., each independent of the others."""
    return [generate_conversation(f"{prefix}-{i:05d}", seed=seed, config=config, split=split) for i in range(count)]
