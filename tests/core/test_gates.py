"""`write_gates`: the one definition of the delta rule's gates."""

from __future__ import annotations

import pytest
import torch

from deltamem_agents import DeltaMemConfig
from deltamem_agents.core.gates import write_gates


@pytest.mark.parametrize("rankwise", [True, False])
@pytest.mark.parametrize("couple", [True, False])
@pytest.mark.parametrize("mode", ["standard", "lambda_outside", "no_lambda"])
def test_gates_follow_the_update_mode(mode, couple, rankwise):
    config = DeltaMemConfig(
        write_strategy="msw", num_state_heads=2, rank=4, state_update_mode=mode,
        couple_lambda=couple, rankwise_gates=rankwise,
    )
    g = config.num_state_heads * config.gates_per_head
    width = g if couple else 2 * g
    logits, bias = torch.randn(3, 5, width), torch.randn(width)
    gates = write_gates(logits, config, bias=bias)
    per_head = (3, 5, config.num_state_heads, config.gates_per_head)
    beta = torch.sigmoid(logits[..., :g] + bias[:g]).reshape(per_head)
    torch.testing.assert_close(gates.beta, beta)
    if mode == "no_lambda":
        assert gates.keep is None and gates.erase is gates.beta
        return
    lam = 1 - beta if couple else torch.sigmoid(logits[..., g:] + bias[g:]).reshape(per_head)
    torch.testing.assert_close(gates.keep, lam)
    if mode == "lambda_outside":
        torch.testing.assert_close(gates.erase, lam * beta)
    else:
        assert gates.erase is gates.beta  # the per-token step saves a multiply on this identity


def test_bias_may_ride_in_the_logits_and_one_may_be_a_tensor():
    config = DeltaMemConfig()
    logits, bias = torch.randn(2, 8), torch.randn(8)
    folded = write_gates(logits + bias, config, one=torch.ones(()))
    separate = write_gates(logits, config, bias=bias)
    assert folded.beta.shape == (2, 1, 8)
    assert torch.equal(folded.beta, separate.beta) and torch.equal(folded.keep, separate.keep)


def test_both_python_paths_use_it(monkeypatch):
    """The scan's inputs and the per-token step both get their gates from `write_gates`."""
    import deltamem_agents.core.layer as layer_module
    from deltamem_agents.core.layer import DeltaMemoryLayer

    calls = []
    monkeypatch.setattr(layer_module, "write_gates", lambda *a, **k: calls.append(a[0].dim()) or write_gates(*a, **k))
    layer = DeltaMemoryLayer(DeltaMemConfig(), 16, {"q": 16, "k": 16, "v": 16, "o": 16})
    with torch.no_grad():
        layer.memory_inputs(torch.randn(1, 4, 16))
        layer._decode_step(torch.randn(1, 1, 16), layer.new_state(1), None)
    assert calls == [3, 2]
