"""The per-layer memory module, without any Hugging Face model."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from deltamem_agents import DeltaMemConfig
from deltamem_agents.core.layer import DeltaMemoryLayer
from deltamem_agents.ops import naive_delta_scan

HIDDEN = 32
OUT = {"q": 48, "k": 16, "v": 16, "o": 32}


def _layer(**overrides) -> DeltaMemoryLayer:
    torch.manual_seed(0)
    layer = DeltaMemoryLayer(DeltaMemConfig(**overrides), HIDDEN, OUT)
    with torch.no_grad():
        layer.memory_in_proj[3 * layer.read_dim :].normal_(0, 0.3)
        layer.delta_out_proj.normal_(0, 0.1)
    return layer


def test_config_defaults_follow_the_reference():
    config = DeltaMemConfig()
    assert (config.rank, config.alpha, config.scaling, config.beta_bias_init) == (8, 16.0, 2.0, -1.5)
    assert config.delta_heads == ("q", "k", "v", "o") and config.rankwise_gates and config.couple_lambda
    assert DeltaMemConfig(write_strategy="msw").num_state_heads == 4


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"write_strategy": "tsw", "num_state_heads": 2}, "msw"),
        ({"write_strategy": "msw", "num_state_heads": 1}, "num_state_heads >= 2"),
        ({"delta_heads": ()}, "at least one"),
        ({"delta_heads": ("q", "x")}, "delta_heads"),
        ({"rank": 0}, "rank"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(bad, match):
    with pytest.raises(ValidationError, match=match):
        DeltaMemConfig(**bad)


def test_initial_values_match_the_reference():
    layer = DeltaMemoryLayer(DeltaMemConfig(couple_lambda=False), HIDDEN, OUT)
    d, g = layer.read_dim, layer.gate_dim
    assert torch.all(layer.memory_in_proj[3 * d :] == 0)
    assert torch.all(layer.gate_bias[:g] == -1.5) and torch.all(layer.gate_bias[g:] == 1.5)
    assert torch.all(layer.delta_out_proj == 0)
    bound = 1 / HIDDEN**0.5  # kaiming-uniform with a = sqrt(5)
    assert layer.memory_in_proj[: 3 * d].abs().max() <= bound


@pytest.mark.parametrize("mode", ["standard", "lambda_outside", "no_lambda"])
@pytest.mark.parametrize("couple", [True, False])
def test_update_modes_give_the_reference_coefficients(mode, couple):
    layer = _layer(state_update_mode=mode, couple_lambda=couple)
    hidden = torch.randn(2, 5, HIDDEN)
    x = layer.memory_inputs(hidden)
    beta = x.beta
    if mode == "no_lambda":
        lam = torch.ones_like(beta)
    elif couple:
        lam = 1 - beta
    else:
        g = layer.gate_dim
        logits = hidden @ layer.memory_in_proj[3 * layer.read_dim + g :].T + layer.gate_bias[g:]
        lam = torch.sigmoid(logits).reshape(2, 5, 1, 8).transpose(1, 2)
    keep = torch.ones_like(beta) if mode == "no_lambda" else lam
    erase = lam * beta if mode == "lambda_outside" else beta
    torch.testing.assert_close(x.keep, keep)
    torch.testing.assert_close(x.erase, erase)
    torch.testing.assert_close(x.write, beta)


def test_memory_queries_and_keys_are_unit_length_per_head():
    layer = _layer(write_strategy="msw", rank=4)
    x = layer.memory_inputs(torch.randn(1, 7, HIDDEN))
    assert x.q.shape == (1, 4, 7, 4)
    torch.testing.assert_close(x.q.norm(dim=-1), torch.ones(1, 4, 7))
    torch.testing.assert_close(x.k.norm(dim=-1), torch.ones(1, 4, 7))


def test_scalar_gates_are_shared_by_all_rows():
    layer = _layer(rankwise_gates=False)
    x = layer.memory_inputs(torch.randn(1, 3, HIDDEN))
    assert layer.gate_dim == 1
    assert torch.all(x.beta == x.beta[..., :1])


def test_ssw_writes_one_mean_per_segment_and_reads_the_state_from_before():
    layer = _layer(write_strategy="ssw")
    hidden = torch.randn(1, 9, HIDDEN)
    start = torch.randn(1, 1, 8, 8) * 0.1
    ids = torch.tensor([[-1, 0, 0, 0, -1, 5, 5, 2, 2]])  # -1: template tokens, never written
    reads, state, _ = layer.read_write(hidden, start, segment_ids=ids)

    frozen_reads, same, _ = layer.read_write(hidden, start, write=False)
    torch.testing.assert_close(reads, frozen_reads)
    assert torch.equal(same, start)

    means = torch.stack([hidden[0, 1:4].mean(0), hidden[0, 7:9].mean(0), hidden[0, 5:7].mean(0)])[None]
    x = layer.memory_inputs(means)  # segments in id order: 0, 2, 5
    _, expected = naive_delta_scan(x.q, x.k, x.v, x.keep, x.erase, x.write, initial_state=start)
    torch.testing.assert_close(state, expected)


def test_ssw_without_segment_ids_falls_back_to_token_writes():
    ssw, tsw = _layer(write_strategy="ssw"), _layer()
    hidden, start = torch.randn(2, 6, HIDDEN), torch.zeros(2, 1, 8, 8)
    torch.testing.assert_close(ssw.read_write(hidden, start)[1], tsw.read_write(hidden, start)[1])


def test_ssw_padding_and_unsegmented_tokens_never_write():
    layer = _layer(write_strategy="ssw")
    hidden, start = torch.randn(1, 4, HIDDEN), torch.randn(1, 1, 8, 8)
    ids = torch.tensor([[-1, -1, 3, 3]])
    mask = torch.tensor([[True, True, False, False]])
    _, state, _ = layer.read_write(hidden, start, segment_ids=ids, token_mask=mask)
    assert torch.equal(state, start)


def test_padding_reads_zero_and_does_not_write():
    layer = _layer()
    hidden, start = torch.randn(1, 5, HIDDEN), torch.randn(1, 1, 8, 8)
    mask = torch.tensor([[False, False, True, True, True]])
    reads, state, _ = layer.read_write(hidden, start, token_mask=mask)
    assert torch.all(reads[0, :2] == 0)
    _, alone, _ = layer.read_write(hidden[:, 2:], start)
    torch.testing.assert_close(state, alone)


def test_corrections_are_scaled_by_alpha_over_rank_and_the_trainable_scale():
    layer = _layer(trainable_delta_scale=True, delta_scale_granularity="head", delta_scale_init=0.5)
    reads = torch.randn(1, 3, 8)
    out = layer.corrections(reads)
    assert set(out) == {"q", "k", "v", "o"}
    blocks = layer.delta_blocks()
    scale = torch.sigmoid(layer.delta_scale_raw[3]) * 2.0
    torch.testing.assert_close(scale, torch.tensor(0.5), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["o"], reads @ blocks["o"].T * 2.0 * scale)


def test_base_slice_initialisation_uses_normalised_base_columns():
    base = {h: torch.randn(n, HIDDEN) for h, n in OUT.items()}
    layer = DeltaMemoryLayer(DeltaMemConfig(delta_init="base_slice", delta_heads=("q", "o")), HIDDEN, OUT, base_weights=base)
    q_block = layer.delta_blocks()["q"]
    expected = torch.nn.functional.normalize(base["q"][:, :8], dim=0) * 0.05
    torch.testing.assert_close(q_block, expected)
    with pytest.raises(ValueError, match="base projection weights"):
        DeltaMemoryLayer(DeltaMemConfig(delta_init="base_slice"), HIDDEN, OUT)


@pytest.mark.parametrize("mode", ["standard", "no_lambda"])
def test_decode_step_follows_weights_changed_in_place(mode):
    """Decoding caches the packed gate bias and the scaled delta heads; a weight changed in
    place (an optimiser step, load_state_dict) must be seen by the next token."""
    layer = _layer(state_update_mode=mode)
    hidden, state = torch.randn(2, 1, HIDDEN), torch.randn(2, 1, 8, 8) * 0.1

    def decode_vs_scan():
        with torch.inference_mode():
            reads, new_state, _ = layer.read_write(hidden, state)  # the one-token decode step
            expected = naive_delta_scan(*_scan_inputs(layer, hidden), initial_state=state)
            torch.testing.assert_close(reads, expected[0].transpose(1, 2).reshape(2, 1, 8))
            torch.testing.assert_close(new_state, expected[1])
            return layer.corrections(reads)["o"].clone()

    before = decode_vs_scan()
    with torch.no_grad():
        layer.gate_bias.add_(1.5)
        layer.delta_out_proj.mul_(3.0)
    after = decode_vs_scan()
    assert not torch.allclose(before, after)


def _scan_inputs(layer: DeltaMemoryLayer, hidden: torch.Tensor):
    inputs = layer.memory_inputs(hidden)
    return inputs.q, inputs.k, inputs.v, inputs.keep, inputs.erase, inputs.write


def test_a_layer_created_under_inference_mode_decodes():
    """Weights made inside ``torch.inference_mode()`` have no version counter to cache on."""
    with torch.inference_mode():
        layer = _layer()
        reads, _, _ = layer.read_write(torch.randn(1, 1, HIDDEN), layer.new_state(1))
        assert layer.corrections(reads)["q"].shape == (1, 1, OUT["q"])
