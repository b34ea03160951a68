"""Generated dialogue of the LoCoMo kind: two named speakers over dated sessions.

LoCoMo's conversations are not a user telling an assistant about themselves: two people talk
over weeks, each tells the other about their own life, things change between sessions (a move,
a new job), and the questions ask about either of them in the third person ("Where does Kealan
live now?", "When did Kealan move to Rokycany?"). Training only on first-person user/assistant
chats leaves that shape unseen, so a share of generated conversations (``dialogue_share``) is
this kind, with the same open value pools per split. Speaker A becomes the user and speaker B
the assistant, every message keeps its speaker's name and the first message of a session its
date, exactly as `data/locomo.py` loads LoCoMo files. Nothing here reads LoCoMo.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.config import GeneratorConfig
from deltamem_agents.data.records import Conversation, Probe, Turn
from deltamem_agents.data.templates import (
    GREETINGS,
    MOVE_AGAIN,
    MOVE_FIRST,
    PERSON_FACTS,
    REACTIONS,
)
from deltamem_agents.data.values import SplitName, ValueKind, value_pool

#: LoCoMo's category numbers (see eval/breakdown.py for the names)
SINGLE_HOP, TEMPORAL = "4", "2"


@dataclass
class _Said:
    speaker: int
    text: str
    probes: list[tuple[str, str, str, str]] = field(default_factory=list)  # (kind, question, answer, category)
    index: int = -1

    @property
    def is_second_move(self) -> bool:
        return any(kind == "task" for kind, *_ in self.probes)


#: the first session's date falls in these years, so a temporal answer ("8 May 2023") of a dev or
#: test dialogue never occurs in training (dialogues span at most ~half a year)
_START_YEARS: dict[str, tuple[int, int]] = {"train": (2012, 2022), "dev": (2026, 2026), "test": (2028, 2028)}


def _session_dates(rng: random.Random, count: int, split: SplitName) -> list[dt.datetime]:
    first, last = _START_YEARS[split]
    start = dt.datetime(rng.randint(first, last), 1, 1) + dt.timedelta(days=rng.randrange(182))
    dates = []
    for _ in range(count):
        start += dt.timedelta(days=rng.randint(3, 40), minutes=rng.randrange(24 * 60))
        dates.append(start)
    return dates


def _stamp(moment: dt.datetime) -> str:
    """LoCoMo's session time format, e.g. ``1:56 pm on 8 May, 2023``."""
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'am' if moment.hour < 12 else 'pm'} on {moment.day} {moment.strftime('%B')}, {moment.year}"


def _day(moment: dt.datetime) -> str:
    """How a temporal answer names the day, e.g. ``8 May 2023``."""
    return f"{moment.day} {moment.strftime('%B')} {moment.year}"


def generate_dialogue(conversation_id: str, *, seed: int = 0, config: GeneratorConfig | None = None,
                      split: SplitName = "train") -> Conversation:
    """One two-speaker dialogue, fully determined by ``(seed, conversation_id, config, split)``
    (the config's session, fact, filler and tail ranges are used)."""
    config = config or GeneratorConfig()
    rng = random.Random(f"deltamem-dialogue:{seed}:{conversation_id}")
    names = rng.sample(value_pool("given_name", split), 2)
    n_sessions = max(2, rng.randint(*config.sessions))
    dates = _session_dates(rng, n_sessions, split)
    by_session: list[list[_Said]] = [[] for _ in range(n_sessions)]
    used: set[str] = set(names)

    def draw(kind: ValueKind | str) -> str:
        """A value not used yet in this dialogue, so no question has two right answers."""
        pool = value_pool(kind, split)  # type: ignore[arg-type]
        value = rng.choice(pool)
        while value in used and len(used) < len(pool):
            value = rng.choice(pool)
        used.add(value)
        return value

    # each speaker tells facts about themselves, in random sessions
    for speaker in (0, 1):
        for slot in rng.sample(PERSON_FACTS, rng.randint(*config.facts) // 2 + 1):
            value = draw(slot.value_kind)
            question = slot.question.format(name=names[speaker])
            by_session[rng.randrange(n_sessions)].append(
                _Said(speaker, rng.choice(slot.statements).format(v=value), [("fact", question, value, SINGLE_HOP)]))
    # one speaker moves, then moves again in a later session
    mover = rng.randrange(2)
    first, second = draw("city"), draw("city")
    moved, moved_again = sorted(rng.sample(range(n_sessions), 2))
    name = names[mover]
    by_session[moved].append(_Said(mover, rng.choice(MOVE_FIRST).format(v=first),
                                   [("fact", f"When did {name} move to {first}?", _day(dates[moved]), TEMPORAL)]))
    by_session[moved_again].append(_Said(mover, rng.choice(MOVE_AGAIN).format(v=second),
                                         [("task", f"Where does {name} live now?", second, SINGLE_HOP)]))

    turns: list[Turn] = []
    said: list[_Said] = []

    def say(speaker: int, text: str, session: int, stamp: str | None = None) -> int:
        content = f"{names[speaker]}: {text}"
        if stamp:
            content = f"[{stamp}] {content}"
        turns.append(Turn(role="user" if speaker == 0 else "assistant", content=content, session=session))
        return len(turns) - 1

    for session, items in enumerate(by_session):
        ordered: list[_Said | None] = [s for s in items if not s.is_second_move]
        ordered += [None] * rng.randint(*config.filler_per_session)
        rng.shuffle(ordered)
        ordered += [s for s in items if s.is_second_move]  # the second move comes after that session's other news
        if session == n_sessions - 1:
            ordered += [None] * config.tail_exchanges
        opener = rng.randrange(2)
        say(opener, rng.choice(GREETINGS).format(other=names[1 - opener]), session, _stamp(dates[session]))
        for item in ordered:
            if item is None:
                speaker = rng.randrange(2)
                say(speaker, rng.choice(vocab.FILLER_USER), session)
                say(1 - speaker, rng.choice(vocab.FILLER_ASSISTANT), session)
            else:
                item.index = say(item.speaker, item.text, session)
                say(1 - item.speaker, rng.choice(REACTIONS), session)
                said.append(item)

    probes = [Probe(kind=kind, question=question, answer=answer, evidence=[item.index], category=category)  # type: ignore[arg-type]
              for item in said for kind, question, answer, category in item.probes]
    rng.shuffle(probes)
    return Conversation(id=conversation_id, turns=turns, probes=probes)
