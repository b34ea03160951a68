"""Retention: TTLs per entry, retention policies per user, and `prune` (the log loses the expired
entries, the state is rebuilt from what remains), on a tiny model with a real embedded Chroma log."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from deltamem_agents.memory import TextLogError
from deltamem_agents.memory.hybrid import HybridConfig, HybridMemory
from deltamem_agents.memory.retention import RetentionPolicy, parse_duration, select_expired
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.memory.verbs import MemoryNotFoundError, group_entries
from deltamem_agents.session import SessionKey
from tests.memory.test_verbs import assert_replayed, memory, open_log, runtime, textlog  # noqa: F401 - fixtures

LATER = datetime.now(UTC) + timedelta(days=400)


class Clock:
    """The expiry clock (`deltamem_agents.memory.expiry.now`), moved by hand: TTL tests that do not
    depend on how fast a loaded machine runs."""

    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr("deltamem_agents.memory.expiry.now", moved)
    return moved


def messages_of(runtime, user: str, session: str) -> list[str]:
    return [m.content for m in runtime.store.require(SessionKey(user_id=user, session_id=session)).messages]


def test_a_ttl_hides_the_entry_at_once_and_prune_removes_it_from_log_and_state(memory, runtime, textlog, clock):
    keep = memory.add("My ferret is Quillon.", session_id="s", user_id="ada")[0]
    brief = memory.add("The door code is 4417.", session_id="s", user_id="ada", ttl=20)[0]
    item = memory.get(brief, user_id="ada")
    assert item.expires_at.timestamp() == pytest.approx(clock.at + 20, abs=1e-3)  # float seconds: the µs may round
    assert "expires_at" not in item.metadata  # the log's own key, not the caller's metadata
    clock.advance(30)
    # expired: no reader sees it, although prune has not run yet
    assert [i.id for i in memory.get_all(user_id="ada")] == [keep]
    assert all(h.metadata["memory_id"] != brief for h in memory.search("door code", user_id="ada", k=4))
    with pytest.raises(MemoryNotFoundError, match="expired"):
        memory.get(brief, user_id="ada")
    assert "The door code is 4417." in messages_of(runtime, "ada", "s")  # still in the state until pruned

    dry = memory.prune(user_id="ada", dry_run=True)
    assert [(e.memory_id, e.reason) for e in dry.entries] == [(brief, "ttl")] and dry.log_entries_removed == 0
    assert "The door code is 4417." in messages_of(runtime, "ada", "s")

    report = memory.prune(user_id="ada")
    assert [(e.memory_id, e.reason) for e in report.entries] == [(brief, "ttl")]
    assert report.sessions_rebuilt == ["ada/s"] and report.log_entries_removed == 1
    assert messages_of(runtime, "ada", "s") == ["My ferret is Quillon."]
    assert textlog.count(user_id="ada") == 1
    assert_replayed(runtime, runtime.store.require(SessionKey(user_id="ada", session_id="s")), "after-prune")
    assert [e.event for e in memory.history(brief, user_id="ada")] == ["ADD", "EXPIRE"]
    assert memory.prune(user_id="ada").entries == []  # nothing left to do


def test_search_still_returns_k_live_hits_past_expired_ones(memory, clock):
    for i in range(4):
        memory.add(f"Expired note {i} about the garden shed.", session_id="s", user_id="ada", ttl=10)
    memory.add("A live note about the garden shed.", session_id="s", user_id="ada")
    memory.add("Another live note, the shed roof.", session_id="s", user_id="ada")
    clock.advance(20)
    hits = memory.search("garden shed", user_id="ada", k=2)
    assert sorted(h.text for h in hits) == ["A live note about the garden shed.", "Another live note, the shed roof."]


def test_set_ttl_extends_or_clears_an_expiry(memory, clock):
    mid = memory.add("Parking spot 12.", session_id="s", user_id="ada", ttl=20)[0]
    assert memory.set_ttl(mid, None, user_id="ada").expires_at is None
    clock.advance(30)
    assert memory.get(mid, user_id="ada").text == "Parking spot 12."
    longer = memory.set_ttl(mid, timedelta(hours=1), user_id="ada")
    assert longer.expires_at.timestamp() == pytest.approx(clock.at + 3600, abs=1e-3)
    assert memory.prune(user_id="ada", now=datetime.fromtimestamp(clock.at + 7200, UTC)).entries[0].memory_id == mid


def test_an_update_keeps_the_entry_ttl(memory):
    mid = memory.add("Gate code 1111.", session_id="s", user_id="ada", ttl=3600)[0]
    expires = memory.get(mid, user_id="ada").expires_at
    assert memory.update(mid, "Gate code 2222.", user_id="ada").expires_at == expires


def test_a_users_policy_expires_by_age_and_by_count(memory, runtime):
    ids = [memory.add(f"Fact number {i}.", session_id="s", user_id="ada")[0] for i in range(4)]
    memory.add("Bob keeps everything.", session_id="s", user_id="bob")
    assert memory.set_retention("ada", {"max_entries": 2}) == RetentionPolicy(max_entries=2)
    report = memory.prune()  # every user: bob has no policy and the default keeps all
    assert sorted(report.users_checked) == ["ada", "bob"]
    assert [(e.memory_id, e.reason) for e in report.entries] == [(ids[0], "max_entries"), (ids[1], "max_entries")]
    assert messages_of(runtime, "ada", "s") == ["Fact number 2.", "Fact number 3."]
    assert messages_of(runtime, "bob", "s") == ["Bob keeps everything."]

    memory.set_retention("ada", RetentionPolicy(max_age="30d"))
    assert memory.prune(user_id="ada").entries == []  # nothing is 30 days old yet
    aged = memory.prune(user_id="ada", now=LATER, dry_run=True)
    assert {(e.memory_id, e.reason) for e in aged.entries} == {(ids[2], "max_age"), (ids[3], "max_age")}
    memory.set_retention("ada", None)
    assert memory.get_retention("ada") == RetentionPolicy()  # back to the default


def test_the_default_policy_applies_to_users_without_their_own(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]),
                          config=HybridConfig(retention=RetentionPolicy(max_entries=1)))
    memory.add("Old.", session_id="s", user_id="ada")
    memory.add("New.", session_id="s", user_id="ada")
    memory.set_retention("bob", RetentionPolicy(max_entries=5))
    memory.add("Bob one.", session_id="s", user_id="bob")
    memory.add("Bob two.", session_id="s", user_id="bob")
    memory.prune()
    assert messages_of(runtime, "ada", "s") == ["New."]
    assert messages_of(runtime, "bob", "s") == ["Bob one.", "Bob two."]


def test_policies_survive_a_reopen_of_the_log(runtime, tmp_path):
    log = open_log(tmp_path / "log2")
    HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()])).set_retention("ada", {"max_age": "12h"})
    log.close()
    again = HybridMemory(runtime, open_log(tmp_path / "log2"), MemoryRouter(policies=[NeverRetrieve()]))
    assert again.get_retention("ada").max_age == timedelta(hours=12)


def test_log_entries_of_a_deleted_session_are_pruned_without_a_rebuild(memory, runtime, textlog, clock):
    memory.add("Orphaned soon.", session_id="gone", user_id="ada", ttl=10)
    runtime.delete("gone", user_id="ada")
    clock.advance(20)
    report = memory.prune()
    assert report.sessions_rebuilt == [] and len(report.entries) == 1 and textlog.count(user_id="ada") == 0


def test_bad_retention_input_gets_a_clear_error_and_changes_nothing(memory, runtime):
    memory.add("Keep me.", session_id="s", user_id="ada")
    for bad in (0, -5, float("nan"), float("inf"), "soon", True):
        with pytest.raises(TextLogError, match="ttl must be a number of seconds > 0"):
            memory.add("Never stored.", session_id="s", user_id="ada", ttl=bad)
    with pytest.raises(TextLogError, match="expires_at"):
        memory.add("Never stored.", session_id="s", user_id="ada", metadata={"expires_at": 1.0})
    with pytest.raises(ValueError, match="max_age must be a positive duration"):
        RetentionPolicy(max_age="-1d")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RetentionPolicy(max_entries=0)
    with pytest.raises(MemoryNotFoundError):
        memory.set_ttl("0" * 32, 60, user_id="ada")
    assert messages_of(runtime, "ada", "s") == ["Keep me."]


def test_durations_parse():
    assert parse_duration("30d") == timedelta(days=30) and parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2) and parse_duration(60) == 60


def test_select_expired_orders_by_time_then_turn(memory, textlog, clock):
    ids = [memory.add(f"Entry {i}.", session_id="s", user_id="ada")[0] for i in range(3)]
    groups = group_entries(textlog.list(user_id="ada"))
    chosen = select_expired(groups, RetentionPolicy(max_entries=1), clock())
    assert [m for m, _, _ in chosen] == ids[:2]


def test_async_prune(memory, clock):
    memory.add("Short-lived.", session_id="s", user_id="ada", ttl=10)
    clock.advance(20)
    report = asyncio.run(memory.aprune(user_id="ada"))
    assert len(report.entries) == 1
    assert asyncio.run(memory.aset_retention("ada", {"max_entries": 3})).max_entries == 3
