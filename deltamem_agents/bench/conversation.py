"""A synthetic, deterministic conversation that grows to any number of tokens.

Growth benchmarks need a long history whose size is known in tokens of the backbone's chat
template, with facts worth retrieving: each user turn is a numbered note (who put what where,
with a code) and each assistant turn acknowledges it. Questions ask, word for word, about
notes that have long left any recent window.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any

from deltamem_agents.session.chat import ChatEncoder
from deltamem_agents.store.records import ChatMessage

NAMES = ["Ada", "Bruno", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi", "Luca"]
COLOURS = ["blue", "amber", "green", "crimson", "silver", "violet", "ochre", "teal"]
THINGS = ["notebook", "toolbox", "umbrella", "kettle", "lantern", "suitcase", "camera", "violin", "atlas", "ladder"]
PLACES = [
    "in the kitchen drawer", "under the stairs", "on the top shelf of the garage", "behind the piano",
    "in the blue van", "at the allotment shed", "in the attic by the window", "at the office reception",
]
FILLER = [
    "It rained all afternoon, so we stayed in and sorted old papers.",
    "The train was late again, which gave me time to read the paper.",
    "We are planning a short trip to the coast once the weather turns.",
    "My neighbour asked whether we still need the spare chairs from the party.",
    "The market had excellent apricots this week, and the bakery opened early.",
    "I finally fixed the squeaky hinge on the back door with a drop of oil.",
    "Remind me later that the library books are due back on Thursday.",
    "The meeting ran long, but we agreed on the budget for the spring.",
]


@dataclass
class SyntheticConversation:
    """Alternating user notes and assistant acknowledgements, counted in template tokens.

    ``cumulative[i]`` is the number of tokens of the rendered chat template of
    ``messages[: i + 1]`` (the template's own tokens included).
    """

    tokenizer: Any
    seed: int = 0
    messages: list[ChatMessage] = field(default_factory=list)
    cumulative: list[int] = field(default_factory=list)
    facts: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._encoder = ChatEncoder(self.tokenizer)
        self._rendered = ""
        self._views: list[dict[str, Any]] = []

    def grow_to(self, tokens: int) -> None:
        """Add turns until the history has at least ``tokens`` tokens."""
        while not self.cumulative or self.cumulative[-1] < tokens:
            for message in self._turn(len(self.facts)):
                self._append(message)

    def prefix(self, tokens: int) -> tuple[list[ChatMessage], int]:
        """The shortest history of whole turns with at least ``tokens`` tokens, and its size."""
        self.grow_to(tokens)
        end = bisect.bisect_left(self.cumulative, tokens) + 1
        if end % 2:  # it ends on a user note: add the assistant's answer (grow_to adds whole turns)
            end += 1
        return self.messages[:end], self.cumulative[end - 1]

    def tokens(self, start: int, end: int) -> int:
        """Template tokens of ``messages[start:end]``."""
        return self.cumulative[end - 1] - (self.cumulative[start - 1] if start else 0) if end > start else 0

    def recent(self, count: int, budget: int) -> list[ChatMessage]:
        """The most recent of the first ``count`` messages that fit in ``budget`` tokens (at least one)."""
        start = count - 1
        while start > 0 and self.tokens(start - 1, count) <= budget:
            start -= 1
        return self.messages[start:count]

    def question(self, turn: int, history_messages: int) -> str:
        """A question about a note from the oldest quarter of the history (beyond any window)."""
        quarter = max(1, history_messages // 8)
        index = (turn * 7919 + 13) % quarter
        name, colour, thing, _, _ = self.facts[index]
        return f"What exactly did I say in note {index + 1} about {name}'s {colour} {thing}? Quote my words."

    # -- building --------------------------------------------------------------------------------
    def _turn(self, index: int) -> list[ChatMessage]:
        rng = self._rng
        name, colour, thing, place = rng.choice(NAMES), rng.choice(COLOURS), rng.choice(THINGS), rng.choice(PLACES)
        code = rng.randrange(1000, 9999)
        self.facts.append((name, colour, thing, place, code))
        filler = " ".join(rng.sample(FILLER, 2))
        user = f"Note {index + 1}: {name} left the {colour} {thing} {place}; the code for it is {code}. {filler}"
        assistant = f"Noted: {name}'s {colour} {thing} is {place}, code {code}."
        return [ChatMessage(role="user", content=user), ChatMessage(role="assistant", content=assistant)]

    def _append(self, message: ChatMessage) -> None:
        self._views.append({"role": message.role, "content": message.content})
        encoded, _ = self._encoder.encode_delta(self._rendered, self._views, len(self._views) - 1, next_segment=0)
        self._rendered += encoded.text
        self.messages.append(message)
        self.cumulative.append((self.cumulative[-1] if self.cumulative else 0) + len(encoded.ids))
