"""DeltaMemRetriever: the text log as a LangChain retriever (real Chroma, real embeddings)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_deltamem import DeltaMemLLM, DeltaMemRetriever

from deltamem_agents.session import ChatMessage, InvalidSessionIdError

FACTS = {
    "trip": ["I land in Lisbon on Friday at noon.", "My hotel is near the river."],
    "home": ["The boiler needs a service in March.", "The cat eats twice a day."],
}


@pytest.fixture
def filled(textlog):
    for session_id, texts in FACTS.items():
        for turn, text in enumerate(texts):
            textlog.add_message(ChatMessage(role="user", content=text), user_id="ada", session_id=session_id, turn=turn)
    textlog.add_document("Boarding closes 30 minutes before departure.", user_id="ada", session_id="trip", source="ticket.pdf")
    return textlog


def test_search_one_session_returns_verbatim_documents_closest_first(filled):
    retriever = DeltaMemRetriever(textlog=filled, user_id="ada", session_id="trip", k=2)
    docs = retriever.invoke("When do I land in Lisbon?")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    assert docs[0].page_content == "I land in Lisbon on Friday at noon."
    assert docs[0].metadata["session_id"] == "trip" and docs[0].metadata["role"] == "user"
    assert docs[0].metadata["distance"] <= docs[1].metadata["distance"] and docs[0].id


def test_scope_user_searches_every_session_and_the_config_picks_the_session(filled):
    everywhere = DeltaMemRetriever(textlog=filled, user_id="ada", scope="user", k=1)
    assert everywhere.invoke("boiler maintenance")[0].metadata["session_id"] == "home"
    scoped = DeltaMemRetriever(textlog=filled, user_id="ada", session_id="trip", k=5)
    docs = scoped.invoke("boiler maintenance", config={"configurable": {"session_id": "home"}})
    assert {d.metadata["session_id"] for d in docs} == {"home"} and len(docs) == 2
    assert DeltaMemRetriever(textlog=filled, k=5).invoke("boiler", config={"configurable": {"user_id": "bob"}}) == []


def test_documents_can_be_left_out_and_far_entries_cut(filled):
    with_documents = DeltaMemRetriever(textlog=filled, user_id="ada", session_id="trip", k=3)
    assert "document" in [d.metadata["kind"] for d in with_documents.invoke("boarding time")]
    messages_only = DeltaMemRetriever(textlog=filled, user_id="ada", session_id="trip", k=3, include_documents=False)
    assert {d.metadata["kind"] for d in messages_only.invoke("boarding time")} == {"message"}
    assert DeltaMemRetriever(textlog=filled, user_id="ada", session_id="trip", max_distance=0.0).invoke("unrelated words") == []


async def test_async_retrieval_honours_the_config(filled):
    retriever = DeltaMemRetriever(textlog=filled, user_id="ada", k=1)
    docs = await retriever.ainvoke("cat food", config={"configurable": {"session_id": "home"}})
    assert docs[0].page_content == "The cat eats twice a day."


def test_from_llm_reads_the_log_the_model_writes(memory, script):
    llm = DeltaMemLLM(memory=memory, session_id="chat", max_tokens=8)
    script.say("Got it.")
    llm.invoke("My passport number ends in 4471.")
    docs = DeltaMemRetriever.from_llm(llm, k=1).invoke("passport")
    assert docs[0].page_content == "My passport number ends in 4471." and docs[0].metadata["session_id"] == "chat"


def test_a_state_only_model_has_no_log_to_retrieve_from(tiny_runtime):
    with pytest.raises(ValueError, match="hybrid=False"):
        DeltaMemRetriever.from_llm(DeltaMemLLM(runtime=tiny_runtime, hybrid=False))


def test_bad_scope_ids_are_refused(filled):
    with pytest.raises(InvalidSessionIdError):
        DeltaMemRetriever(textlog=filled).invoke("x", config={"configurable": {"session_id": "a/b"}})
