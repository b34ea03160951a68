"""Adapter files of our format, and state files."""

from __future__ import annotations

import json

import pytest
import torch

from deltamem_agents import (
    AdapterError,
    DeltaMemConfig,
    DeltaMemState,
    StateFileError,
    attach_delta_mem,
    load_adapter,
)
from deltamem_agents.model.adapters import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    adapter_fingerprint,
    save_adapter,
)
from tests.tiny_models import randomize_memory, tiny_model


def _trained_adapter(tmp_path, arch="qwen3", **config):
    model = tiny_model(arch)
    handle = attach_delta_mem(model, DeltaMemConfig(**config))
    randomize_memory(handle, seed=3)
    save_adapter(handle, tmp_path / "adapter", backbone_name=f"tiny-{arch}")
    return model, handle


@pytest.mark.parametrize(
    "config",
    [{}, {"write_strategy": "msw", "rank": 4}, {"couple_lambda": False, "trainable_delta_scale": True, "delta_o_rmsnorm": True}],
    ids=["tsw", "msw", "uncoupled-scale-rmsnorm"],
)
def test_adapter_round_trip_gives_identical_logits(tmp_path, config):
    model, handle = _trained_adapter(tmp_path, **config)
    ids = torch.randint(3, 128, (1, 20))
    with torch.no_grad():
        expected = model(ids).logits
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]

    fresh = tiny_model("qwen3")
    loaded = load_adapter(fresh, tmp_path / "adapter")
    assert loaded.config == handle.config.model_copy(update={"target_layers": (0, 1)})
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, expected)
    meta = json.loads((tmp_path / "adapter" / CONFIG_FILE).read_text())
    assert meta["backbone"]["name"] == "tiny-qwen3" and meta["deltamem_version"]


def test_adapter_on_the_wrong_backbone_names_both(tmp_path):
    _trained_adapter(tmp_path)
    other = tiny_model("llama", hidden_size=96, head_dim=24)
    with pytest.raises(AdapterError, match=r"made for tiny-qwen3 \(qwen3, hidden 64.*does not fit.*hidden 96"):
        load_adapter(other, tmp_path / "adapter")
    assert not any("delta_memory" in n for n, _ in other.named_modules()), "a failed load leaves no trace"


@pytest.mark.parametrize("damage", ["no-weights", "bad-json", "bad-weights", "missing-key", "empty-dir"])
def test_damaged_adapter_folders_fail_clearly(tmp_path, damage):
    _trained_adapter(tmp_path)
    folder = tmp_path / "adapter"
    if damage == "no-weights":
        (folder / WEIGHTS_FILE).unlink()
    elif damage == "bad-json":
        (folder / CONFIG_FILE).write_text("{not json")
    elif damage == "bad-weights":
        (folder / WEIGHTS_FILE).write_bytes(b"garbage")
    elif damage == "missing-key":
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / WEIGHTS_FILE)
        tensors.pop("layers.1.gate_bias")
        save_file(tensors, folder / WEIGHTS_FILE)
    else:
        for f in folder.iterdir():
            f.unlink()
    with pytest.raises(AdapterError):
        load_adapter(tiny_model("qwen3"), folder)


def test_fingerprint_changes_with_the_weights(tmp_path):
    _, handle = _trained_adapter(tmp_path)
    before = adapter_fingerprint(tmp_path / "adapter")
    with torch.no_grad():
        handle.layers[0].memory.gate_bias.add_(1.0)
    save_adapter(handle, tmp_path / "adapter")
    assert adapter_fingerprint(tmp_path / "adapter") != before


def test_state_file_round_trip_and_validation(tmp_path):
    state = DeltaMemState({0: torch.randn(2, 4, 8, 8), 3: torch.randn(2, 4, 8, 8)}, {"session": "s1"})
    path = state.save(tmp_path / "s.safetensors")
    loaded = DeltaMemState.load(path)
    assert loaded.equal(state) and loaded.metadata == {"session": "s1"}
    assert DeltaMemState.from_bytes(state.to_bytes()).equal(state)
    assert loaded.select(1).batch_size == 1
    assert DeltaMemState.concat([loaded.select(0), loaded.select(1)]).equal(state)

    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(StateFileError):
        DeltaMemState.load(tmp_path / "bad.safetensors")
    with pytest.raises(StateFileError, match="no state file"):
        DeltaMemState.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"layer.0": torch.zeros(1, 1, 8, 8)}, tmp_path / "foreign.safetensors")
    with pytest.raises(StateFileError, match="not a δ-mem state"):
        DeltaMemState.load(tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="share one shape"):
        DeltaMemState({0: torch.zeros(1, 1, 8, 8), 1: torch.zeros(2, 1, 8, 8)})


def test_state_save_is_atomic_and_never_leaves_temporary_files(tmp_path):
    state = DeltaMemState({0: torch.randn(1, 1, 8, 8)})
    state.save(tmp_path / "s.safetensors")
    state.save(tmp_path / "s.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]
