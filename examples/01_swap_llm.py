"""Swap the chat model of an ordinary LangChain LCEL chain for DeltaMemLLM.

Part 1 runs the chain with a stand-in model: langchain-core's GenericFakeChatModel plays the
part of ChatOpenAI (or any hosted model) so that this example runs offline. It replies from a
fixed list and remembers nothing: each call sees only the prompt the chain builds.

Part 2 changes one line, the model. The prompt, the parser and the calls stay the same. Now every
call is a turn of a persistent session: the chain still sends only the system prompt and the new
question, yet the second question is answered in a session that holds the first one (in the
attention context, in the δ-mem state and in the verbatim text log).

What the embedded backbone does and does not do: SmolLM2-135M-Instruct is tiny, so its answers
are short and often naive; and until a trained δ-mem adapter ships, the δ-mem state is written
and saved but does not change answers yet (you will see an UntrainedMemoryWarning). What lets it
use the first message here is the session's context plus, when the router asks for it, the
snippet retrieved from the text log.

Run:  .venv/bin/python examples/01_swap_llm.py
Data: $DELTAMEM_HOME (default: <tmp>/deltamem-examples); this example starts its session afresh.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

HOME = os.environ.setdefault("DELTAMEM_HOME", str(Path(tempfile.gettempdir()) / "deltamem-examples"))
SESSION = {"configurable": {"session_id": "swap-demo", "user_id": "ada"}}
QUESTIONS = [
    "I'm vegetarian and I land in Lisbon on Friday evening.",
    "Where do I land, and what should I eat on my first evening?",
]

prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a concise travel assistant. Answer in one or two sentences."), ("human", "{question}")]
)


def run(chain, label: str) -> None:
    print(f"\n=== {label} ===")
    for question in QUESTIONS:
        print(f"> {question}")
        print(f"  {chain.invoke({'question': question}, config=SESSION)}")


# --- Part 1: the chain as it was, with a stand-in for a hosted model -----------------------------
# (in a real application: llm = ChatOpenAI(model="gpt-4o-mini"))
llm = GenericFakeChatModel(
    messages=iter([AIMessage("Welcome! Lisbon has great vegetarian food."), AIMessage("Sorry, where are you landing?")])
)
run(prompt | llm | StrOutputParser(), "stand-in chat model (no memory)")

# --- Part 2: the same chain, one line changed ------------------------------------------------------
from deltamem_agents.session import SessionKey  # noqa: E402
from langchain_deltamem import DeltaMemLLM  # noqa: E402

llm = DeltaMemLLM(max_tokens=48)  # <- the one changed line (the import above aside)

memory = llm.hybrid_memory  # loads the embedded backbone once (offline)
memory.forget(session_id="swap-demo", user_id="ada")  # start this demo afresh on every run
run(prompt | llm | StrOutputParser(), "DeltaMemLLM (memory per session)")

# What the memory did: the chain sent only the system prompt and one question per call, the
# session holds the whole conversation.
held = memory.runtime.session("swap-demo", user_id="ada").messages
roles = [m.role for m in held if m.metadata.get("kind") not in ("tools", "retrieved")]
notes = sum(m.metadata.get("kind") == "retrieved" for m in held)
head = memory.runtime.store.head(SessionKey(user_id="ada", session_id="swap-demo"))
print(f"\nsession 'swap-demo' holds {len(roles)} messages: {roles}")
print(f"(plus {notes} note(s) of text-log snippets the router placed in the context; notes are never written)")
print(
    f"committed turns: {head.turn_count}, tokens written into the δ-mem state: {head.tokens_written}, "
    f"text-log entries: {memory.textlog.count(user_id='ada', session_id='swap-demo')}"
)
last = llm.invoke("Thanks!", config=SESSION)
info = last.response_metadata["deltamem"]
print(f"a third call, turn {info['turn']}: route={info.get('route')!r} ({info.get('route_reason')})")
print(f"data folder: {HOME}")
