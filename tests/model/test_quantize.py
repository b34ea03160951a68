"""Weight-only int8 backbones: close to the dense model, δ-mem attaches and trains on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.model.adapters import BackboneSignature
from deltamem_agents.model.quantize import (
    PACKED_MAX_ROWS,
    Int8Linear,
    quantize_backbone,
    weight_format,
)
from deltamem_agents.model.targets import find_attention_modules
from tests.tiny_models import tiny_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("width", [40, 48])  # bf16's packed kernel takes multiples of 16 only
def test_an_int8_linear_is_the_dense_layer_within_quantization_error(dtype, bias, width):
    torch.manual_seed(0)
    dense = nn.Linear(width, 24, bias=bias).to(dtype)
    quantized = Int8Linear.from_linear(dense)
    assert quantized.weight_int8.dtype == torch.int8 and quantized.scales.dtype == dtype
    x = torch.randn(3, 5, width, dtype=dtype)
    assert quantized._can_pack(x) == (dtype == torch.float32 or width % 16 == 0)
    with torch.no_grad():
        expected, got = dense(x).float(), quantized(x).float()
    assert got.shape == (3, 5, 24)
    # absmax int8 rounds each weight by at most half a step: |err| <= sum |x| * scale / 2
    bound = (x.float().abs().sum(-1, keepdim=True) * quantized.scales.float() / 2) + (0.05 if dtype == torch.bfloat16 else 1e-4)
    assert torch.all((got - expected).abs() <= bound)
    assert torch.allclose(quantized.weight.float(), dense.weight.float(), atol=float(quantized.scales.max()))
    # a prefill-sized call (over PACKED_MAX_ROWS rows) takes the widened path: the same numbers
    long = torch.randn(2, PACKED_MAX_ROWS, width, dtype=dtype)
    with torch.no_grad():
        per_row = torch.cat([quantized(long[:, i : i + 1]) for i in range(long.shape[1])], dim=1)
        torch.testing.assert_close(quantized(long).float(), per_row.float(), atol=0.05 if dtype == torch.bfloat16 else 1e-4, rtol=0.02)


def test_the_whole_model_is_quantized_and_stays_close():
    model = tiny_model()
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        dense_logits = model(ids).logits
    replaced = quantize_backbone(model, "int8")
    assert replaced == 2 * 7 + 1  # q/k/v/o + gate/up/down per layer, and the output head
    assert weight_format(model) == "int8"
    assert not any(type(m) is nn.Linear for m in model.modules())
    with torch.no_grad():
        int8_logits = model(ids).logits
    assert torch.equal(dense_logits.argmax(-1), int8_logits.argmax(-1)) or (
        (dense_logits - int8_logits).abs().max() < 0.05 * dense_logits.abs().max()
    )


def test_delta_mem_attaches_to_an_int8_backbone_with_the_same_signature():
    dense = tiny_model()
    quantized = tiny_model()
    quantize_backbone(quantized, "int8")
    assert BackboneSignature.of(quantized) == BackboneSignature.of(dense)  # one adapter fits both
    handle = attach_delta_mem(quantized, DeltaMemConfig(rank=4))
    ids = torch.randint(3, 128, (1, 12))
    with torch.no_grad():
        quantized(ids)
        quantized(ids[:, :1])  # a one-token step: the fused decode path
    assert handle.get_state().layers  # written through the int8 projections
    handle.detach()
    assert all(isinstance(m.projections["q"], Int8Linear) for m in find_attention_modules(quantized))


def test_delta_mem_trains_through_an_int8_backbone():
    """Autograd reaches δ-mem's parameters through the frozen int8 layers (widened per call)."""
    model = tiny_model()
    quantize_backbone(model, "int8")
    handle = attach_delta_mem(model, DeltaMemConfig(rank=4))
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.memory.delta_out_proj.normal_(0, 0.1)
    ids = torch.randint(3, 128, (1, 10))
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in handle.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(b.grad is None for b in model.buffers())


def test_quantizing_twice_or_after_attach_is_refused_clearly():
    model = tiny_model()
    assert quantize_backbone(model, "dense") == 0 and weight_format(model) == "dense"
    with pytest.raises(ValueError, match="unknown weight format 'int4'"):
        quantize_backbone(model, "int4")
    attach_delta_mem(model, DeltaMemConfig(rank=4))
    with pytest.raises(ValueError, match="before attaching"):
        quantize_backbone(model, "int8")
