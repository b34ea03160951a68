"""The load test, bounded: 8 clients x 3 turns over 4 shared sessions on loopback, zero lost or
corrupted turns; its checker catches lost and corrupted turns; the CLI writes the reports."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deltamem_agents.cli import app as cli
from deltamem_agents.server.loadtest import (
    LoadTestConfig,
    TurnRecord,
    check_sessions,
    run_loadtest_sync,
)
from deltamem_agents.session import SessionKey


def test_a_bounded_load_test_loses_and_corrupts_nothing(live_server, runtime):
    config = LoadTestConfig(url=live_server.url, clients=8, turns=3, sessions=4, max_tokens=4, deadline_s=300)
    report = run_loadtest_sync(config)
    r = report.results
    assert (r.turns_attempted, r.turns_ok, r.errors, r.abandoned) == (24, 24, 0, 0), r.problems
    assert (r.lost, r.corrupted, r.committed_unacknowledged) == (0, 0, 0), r.problems
    assert r.p50_ms is not None and r.p95_ms >= r.p50_ms and r.turns_per_s > 0
    assert r.batches is not None and r.batches >= 1
    for s in range(4):  # two clients per session, three turns each
        assert runtime.store.head(SessionKey(session_id=config.session_id(s))).turn_count == 6


def test_the_checker_finds_lost_and_corrupted_turns():
    config = LoadTestConfig(clients=2, turns=2, sessions=1, run_id="r")
    records = [
        TurnRecord(client=c, turn=t, session_id=config.session_id(c), stream=False, user_text=config.user_text(c, t),
                   ok=True, reply=f"answer {c}{t}")
        for c in range(2) for t in range(2)
    ]

    def pair(record, answer, index):
        return [{"role": "user", "content": record.user_text, "index": index},
                {"role": "assistant", "content": answer, "index": index + 1}]

    good = pair(records[0], "answer 00", 0) + pair(records[2], "answer 10", 2) + pair(records[1], "answer 01", 4) + pair(records[3], "answer 11", 6)
    assert check_sessions(config, records, {"load-r-000": good})[:3] == (0, 0, 0)
    lost = good[:6]
    assert check_sessions(config, records, {"load-r-000": lost})[:2] == (1, 0)
    changed = good[:5] + [{**good[5], "content": "something else"}] + good[6:]
    assert check_sessions(config, records, {"load-r-000": changed})[:2] == (0, 1)
    twice = good + pair(records[3], "answer 11", 8)
    assert check_sessions(config, records, {"load-r-000": twice})[:2] == (0, 1)
    reordered = pair(records[1], "answer 01", 0) + pair(records[0], "answer 00", 2) + good[2:4] + good[6:]
    assert check_sessions(config, records, {"load-r-000": reordered})[1] >= 1
    stranger = good + [{"role": "user", "content": "hello from nowhere", "index": 8}, {"role": "assistant", "content": "x", "index": 9}]
    assert check_sessions(config, records, {"load-r-000": stranger})[1] == 1


def test_the_cli_writes_json_and_markdown(live_server, tmp_path):
    result = CliRunner().invoke(
        cli, ["serve-loadtest", "--url", live_server.url, "--clients", "2", "--turns", "2", "--sessions", "1",
              "--max-tokens", "2", "--baseline-turns", "2", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "serve.json").read_text())
    single, row = report["rows"]
    assert single["run"] == "single" and single["clients"] == 1 and single["ok"] == 2
    assert report["name"] == "serve" and row["ok"] == 4 and row["lost"] == 0 and row["corrupted"] == 0
    assert row["run"] == "load" and row["vs_single"] == round(row["tokens_per_s"] / single["tokens_per_s"], 2)
    assert row["prefill_tokens_per_turn"] > 0 and row["rebuild_tokens_per_turn"] is not None  # from /health
    assert "machine" in report["meta"] and "api_key" not in json.dumps(report)
    assert "| batching |" in (tmp_path / "serve.md").read_text()


def test_the_started_servers_dtype_is_refused_with_a_url(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve-loadtest", "--url", "http://127.0.0.1:9", "--dtype", "bfloat16+int8", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "--dtype sets the started server's weights" in result.output
    assert not (tmp_path / "serve.json").exists()
