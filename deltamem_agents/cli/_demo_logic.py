"""What `deltamem demo` does, apart from printing: one scripted conversation, three answerers.

The conversation tells a fact (the user's pet ferret is called *Quillon*, a made-up word that
is in no list of the training data) and an instruction (*call me Captain*), then makes small
talk until both have left the recent window. Each question is then answered three times, on
the **same last ``window`` tokens** of the conversation, as probes (nothing is written):

- ``bare``: the backbone alone (the adapter stays attached, but its state is empty, and an empty
  state reads zero: exactly the bare backbone);
- ``state``: the same window, read through the δ-mem state written by the whole conversation;
- ``hybrid``: the state and the window, plus the log snippets the router chose, placed as
  `HybridMemory` places them (its router, its ``search_k``, its system note).

This is `deltamem eval`'s layout (``recent_window``, ``state``, ``hybrid``; see
`deltamem_agents.eval.conditions`). For each answer the module records where the expected value
was: in the window text, in the notes shown to the model, or in neither (then, if the reply has
it, only the state can have carried it). `check` states the one claim the demo makes about the
shipped adapter; the state-only rows are reported, not asserted.

``python -m deltamem_agents.cli._demo_logic --home H --textlog T --session S`` is "process 1"
of the demo: it writes the conversation into the state and the log, saves, prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.memory import HybridMemory
    from deltamem_agents.runtime import DeltaMemRuntime
    from deltamem_agents.session import MemorySession

SYSTEM = "You are a friendly assistant with a good memory. Use what the user told you earlier in the conversation."
FACT_VALUE = "Quillon"
NICKNAME = "Captain"
#: (user, assistant) exchanges: the fact, the instruction, then small talk that pushes both out
CONVERSATION: tuple[tuple[str, str], ...] = (
    (f"Hi! I have a pet ferret called {FACT_VALUE}. He hides my socks everywhere.",
     f"A sock thief! {FACT_VALUE} sounds like a lot of fun."),
    (f"From now on, please always call me {NICKNAME}.", f"Understood, {NICKNAME}."),
    ("The weather has been so grey this week.", "I hope the sun comes back soon."),
    ("I tried a new recipe with lentils yesterday.", "Nice, lentils are great in soups."),
    ("The bus was twenty minutes late today.", "That must have been annoying."),
    ("I am thinking about repainting the kitchen.", "A fresh colour can change a room."),
    ("I went for a walk along the river.", "Sounds relaxing."),
)
DEFAULT_WINDOW = 64
DEFAULT_MAX_NEW_TOKENS = 24
USER_ID = "default"

Answerer = Literal["bare", "state", "hybrid"]
ANSWERERS: tuple[Answerer, ...] = ("bare", "state", "hybrid")
LABELS: dict[str, str] = {"bare": "(a) bare backbone", "state": "(b) δ-mem state", "hybrid": "(c) hybrid"}
INPUTS: dict[str, str] = {"bare": "window", "state": "window + state", "hybrid": "window + state + notes"}


class Question(BaseModel):
    key: str
    text: str
    expected: str
    about: str = Field(description="what the question tests, for a person")


QUESTIONS: tuple[Question, ...] = (
    Question(key="fact", text="What is my pet's name? Answer in a few words.", expected=FACT_VALUE,
             about="the fact, told in turn 1"),
    Question(key="nickname", text="What should you call me? Answer in a few words.", expected=NICKNAME,
             about="the instruction of turn 2, asked about"),
    Question(key="greeting", text="Good morning! How are you today?", expected=NICKNAME,
             about="the instruction of turn 2, to follow unasked"),
)


# -- results ------------------------------------------------------------------------------------------
class MessagePlace(BaseModel):
    role: str
    content: str
    tokens: int
    place: Literal["out", "partly", "in"] = Field(description="whether the message is in the recent window")


class Answer(BaseModel):
    question: str
    answerer: Answerer
    reply: str
    expected: str
    in_window: bool = Field(description="the expected value occurs in the window text")
    in_notes: bool = Field(description="... in the retrieved notes shown to the model")
    in_reply: bool
    source: str = Field(description="which part answered: window, retrieved note, state, none")
    context_text: str | None = Field(description="the model's whole input when it began to answer (decoded)")
    context_tokens: int
    window_matches: bool | None = Field(description="the input began with exactly the shared window (None: no token decoded)")
    notes: list[str] = Field(default_factory=list)
    route: str | None = None
    route_reason: str | None = None
    route_explained: str | None = None
    state_confidence: float | None = None
    seconds: float


class Check(BaseModel):
    passed: bool
    items: list[tuple[bool, str]]


class DemoResult(BaseModel):
    session: str
    window_tokens: int
    history_tokens: int
    window_text: str
    messages: list[MessagePlace]
    questions: list[Question]
    answers: list[Answer]
    check: Check | None = None

    def answer(self, question_key: str, answerer: str) -> Answer:
        question = next(q for q in self.questions if q.key == question_key)
        return next(a for a in self.answers if a.question == question.text and a.answerer == answerer)


# -- process 1: the conversation ---------------------------------------------------------------------
def write_conversation(memory: HybridMemory, session_id: str, *, user_id: str = USER_ID) -> dict[str, Any]:
    """Write `CONVERSATION` into the session's state and the text log, one exchange (one
    commit) at a time, as a chat would have; returns what was saved."""
    from deltamem_agents.cli._runtime import norms_of, state_digest
    from deltamem_agents.store.records import ChatMessage, SessionKey

    tokens = 0
    for user, assistant in CONVERSATION:
        tokens += memory.ingest([ChatMessage(role="user", content=user), ChatMessage(role="assistant", content=assistant)],
                                session_id=session_id, user_id=user_id)
    record = memory.runtime.store.require(SessionKey(user_id=user_id, session_id=session_id))
    return {
        "pid": os.getpid(),
        "tokens_written": tokens,
        "turn_count": record.metadata.turn_count,
        "message_count": record.metadata.message_count,
        "state_norms_saved": norms_of(record.state),
        "state_digest_saved": state_digest(record.state),
        "log_entries": memory.textlog.count(user_id=user_id, session_id=session_id) if memory.textlog else 0,
    }


# -- process 2: the side-by-side ---------------------------------------------------------------------
def history_layout(session: MemorySession, keep: int) -> tuple[list[int], list[MessagePlace]]:
    """The conversation's tokens as a resumed session renders them, and where each message lies
    relative to the last ``keep`` of them (the window a session rebuilt with ``keep`` holds)."""
    from deltamem_agents.session.session import template_view

    views = [template_view(m) for m in session.messages]
    ids = session.encoder.encode_delta("", views, 0, next_segment=0)[0].ids
    cut = max(0, len(ids) - keep)
    places, start = [], 0
    for index, message in enumerate(session.messages):
        end = len(session.encoder.encode_delta("", views[: index + 1], 0, next_segment=0)[0].ids)
        place = "in" if start >= cut else "partly" if end > cut else "out"
        places.append(MessagePlace(role=message.role, content=message.content, tokens=end - start, place=place))
        start = end
    return ids, places


def generate(session: MemorySession, question: str, max_new_tokens: int) -> tuple[str, list[int] | None]:
    """A greedy probe answer, and the token ids the model had in context when it began to
    answer (``None`` when it decoded nothing)."""
    context: list[int] | None = None
    for _ in session.stream(question, write=False, max_new_tokens=max_new_tokens, temperature=0.0):
        if context is None:
            context = session.context_ids  # before the first decoded token joins it
    assert session.last_reply is not None
    return session.last_reply.text, context


def source_of(answerer: str, *, in_reply: bool, in_window: bool, in_notes: bool) -> str:
    """Which part of the input answered: the first place, of those this answerer has, that held
    the expected value; the state when the reply has it and no text shown to the model did."""
    if not in_reply:
        return "none: not in the reply"
    if in_window:
        return "the window"
    if in_notes:
        return "the retrieved note"
    if answerer == "bare":
        return "none: a guess (no input held it)"
    return "the state (no text shown held it)"


def answer_side_by_side(
    runtime: DeltaMemRuntime,
    memory: HybridMemory,
    session_id: str,
    *,
    window: int = DEFAULT_WINDOW,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    questions: Sequence[Question] = QUESTIONS,
    user_id: str = USER_ID,
    on_answer: Callable[[Answer], None] | None = None,
) -> DemoResult:
    """Every question, answered by each of `ANSWERERS` on the session's last ``window`` tokens."""
    from deltamem_agents.memory.hybrid import snippet_note
    from deltamem_agents.memory.routing import RouterInput
    from deltamem_agents.session import MemorySession, SessionConfig

    loaded = runtime.session(session_id, user_id=user_id)
    messages, state = list(loaded.messages), loaded.state
    history, places = history_layout(loaded, window)
    window_ids = history[-window:]
    window_text = runtime.tokenizer.decode(window_ids)
    size = window + 768  # room for notes, question and answer above the window: never rebuilt mid-answer
    config = SessionConfig(context_window=size, rebuild_keep=(window + 0.5) / size)
    answers: list[Answer] = []
    for question in questions:
        expected = question.expected.lower()
        for answerer in ANSWERERS:
            started = time.perf_counter()
            session = MemorySession(runtime.model, runtime.tokenizer, runtime.handle, config=config,
                                    state=None if answerer == "bare" else state, messages=messages, lock=runtime.lock)
            notes: list[str] = []
            decision, confidence = None, None
            if answerer == "hybrid":
                assert memory.textlog is not None
                hits = memory.textlog.search(question.text, user_id=user_id, session_id=session_id, k=memory.config.search_k)
                confidence = session.state_confidence(question.text) if memory.config.measure_state_confidence else None
                decision = memory.router.route(RouterInput(query=question.text, hits=hits, state_confidence=confidence))
                note = snippet_note(decision)
                if note is not None:
                    session.ingest(note, write=False)
                    notes = [hit.text for hit in decision.snippets]
            reply, context = generate(session, question.text, max_new_tokens)
            in_window, in_notes = expected in window_text.lower(), any(expected in n.lower() for n in notes)
            in_reply = expected in reply.lower()
            answer = Answer(
                question=question.text, answerer=answerer, reply=reply, expected=question.expected,
                in_window=in_window, in_notes=in_notes, in_reply=in_reply,
                source=source_of(answerer, in_reply=in_reply, in_window=in_window, in_notes=in_notes),
                context_text=None if context is None else runtime.tokenizer.decode(context),
                context_tokens=len(context) if context is not None else 0,
                window_matches=None if context is None else context[: len(window_ids)] == window_ids,
                notes=notes,
                route=decision.route if decision else None, route_reason=decision.reason if decision else None,
                route_explained=decision.explain() if decision else None, state_confidence=confidence,
                seconds=round(time.perf_counter() - started, 2),
            )
            answers.append(answer)
            if on_answer is not None:
                on_answer(answer)
    return DemoResult(session=f"{user_id}/{session_id}", window_tokens=len(window_ids), history_tokens=len(history),
                      window_text=window_text, messages=places, questions=list(questions), answers=answers)


def check(result: DemoResult, *, expect: str | None = None) -> Check:
    """What the SDK can honestly deliver with the shipped adapter: the fact is not in the
    window, the hybrid's answer to the fact question has it, the bare backbone's has not.
    ``expect`` replaces the value looked for in the replies (to see the check fail)."""
    fact = next(q for q in result.questions if q.key == "fact")
    value = expect or fact.expected
    bare, hybrid = result.answer("fact", "bare"), result.answer("fact", "hybrid")
    told = fact.expected.lower()
    items = [
        (told not in result.window_text.lower() and all(
            told not in (a.context_text or "").lower() for a in result.answers if a.answerer != "hybrid"),
         f"{fact.expected!r} is not in the window the three answerers share (nor in the input of (a) and (b))"),
        (value.lower() in hybrid.reply.lower(), f"(c) the hybrid answers {fact.text!r} with {value!r}"),
        (value.lower() not in bare.reply.lower(), f"(a) the bare backbone, on the same window, does not say {value!r}"),
    ]
    return Check(passed=all(ok for ok, _ in items), items=items)


# -- process 1's entry point --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltamem_agents.cli._demo_logic",
                                     description="process 1 of `deltamem demo`: write its conversation, save, exit")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--textlog", type=Path, required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--backbone")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    args = parser.parse_args(argv)
    from deltamem_agents.cli._runtime import build_hybrid, build_runtime

    started = time.perf_counter()
    notes: list[str] = []
    runtime = build_runtime(home=args.home, backbone=args.backbone, device=args.device, dtype=args.dtype,
                            system_prompt=SYSTEM, notes=notes, quiet=True)
    memory = build_hybrid(runtime, textlog=args.textlog)
    saved = write_conversation(memory, args.session)
    saved.update(seconds=round(time.perf_counter() - started, 2), notes=notes)
    print(json.dumps(saved))
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())
