"""`deltamem bench batch` on a tiny backbone: one row per session count, replies equal batched or not."""

from __future__ import annotations

import json

from deltamem_agents.bench.batch import BatchBenchConfig, run_batch_bench


def test_batched_and_sequential_turns_are_compared_per_session_count(tiny_backbone, tmp_path):
    config = BatchBenchConfig(backbone=tiny_backbone, sessions=(1, 3), decode_tokens=3, history_turns=2, window=64)
    rows = run_batch_bench(tmp_path, config)
    assert [r["sessions"] for r in rows] == [1, 3]
    assert [r["same_text"] for r in rows] == ["1/1", "3/3"]
    for row in rows:
        assert row["batched_tok_s"] > 0 and row["sequential_tok_s"] > 0 and row["merge_ms"] >= 0 and row["rebuild_ms"] > 0
    report = json.loads((tmp_path / "batch.json").read_text())
    assert report["meta"]["summary"]["checks"].keys() == {"speedup"}
    assert "3 session(s)" in report["meta"]["summary"]["headline"]
    assert (tmp_path / "batch.png").stat().st_size > 0 and "| 3 |" in (tmp_path / "batch.md").read_text()
