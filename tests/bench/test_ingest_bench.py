"""`deltamem bench ingest` on a tiny backbone: the three variants side by side, the ratio computed
from them, and the bare baseline running exactly the session's forwards. Structure only, never timings."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.bench.ingest import _bare_ingest, run_ingest_bench


def test_every_variant_and_its_ratio_are_reported(tiny_backbone, tmp_path):
    rows = run_ingest_bench(tmp_path, backbone=tiny_backbone, tokens=300, chunk=16, context_window=64, repeats=1, device="cpu")
    assert [r["variant"] for r in rows] == ["bare", "blocks", "sliding"]
    bare = rows[0]
    assert bare["tokens"] >= 300 and all(r["tokens"] == bare["tokens"] for r in rows)
    for row in rows:
        assert row["vs_bare"] == pytest.approx(row["tok_s"] / bare["tok_s"], rel=0.01)
        assert row["tok_s"] == pytest.approx(row["tokens"] / row["seconds"], rel=0.02)
    assert 32 <= rows[1]["context_tokens_after"] <= 64 and 32 <= rows[2]["context_tokens_after"] <= 64
    report = json.loads((tmp_path / "ingest.json").read_text())
    assert report["rows"] == rows
    summary = report["meta"]["summary"]
    assert summary["met"] is (rows[1]["vs_bare"] >= 0.8) and "0.8x" in summary["goal"]
    assert (tmp_path / "ingest.md").read_text().startswith("# ingest")


def test_unknown_variants_are_refused(tmp_path):
    with pytest.raises(ValueError, match="variants"):
        run_ingest_bench(tmp_path, variants=("blocks",))


def test_the_bare_baseline_runs_the_sessions_forwards(tiny_backbone):
    """Same token ids, same chunks, cache emptied where the session drops its window."""
    import torch

    from deltamem_agents.model.backbone import load_backbone
    from deltamem_agents.session.options import SessionConfig

    model, _ = load_backbone(tiny_backbone, device="cpu", progress=False)
    seen: list[tuple[int, int]] = []
    def record(module, args, kwargs):
        cache = kwargs.get("past_key_values") or kwargs.get("cache")
        seen.append((kwargs["input_ids"].shape[1], cache.get_seq_length()))

    model.register_forward_pre_hook(record, with_kwargs=True)
    config = SessionConfig(context_window=64, prefill_chunk=16)
    with torch.inference_mode():
        _bare_ingest(model, list(range(5, 205)), config)
    assert sum(n for n, _ in seen) == 200 and max(n for n, _ in seen) <= 16
    assert all(held + n <= 64 for n, held in seen)
    assert [held for _, held in seen].count(0) >= 3  # emptied at least at every 64 tokens
    assert seen[-1][1] + seen[-1][0] >= 32  # the last block holds at least the kept share


def test_the_cli_command_writes_the_report(tiny_backbone, tmp_path):
    from typer.testing import CliRunner

    from deltamem_agents.cli import app as cli

    result = CliRunner().invoke(cli, [
        "bench", "ingest", "--backbone", str(tiny_backbone), "--tokens", "200", "--chunk", "16",
        "--context-window", "64", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "ingest.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["bare", "blocks", "sliding"]
