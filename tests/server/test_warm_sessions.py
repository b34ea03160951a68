"""Warm sessions in the server: `/health` reports them, a warm session's next turn prefills only
its new messages, `--warm-sessions-mb` bounds them (0: none kept)."""

from __future__ import annotations

import pytest

from deltamem_agents.server import ServerSettings
from deltamem_agents.server.build import load_runtime
from tests.server.conftest import client_for
from tests.test_warm_sessions import _prefilled

pytestmark = pytest.mark.anyio


def ask(text: str) -> dict:
    return {"model": "deltamem", "messages": [{"role": "user", "content": text}], "max_tokens": 3}


async def _turn(http, session_id: str, text: str) -> None:
    response = await http.post("/v1/chat/completions", json=ask(text), headers={"X-Session-Id": session_id})
    assert response.status_code == 200, response.text


async def test_health_reports_warm_sessions_and_a_warm_turn_prefills_only_its_new_message(make_app, runtime):
    async with client_for(make_app()) as http:
        await _turn(http, "w", "My name is Ada and I keep bees.")
        with _prefilled(runtime.model) as warm_fed:
            await _turn(http, "w", "What do I keep?")
        warm = (await http.get("/health")).json()["warm_sessions"]
        await _turn(http, "c", "My name is Ada and I keep bees.")
        runtime.set_warm_budget(0)  # as --warm-sessions-mb 0: none kept
        with _prefilled(runtime.model) as cold_fed:
            await _turn(http, "c", "What do I keep?")
        cold = (await http.get("/health")).json()["warm_sessions"]
    # one open per turn is counted, although a turn of the server opens its session twice
    assert (warm["sessions"], warm["hits"], warm["misses"], warm["evictions"]) == (1, 1, 1, 0)
    assert warm["bytes"] > 0 and warm["budget_bytes"] is None
    assert (cold["sessions"], cold["bytes"], cold["budget_bytes"], cold["misses"]) == (0, 0, 0, 3)
    assert cold["evictions"] == 3
    assert 0 < warm_fed[0] < cold_fed[0]  # the evicted session's context was prefilled again


def test_the_budget_flag_reaches_the_runtime(monkeypatch, tmp_path):
    assert ServerSettings().warm_sessions_mb == 1024
    seen = {}

    class FakeRuntime:
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)

    import deltamem_agents.runtime

    monkeypatch.setattr(deltamem_agents.runtime, "DeltaMemRuntime", FakeRuntime)
    load_runtime(ServerSettings(warm_sessions_mb=3, home=tmp_path))
    assert seen["warm_budget_bytes"] == 3 * 2**20
    load_runtime(ServerSettings(warm_sessions_mb=0, home=tmp_path))
    assert seen["warm_budget_bytes"] == 0
