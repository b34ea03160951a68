"""Run it twice: the second run remembers what the first was told.

First run: the user tells the assistant two facts. Each turn is committed to the session store
(messages + δ-mem state, atomically) and to the verbatim text log; then the program ends.

Second run (a new process): the same DeltaMemLLM(session_id=..., user_id=...) resumes the session
from the store. Its recent context is rebuilt from the saved messages, its δ-mem state is
loaded, and the question is routed: the router may put the matching text-log entry into the
context. The run prints the answer and the evidence: what the resumed session holds and what
the log returns for the question.

What the embedded backbone does and does not do: SmolLM2-135M-Instruct is tiny, so whether its
answer quotes the code depends on the model; the memory itself is deterministic. Until a trained
δ-mem adapter ships, the state is saved and restored but does not change answers yet
(UntrainedMemoryWarning); the fact reaches the second run through the restored context and the
log.

Run:  .venv/bin/python examples/03_persist_between_runs.py      (twice)
      .venv/bin/python examples/03_persist_between_runs.py --reset   (forget, start over)
Data: $DELTAMEM_HOME (default: <tmp>/deltamem-examples).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

HOME = os.environ.setdefault("DELTAMEM_HOME", str(Path(tempfile.gettempdir()) / "deltamem-examples"))

from deltamem_agents.session import SessionKey  # noqa: E402
from langchain_deltamem import DeltaMemLLM, DeltaMemRetriever  # noqa: E402

SESSION_ID, USER_ID = "persist-demo", "ada"
FACTS = ["My gym locker code is 7312.", "My sister Ines lives in Porto."]
QUESTION = "What is my gym locker code?"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--reset", action="store_true", help="forget the session, then exit")
args = parser.parse_args()

llm = DeltaMemLLM(session_id=SESSION_ID, user_id=USER_ID, max_tokens=32)
memory = llm.hybrid_memory
key = SessionKey(user_id=USER_ID, session_id=SESSION_ID)

if args.reset:
    report = memory.forget(session_id=SESSION_ID, user_id=USER_ID)
    print(f"forgot session {key}: {report.log_entries_removed} text-log entries removed")
    raise SystemExit(0)

head = memory.runtime.store.head(key)
if head is None or head.turn_count == 0:
    print(f"first run: telling the assistant {len(FACTS)} facts (session {key}, data in {HOME})")
    for fact in FACTS:
        answer = llm.invoke(fact)
        print(f"> {fact}\n  {answer.content}")
    head = memory.runtime.store.head(key)
    print(f"saved: {head.turn_count} turns, {head.message_count} messages, {head.tokens_written} tokens in the δ-mem state")
    print("now run this program again.")
else:
    session = memory.runtime.session(SESSION_ID, user_id=USER_ID)
    told = [m.content for m in session.messages if m.role == "user"]
    print(f"second run: resumed session {key} with {head.turn_count} turns; it was told {told}")
    hits = DeltaMemRetriever.from_llm(llm, k=1).invoke(QUESTION)
    print(f"text log, closest entry to the question: {hits[0].page_content!r} (turn {hits[0].metadata['turn']})")
    answer = llm.invoke(QUESTION)
    info = answer.response_metadata["deltamem"]
    print(f"> {QUESTION}\n  {answer.content}")
    placed = [hit.text for hit in memory.textlog.get(info.get("retrieved_ids", []))]
    print(f"router: route={info.get('route')!r}; log entries placed in the context: {placed}")
    print("run with --reset to start over.")
