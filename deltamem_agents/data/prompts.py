"""How a probe is put to the model, shared by training and evaluation so they never drift."""

from __future__ import annotations

from deltamem_agents.data.records import Probe

#: appended to questions (not to requests): short answers make token F1 meaningful for every condition
SHORT_ANSWER_SUFFIX = " Answer in a few words."


def probe_prompt(probe: Probe) -> str:
    """The user message that asks ``probe``."""
    if probe.kind == "request":
        return probe.question
    return probe.question + SHORT_ANSWER_SUFFIX
