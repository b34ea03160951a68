"""Loading LoCoMo-format files (the LoCoMo long-conversation benchmark) as `Conversation`s.

A LoCoMo sample is a conversation between two speakers over many dated sessions, plus QA pairs
(category 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial with no answer).
Speaker A's turns become user messages, speaker B's assistant messages; every message keeps its
speaker's name, the first message of a session carries the session's date, and a shared photo
is replaced by its caption. Evaluation only: these conversations are never used for training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deltamem_agents.data.records import Conversation, Probe, Turn
from deltamem_agents.errors import UserError

_SESSION = re.compile(r"^session_(\d+)$")


class LocomoFormatError(UserError, ValueError):
    """A file that is not in the LoCoMo format (the message names what is missing)."""


def _turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares a photo: {caption}]".strip()
    return f"{turn.get('speaker', '?')}: {text}"


def locomo_conversation(sample: dict[str, Any], *, source: str = "locomo", include_adversarial: bool = False) -> Conversation:
    try:
        conversation = sample["conversation"]
        speaker_a = conversation["speaker_a"]
        sample_id = str(sample["sample_id"])
    except (KeyError, TypeError) as exc:
        raise LocomoFormatError(f"{source}: a sample lacks {exc}; expected sample_id and conversation.speaker_a") from exc
    sessions = sorted((int(m.group(1)), key) for key in conversation if (m := _SESSION.match(key)))
    turns: list[Turn] = []
    dia_index: dict[str, int] = {}
    for number, key in sessions:
        date = conversation.get(f"{key}_date_time")
        for position, turn in enumerate(conversation[key] or []):
            text = _turn_text(turn)
            if position == 0 and date:
                text = f"[{date}] {text}"
            dia_index[str(turn.get("dia_id"))] = len(turns)
            role = "user" if turn.get("speaker") == speaker_a else "assistant"
            turns.append(Turn(role=role, content=text, session=number))
    if not turns:
        raise LocomoFormatError(f"{source}: sample {sample_id} has no session turns")
    probes = []
    for qa in sample.get("qa", []):
        category = qa.get("category")
        adversarial = str(category) == "5" or "answer" not in qa
        if adversarial and not include_adversarial:
            continue
        answer = str(qa["answer"]) if "answer" in qa else "Not mentioned in the conversation"
        evidence = sorted({dia_index[e] for e in qa.get("evidence", []) if e in dia_index})
        probes.append(Probe(kind="locomo", question=str(qa["question"]), answer=answer, evidence=evidence,
                            category=None if category is None else str(category)))
    return Conversation(id=f"locomo-{sample_id}", source=source, turns=turns, probes=probes)


def load_locomo(path: str | Path, *, include_adversarial: bool = False) -> list[Conversation]:
    """Every sample of a LoCoMo JSON file (a list of samples, or one sample)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LocomoFormatError(f"{path} is not JSON: {exc}") from exc
    samples = raw if isinstance(raw, list) else [raw]
    return [locomo_conversation(s, source=path.name, include_adversarial=include_adversarial) for s in samples]
