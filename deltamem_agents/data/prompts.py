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


#: open prompts for the free-chat check of `deltamem eval --free-prompts`: long replies in which a
#: model that loops shows it (short answers to probes cannot); none refers to a conversation
FREE_PROMPTS: tuple[str, ...] = (
    "Tell me about a city you would like to visit.",
    "What would you cook for a dinner with friends, and why?",
    "Describe your ideal weekend.",
    "Explain how a bicycle works to a ten-year-old.",
    "Write a short story about a lighthouse keeper.",
    "What are some good habits for staying healthy?",
    "Give me advice for my first day at a new job.",
    "How do plants turn sunlight into food?",
    "Describe the view from the top of a mountain.",
    "What makes a good book worth reading?",
    "Plan a three-day trip to the seaside for me.",
    "Why do people enjoy music so much?",
    "Tell me about an invention that changed the world.",
    "How would you explain the internet to someone from the past?",
    "Write a letter to a friend you have not seen for years.",
    "What should I keep in mind when adopting a dog?",
    "Describe a busy market on a Saturday morning.",
    "What are the pros and cons of working from home?",
    "Tell me how to make a cup of tea properly.",
    "Imagine a day in the life of an astronaut on the Moon and describe it.",
)
