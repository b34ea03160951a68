"""Chat turns over HTTP against a running `deltamem serve`, shared by the multi-process tests."""

from __future__ import annotations

import threading

import httpx


def ask(text: str, **fields) -> dict:
    return {"model": "deltamem", "messages": [{"role": "user", "content": text}], **fields}


def turn(http: httpx.Client, session: str, text: str, **fields) -> str:
    """One user turn on ``session``; the assistant's reply (the answer must be a 200)."""
    response = http.post("/v1/chat/completions", json=ask(text, **fields), headers={"X-Session-Id": session})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def concurrent_turns(clients: dict[str, httpx.Client], session: str, turns: int = 3) -> list[tuple[str, str]]:
    """Each named client says ``turns`` things to ``session`` at the same time as the others;
    the (said, replied) pairs, in the order the replies came back."""
    results: list[tuple[str, str]] = []

    def talk(http: httpx.Client, name: str) -> None:
        for number in range(turns):
            text = f"{name} says {number}"
            results.append((text, turn(http, session, text)))

    threads = [threading.Thread(target=talk, args=(http, name)) for name, http in clients.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == turns * len(clients), "a talking thread did not finish"
    return results
