"""`deltamem bench overhead` on a tiny backbone: both variants measured side by side, the ratio
row computed from them, the handle detached after every δ-mem run. Structure only, never timings."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.bench.overhead import run_overhead_bench
from deltamem_agents.model.backbone import load_backbone


@pytest.mark.parametrize("memory", [False, True])
def test_both_variants_and_their_ratio_are_reported(tiny_backbone, tmp_path, memory):
    rows = run_overhead_bench(
        tmp_path, backbone=tiny_backbone, prompt_tokens=24, decode_tokens=3, repeats=2, device="cpu", measure_memory=memory,
    )
    bare, attached, ratio = rows
    assert (bare["variant"], attached["variant"], ratio["variant"]) == ("bare", "delta-mem", "delta-mem / bare")
    assert bare["delta_params"] == 0 < attached["delta_params"]
    assert ratio["decode_tok_s"] == round(attached["decode_tok_s"] / bare["decode_tok_s"], 3)
    assert ratio["prefill_tok_s"] == round(attached["prefill_tok_s"] / bare["prefill_tok_s"], 3)
    assert (bare["peak_mem_mib"] is not None) is memory and (ratio["peak_mem_mib"] is not None) is memory
    report = json.loads((tmp_path / "overhead.json").read_text())
    assert report["rows"] == rows and "goals" in report["meta"]["params"]


def test_the_backbone_is_left_bare(tiny_backbone, tmp_path, monkeypatch):
    """Every attached run is detached again, so the next bare run measures the bare model."""
    from deltamem_agents.bench import overhead

    loaded = {}
    real_load = load_backbone

    def remember(*args, **kwargs):
        loaded["model"], tokenizer = real_load(*args, **kwargs)
        return loaded["model"], tokenizer

    monkeypatch.setattr("deltamem_agents.model.backbone.load_backbone", remember)
    overhead.run_overhead_bench(tmp_path, backbone=tiny_backbone, prompt_tokens=8, decode_tokens=1, repeats=1, measure_memory=False)
    assert not any(name.endswith("delta_memory") or "delta_memory." in name for name, _ in loaded["model"].named_modules())


def test_several_dtypes_and_the_llama_cpp_row_are_side_by_side(tiny_backbone, tmp_path, monkeypatch):
    """With llama.cpp measured (here its timings are given, the rest is real), every δ-mem row
    gets a ratio over llama.cpp's decode; each dtype has its own bare/δ-mem/ratio rows."""
    from deltamem_agents.bench import overhead

    monkeypatch.setattr(overhead, "_gguf_of", lambda backbone: tmp_path / "model.Q4_1.gguf")
    monkeypatch.setattr(overhead, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(
        overhead, "_llama_cpp_timings", lambda *a: {"prefill_tok_s": 1000.0, "decode_tok_s": 100.0, "version": "x"}
    )
    rows = run_overhead_bench(
        tmp_path, backbone=tiny_backbone, prompt_tokens=8, decode_tokens=2, repeats=1, device="cpu",
        measure_memory=False, dtypes=["float32", "bfloat16"],
    )
    variants = [(r["variant"], r["dtype"]) for r in rows]
    assert variants[:6] == [
        ("bare", "float32"), ("delta-mem", "float32"), ("delta-mem / bare", "float32"),
        ("bare", "bfloat16"), ("delta-mem", "bfloat16"), ("delta-mem / bare", "bfloat16"),
    ]
    assert variants[6] == ("llama.cpp (bare)", "model.Q4_1.gguf")
    for attached, ratio in zip([rows[1], rows[4]], rows[7:], strict=True):
        assert ratio["variant"] == "delta-mem / llama.cpp" and ratio["dtype"] == attached["dtype"]
        assert ratio["decode_tok_s"] == round(attached["decode_tok_s"] / 100.0, 3)
    report = json.loads((tmp_path / "overhead.json").read_text())
    assert report["meta"]["params"]["dtypes"] == ["float32", "bfloat16"] and report["meta"]["llama_cpp"]["version"] == "x"


def test_asking_for_llama_cpp_without_a_gguf_backbone_is_a_clear_error(tiny_backbone, tmp_path):
    with pytest.raises(RuntimeError, match="llama-cpp-python installed and a GGUF backbone"):
        run_overhead_bench(
            tmp_path, backbone=tiny_backbone, prompt_tokens=8, decode_tokens=1, repeats=1, device="cpu",
            measure_memory=False, llama_cpp=True,
        )
