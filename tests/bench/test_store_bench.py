"""`deltamem bench store` with tiny parameters: both stores, a real redis-server, every row."""

from __future__ import annotations

import json

from deltamem_agents.bench.store import StoreBenchConfig, run_store_bench
from tests.redis_server import redis_server_or_skip


def test_every_store_writer_count_and_operation_is_measured(tmp_path, tiny_backbone):
    redis_server_or_skip()
    config = StoreBenchConfig(writers=(1, 3), samples=6, turns_per_session=2, history_messages=4, backbone=tiny_backbone)
    rows = run_store_bench(tmp_path, config)
    expected = [(s, w, op) for s in ("directory", "redis") for w in (1, 3) for op in ("save", "load", "lock")]
    assert [(r["store"], r["writers"], r["operation"]) for r in rows] == expected
    assert all(r["n"] == 6 and 0 <= r["p50_ms"] <= r["p95_ms"] and r["turns_per_s"] > 0 for r in rows)
    report = json.loads((tmp_path / "store.json").read_text())
    assert report["meta"]["state_bytes"] > 0 and report["meta"]["redis_version"]
    assert report["meta"]["summary"]["headline"].startswith("one turn (")
    assert "| redis | 3 | save |" in (tmp_path / "store.md").read_text()
