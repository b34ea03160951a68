"""`choose_plan`: one decision per forward, and every reason for each step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deltamem_agents import DeltaMemConfig
from deltamem_agents.core.layer import DeltaMemoryLayer
from deltamem_agents.core.plan import DecodePlan, StepKind, choose_plan
from deltamem_agents.ops import fused

HIDDEN = 32
OUT = {"q": 48, "k": 16, "v": 16, "o": 32}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fused_on(monkeypatch):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "require")  # a missing build fails these tests


def _plan(config: DeltaMemConfig | None = None, **facts) -> DecodePlan:
    facts = {"tokens": 1, "device": CPU, "dtype": torch.float32, **facts}
    return choose_plan(config or DeltaMemConfig(), **facts)


def test_a_plain_decode_forward_is_fused():
    plan = _plan()
    assert plan.kind is StepKind.FUSED and plan.fused and plan.tokens == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.kind = StepKind.SCAN  # type: ignore[misc]


@pytest.mark.parametrize(
    "config, facts, reason",
    [
        pytest.param({}, {"autograd": True}, "autograd", id="autograd"),
        pytest.param({"trainable_delta_scale": True}, {}, "trainable delta scale", id="trainable-scale"),
        pytest.param({"delta_o_rmsnorm": True}, {}, "o-norm", id="o-norm"),
        pytest.param({"write_strategy": "msw", "num_state_heads": 64, "rank": 16}, {}, "read width 1024", id="wide"),
        pytest.param({}, {"dtype": torch.float64}, "float64", id="float64"),
        pytest.param({}, {"dtype": torch.bfloat16}, "bfloat16", id="bf16-weights"),
        pytest.param({}, {"hidden_dtype": torch.float64}, "float64", id="float64-hidden"),
        pytest.param({}, {"device": torch.device("cuda")}, "weights on cuda", id="cuda"),
        pytest.param({}, {"device": torch.device("meta")}, "weights on meta", id="meta"),
    ],
)
def test_each_reason_for_the_eager_step(config, facts, reason):
    plan = _plan(DeltaMemConfig(**config), **facts)
    assert plan.kind is StepKind.RECURRENT and not plan.fused
    assert reason in plan.reason


@pytest.mark.parametrize("hidden_dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_backbone_decodes_with_the_fused_step(hidden_dtype):
    # float32 δ-mem weights next to a bf16/fp16 backbone: the C++ step widens the hidden state
    assert _plan(hidden_dtype=hidden_dtype).kind is StepKind.FUSED


def test_switched_off_is_eager_and_says_so(monkeypatch):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "off")
    plan = _plan()
    assert plan.kind is StepKind.RECURRENT and plan.reason == "DELTAMEM_FUSED_DECODE=off"


def test_a_forward_that_cannot_use_the_fused_step_never_builds_it(monkeypatch):
    def no_build():
        raise AssertionError("the fused step was looked up")

    monkeypatch.setattr(fused, "load_fused_decode", no_build)
    assert _plan(dtype=torch.float64).kind is StepKind.RECURRENT


@pytest.mark.parametrize(
    "tokens, impl, expected",
    [(2, "auto", "naive"), (8, "auto", "naive"), (9, "auto", "chunk"), (3, "chunk", "chunk"), (40, "naive", "naive")],
)
def test_prefill_scans_with_the_impl_resolved_by_length(tokens, impl, expected):
    plan = _plan(DeltaMemConfig(scan_impl=impl), tokens=tokens)
    assert plan.kind is StepKind.SCAN and plan.scan_impl == expected and plan.tokens == tokens


def test_writes_off_segments_and_statistics_come_before_the_token_count():
    assert _plan(write=False, segments=True).kind is StepKind.READ_ONLY
    ssw = DeltaMemConfig(write_strategy="ssw")
    segments = _plan(ssw, tokens=1, segments=True)
    assert segments.kind is StepKind.SEGMENTS and segments.scan_impl == "auto"  # the count is not known yet
    assert _plan(ssw, tokens=1).kind is StepKind.FUSED  # SSW without ids: token writes
    assert _plan(tokens=5, segments=True).kind is StepKind.SCAN  # ids mean nothing outside SSW
    recorded = _plan(record_inputs=True)
    assert recorded.kind is StepKind.SCAN and recorded.scan_impl == "step" and "statistics" in recorded.reason


def _layer(**overrides) -> DeltaMemoryLayer:
    torch.manual_seed(0)
    return DeltaMemoryLayer(DeltaMemConfig(**overrides), HIDDEN, OUT)


def test_the_layer_gathers_the_facts():
    layer = _layer()
    hidden, state = torch.randn(2, 1, HIDDEN), layer.new_state(2)
    with torch.no_grad():
        assert layer.plan(hidden, state).kind is StepKind.FUSED
        assert layer.plan(hidden, state, write=False).kind is StepKind.READ_ONLY
        assert layer.plan(hidden.bfloat16(), state).kind is StepKind.FUSED  # widened by the C++ step
        assert layer.plan(hidden.double(), state).kind is StepKind.RECURRENT
    assert "autograd" in layer.plan(hidden, state).reason  # the weights require grad
    layer.requires_grad_(False)
    assert layer.plan(hidden, state).kind is StepKind.FUSED  # grad mode on, nothing to record
    assert "autograd" in layer.plan(hidden, state.requires_grad_()).reason  # a trained state
    assert "autograd" in layer.plan(hidden.requires_grad_(), None).reason
    layer._record_inputs = True
    with torch.no_grad():
        assert layer.plan(torch.randn(2, 1, HIDDEN)).kind is StepKind.SCAN


def test_a_given_plan_is_followed_not_redecided(monkeypatch):
    """`step` asks `choose_plan` only where it is given no plan, and runs what it is told."""
    layer = _layer()
    hidden, state = torch.randn(2, 1, HIDDEN), torch.randn(2, 1, 8, 8) * 0.1
    calls = []
    import deltamem_agents.core.layer as layer_module

    original = layer_module.choose_plan
    monkeypatch.setattr(layer_module, "choose_plan", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        fused_step = layer.step(hidden, state)
        assert calls == [1] and fused_step.inputs is None
        scan = layer.step(hidden, state, plan=DecodePlan(StepKind.SCAN, "test", 1, "naive"))
        eager = layer.step(hidden, state, plan=DecodePlan(StepKind.RECURRENT, "test", 1))
    assert calls == [1]
    assert scan.inputs is not None and eager.inputs is None
    for other in (scan, eager):
        torch.testing.assert_close(other.reads, fused_step.reads, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other.new_state, fused_step.new_state, atol=1e-5, rtol=1e-5)


def test_a_segments_plan_without_segment_ids_is_refused():
    layer = _layer(write_strategy="ssw")
    with pytest.raises(ValueError, match="segment_ids"):
        layer.read_write(torch.randn(1, 3, HIDDEN), layer.new_state(1), plan=DecodePlan(StepKind.SEGMENTS, "x", 3))
