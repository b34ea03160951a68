"""Conversations -> token ids laid out exactly as a `MemorySession` would see them.

An `Episode` is one conversation: the history tokens (with SSW segment ids) that are written
into the state, the recent window (the last ``window_tokens`` of the history, which every probe
sees first, as a session rebuilds its context) and one `ReadExample` per probe: an optional
system note of retrieved messages (as `HybridMemory` places them), the question with the
generation prompt, then the answer and the end-of-turn token, which are the only supervised
tokens. The chat template is rendered by the session's own `ChatEncoder`, so training and
`deltamem eval` tokenise the same text the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from deltamem_agents.data.prompts import probe_prompt
from deltamem_agents.data.records import Conversation, Probe
from deltamem_agents.memory.notes import snippet_text
from deltamem_agents.session.chat import ChatEncoder


def snippet_note(texts: list[str]) -> str:
    """The system note the hybrid memory puts in context (same header and bullet layout)."""
    return snippet_text(texts)


@dataclass
class ReadExample:
    """(Note) + question + answer, read after the window; ``labels`` is -100 except on the answer."""

    ids: list[int]
    labels: list[int]
    probe: Probe
    noted: bool = False  # retrieved notes in context: the answer can be read there, not only from the state


@dataclass
class Episode:
    conversation_id: str
    history_ids: list[int]
    history_segments: list[int]
    window_ids: list[int]
    reads: list[ReadExample] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.history_ids) + len(self.window_ids) + sum(len(r.ids) for r in self.reads)


def end_of_turn_id(tokenizer: Any) -> int:
    token = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(token, int) and token != tokenizer.unk_token_id:
        return token
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token to end an answer with")
    return int(tokenizer.eos_token_id)


class EpisodeBuilder:
    """Tokenises conversations for one tokenizer and one context layout."""

    def __init__(self, tokenizer: Any, *, window_tokens: int, max_history_tokens: int, max_read_tokens: int,
                 granularity: str = "message") -> None:
        self.tokenizer = tokenizer
        self.encoder = ChatEncoder(tokenizer, granularity)  # type: ignore[arg-type]
        self.window_tokens = window_tokens
        self.max_history_tokens = max_history_tokens
        self.max_read_tokens = max_read_tokens
        self.end_id = end_of_turn_id(tokenizer)

    def history(self, conversation: Conversation) -> tuple[list[int], list[int], str]:
        """History ids, segment ids and the rendered text (the context the questions extend)."""
        encoded, _ = self.encoder.encode_delta("", conversation.messages(), 0, next_segment=0)
        return encoded.ids, encoded.segment_ids, encoded.text

    def build(self, conversation: Conversation, *, snippet_share: float = 0.0, rng: random.Random | None = None) -> Episode:
        ids, segments, rendered = self.history(conversation)
        window = ids[-self.window_tokens :] if self.window_tokens else []
        episode = Episode(conversation.id, ids[-self.max_history_tokens :], segments[-self.max_history_tokens :], window)
        messages = conversation.messages()
        for probe in conversation.probes:
            note = None
            if rng is not None and probe.evidence and rng.random() < snippet_share:
                note = self._note(conversation, probe, rng) or None  # "": nothing to place
            prompt_ids = self.prompt_ids(rendered, messages, probe, note)
            answer_ids = self.tokenizer(probe.answer, add_special_tokens=False)["input_ids"] + [self.end_id]
            if len(prompt_ids) + len(answer_ids) > self.max_read_tokens:
                continue  # a probe longer than the read budget is not trainable as laid out
            episode.reads.append(ReadExample(prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids, probe,
                                             noted=note is not None))
        return episode

    def prompt_ids(self, rendered: str, messages: list[dict[str, str]], probe: Probe, note: str | None) -> list[int]:
        """The note (if any) and the question with the generation prompt, after the history."""
        extra = ([{"role": "system", "content": note}] if note else []) + [{"role": "user", "content": probe_prompt(probe)}]
        encoded, _ = self.encoder.encode_delta(rendered, messages + extra, len(messages), next_segment=0,
                                               add_generation_prompt=True)
        return encoded.ids

    @staticmethod
    def _note(conversation: Conversation, probe: Probe, rng: random.Random) -> str:
        """The evidence turns plus one distractor user turn, in random order, as retrieval returns them."""
        texts = [conversation.turns[i].content for i in probe.evidence if 0 <= i < len(conversation.turns)]
        others = [t.content for i, t in enumerate(conversation.turns) if t.role == "user" and i not in probe.evidence]
        if others:
            texts.append(rng.choice(others))
        rng.shuffle(texts)
        return snippet_note(texts)
