"""The fused CPU decode step equals the eager one it replaces, and is used where it applies."""

from __future__ import annotations

import logging

import pytest
import torch

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.core.layer import DeltaMemoryLayer
from deltamem_agents.core.plan import DecodePlan, StepKind
from deltamem_agents.ops import fused
from tests.tiny_models import tiny_model

HIDDEN = 43  # not a multiple of 8: the kernel's vectorised dot product has a tail
OUT = {"q": 48, "k": 16, "v": 16, "o": 43}

CONFIGS = {
    "tsw": {},
    "msw": {"write_strategy": "msw"},
    "scalar-gates": {"rankwise_gates": False},
    "uncoupled": {"couple_lambda": False},
    "lambda-outside": {"couple_lambda": False, "state_update_mode": "lambda_outside"},
    "no-lambda": {"state_update_mode": "no_lambda"},
    "no-qk-norm": {"normalize_qk": False},
    "q-o-heads-rank-5": {"delta_heads": ("q", "o"), "rank": 5},
}


@pytest.fixture(autouse=True)
def _fused_on(monkeypatch):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "require")  # a missing build fails these tests


def _layer(**overrides) -> DeltaMemoryLayer:
    torch.manual_seed(0)
    layer = DeltaMemoryLayer(DeltaMemConfig(**overrides), HIDDEN, OUT)
    with torch.no_grad():  # non-zero gates and delta heads, so every term shows in the outputs
        layer.memory_in_proj[3 * layer.read_dim :].normal_(0, 0.5)
        layer.gate_bias.normal_(0, 1.0)
        layer.delta_out_proj.normal_(0, 0.2)
    return layer


def _eager(layer, hidden, state, mask):
    reads, new_state, _ = layer._decode_step(hidden, state, mask)
    return reads, new_state, layer.corrections(reads)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_step_equals_the_eager_step(name):
    layer = _layer(**CONFIGS[name])
    batch = 3
    hidden = torch.randn(batch, 1, HIDDEN)
    state = torch.randn(batch, layer.config.num_state_heads, layer.config.rank, layer.config.rank)
    mask = torch.tensor([[True], [False], [True]])
    with torch.no_grad():
        step = layer.step(hidden, state, token_mask=mask)
        reads, new_state, corrections = _eager(layer, hidden, state, mask)
    assert step.inputs is None
    torch.testing.assert_close(step.reads, reads, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step.new_state, new_state, atol=1e-5, rtol=1e-5)
    assert list(step.corrections) == list(corrections)
    for head in corrections:
        torch.testing.assert_close(step.corrections[head], corrections[head], atol=1e-5, rtol=1e-5)
    # the padded row reads nothing and keeps its state exactly
    assert torch.all(step.reads[1] == 0) and torch.equal(step.new_state[1], state[1])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_eager_and_scan_paths_agree(name):
    """The gate math lives once in Python (`core/gates.py`), mirrored once in C++: one token
    through the fused step, the eager per-token step and the scan path gives one answer."""
    layer = _layer(**CONFIGS[name])
    hidden = torch.randn(3, 1, HIDDEN)
    state = torch.randn(3, layer.config.num_state_heads, layer.config.rank, layer.config.rank)
    mask = torch.tensor([[True], [False], [True]])
    plans = {
        "fused": DecodePlan(StepKind.FUSED, "test", 1),
        "eager": DecodePlan(StepKind.RECURRENT, "test", 1),
        "scan": DecodePlan(StepKind.SCAN, "test", 1, "naive"),
    }
    with torch.no_grad():
        steps = {path: layer.step(hidden, state, token_mask=mask, plan=plan) for path, plan in plans.items()}
    assert steps["fused"].inputs is None and steps["scan"].inputs is not None
    for path in ("eager", "scan"):
        torch.testing.assert_close(steps[path].reads, steps["fused"].reads, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(steps[path].new_state, steps["fused"].new_state, atol=1e-5, rtol=1e-5)
        for head, correction in steps["fused"].corrections.items():
            torch.testing.assert_close(steps[path].corrections[head], correction, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hidden_dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_hidden_state_is_widened_not_refused(hidden_dtype):
    """A bf16/fp16 backbone next to float32 δ-mem weights: the fused step takes the hidden
    state, widens it, and gives what the eager step gives on the widened input."""
    layer = _layer()
    hidden = torch.randn(2, 1, HIDDEN).to(hidden_dtype)
    state = torch.randn(2, layer.config.num_state_heads, layer.config.rank, layer.config.rank)
    with torch.no_grad():
        fused_step = layer._fused_step(hidden, state, None)
        reads, new_state, corrections = _eager(layer, hidden.float(), state, None)
    assert fused_step is not None, "the fused step refused a half-precision hidden state"
    torch.testing.assert_close(fused_step.new_state, new_state, atol=1e-5, rtol=1e-5)
    for head in corrections:
        assert fused_step.corrections[head].dtype == torch.float32
        torch.testing.assert_close(fused_step.corrections[head], corrections[head], atol=1e-5, rtol=1e-5)


def test_decoding_token_by_token_follows_the_scan():
    """Many fused steps in a row equal the chunked scan over the same tokens (state and reads)."""
    layer = _layer(write_strategy="msw")
    hidden = torch.randn(2, 37, HIDDEN)
    state = layer.new_state(2)
    with torch.no_grad():
        scan_reads, scan_state, _ = layer.read_write(hidden, state)
        reads = []
        for t in range(hidden.shape[1]):
            step = layer.step(hidden[:, t : t + 1], state)
            reads.append(step.reads)
            state = step.new_state
    torch.testing.assert_close(torch.cat(reads, dim=1), scan_reads, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, scan_state, atol=1e-5, rtol=1e-5)


def test_the_fused_step_is_the_one_taken(monkeypatch):
    layer = _layer()
    hidden, state = torch.randn(1, 1, HIDDEN), layer.new_state(1)

    def eager_called(*args, **kwargs):
        raise AssertionError("the eager decode step ran")

    monkeypatch.setattr(layer, "_decode_step", eager_called)
    with torch.inference_mode():
        layer.step(hidden, state)
    with torch.no_grad():
        layer.step(hidden, state)


@pytest.mark.parametrize(
    "case",
    ["float64", "autograd", "trainable-scale", "switched-off"],
)
def test_eager_where_the_fused_step_does_not_apply(case, monkeypatch):
    overrides = {"trainable_delta_scale": True} if case == "trainable-scale" else {}
    layer = _layer(**overrides)
    hidden, state = torch.randn(2, 1, HIDDEN), torch.randn(2, 1, layer.config.rank, layer.config.rank)
    if case == "float64":
        layer = layer.double()
        hidden, state = hidden.double(), state.double()
    if case == "switched-off":
        monkeypatch.setenv(fused.FUSED_DECODE_ENV, "off")
    calls = []
    original = layer._decode_step
    monkeypatch.setattr(layer, "_decode_step", lambda *a, **k: calls.append(1) or original(*a, **k))
    if case == "autograd":
        step = layer.step(hidden, state)
        step.corrections["q"].sum().backward()
        for weight in (layer.delta_out_proj, layer.memory_in_proj):  # reads and corrections both
            assert weight.grad is not None and weight.grad.abs().sum() > 0
    else:
        with torch.no_grad():
            layer.step(hidden, state)
    assert calls == [1]


def test_generation_is_the_same_with_and_without_the_fused_step(monkeypatch):
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    for layer in handle.layers.values():
        with torch.no_grad():
            layer.memory.delta_out_proj.normal_(0, 0.05)
            layer.memory.memory_in_proj[3 * layer.memory.read_dim :].normal_(0, 0.5)
    prompt = torch.tensor([[5, 9, 17, 33, 41, 7, 8], [0, 0, 12, 13, 14, 15, 16]])
    mask = (prompt != 0).long()

    def run():
        handle.reset_state()
        with torch.no_grad():
            out = model.generate(
                prompt, attention_mask=mask, max_new_tokens=12, do_sample=False, output_logits=True,
                return_dict_in_generate=True, pad_token_id=0,
            )
        return out.sequences, torch.stack(out.logits), handle.get_state()

    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "require")
    fused_tokens, fused_logits, fused_state = run()
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "off")
    eager_tokens, eager_logits, eager_state = run()
    assert torch.equal(fused_tokens, eager_tokens)
    torch.testing.assert_close(fused_logits, eager_logits, atol=1e-4, rtol=1e-4)
    for index in fused_state.layers:
        torch.testing.assert_close(fused_state.layers[index], eager_state.layers[index], atol=1e-5, rtol=1e-5)


def test_a_bad_mode_is_named(monkeypatch):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "sometimes")
    with pytest.raises(ValueError, match="DELTAMEM_FUSED_DECODE='sometimes'.*auto, off, require"):
        fused.fused_decode_mode()


@pytest.fixture
def failing_build(monkeypatch):
    """A build that fails as a machine without a compiler does (module state restored after)."""
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)


def test_auto_falls_back_to_eager_with_one_warning(failing_build, monkeypatch, caplog):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "auto")
    layer = _layer()
    hidden, state = torch.randn(1, 1, HIDDEN), layer.new_state(1)
    with caplog.at_level(logging.WARNING, logger=fused.__name__), torch.no_grad():
        first = layer.step(hidden, state)
        second = layer.step(hidden, state)
        reads, _, _ = _eager(layer, hidden, state, None)
    assert torch.equal(first.reads, reads) and torch.equal(second.reads, reads)
    warnings = [r for r in caplog.records if "did not build" in r.getMessage()]
    assert len(warnings) == 1 and "command not found" in warnings[0].getMessage()
    assert fused.fused_decode_status().startswith("eager (the fused step did not build")


def test_require_makes_a_failed_build_an_error(failing_build, monkeypatch):
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "require")
    with pytest.raises(RuntimeError, match="DELTAMEM_FUSED_DECODE=require.*command not found"):
        fused.load_fused_decode()


def test_kernel_refuses_inputs_that_do_not_match_its_configuration():
    layer = _layer()
    plan = layer.fused_kernel()
    weights = (layer.memory_in_proj, layer.gate_bias, layer.delta_out_proj)

    def call(hidden, state, mask):
        return plan(*weights, hidden, state, mask)

    state = layer.new_state(1)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="memory projection has shape"):
            call(torch.randn(1, 1, HIDDEN + 1), state, None)
        with pytest.raises(RuntimeError, match="state has shape"):
            call(torch.randn(1, 1, HIDDEN), layer.new_state(2), None)
        with pytest.raises(RuntimeError, match="mask has 2 entries for 1 rows"):
            call(torch.randn(1, 1, HIDDEN), state, torch.ones(2, dtype=torch.bool))
        assert call(torch.randn(1, 1, HIDDEN).double(), state, None) is None


def test_a_decode_forward_takes_the_fast_path_and_only_then(monkeypatch):
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    ids = torch.tensor([[5, 9, 17, 33]])
    steps = []
    original = DeltaMemoryLayer.step
    monkeypatch.setattr(DeltaMemoryLayer, "step", lambda self, *a, **k: steps.append(a[0].shape[1]) or original(self, *a, **k))
    with torch.no_grad():
        out = model(ids, use_cache=True)  # prefill: the general path, once per layer
        assert steps == [4, 4]
        model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert steps == [4, 4]  # decoding: the fused fast path, no general step
        with handle.recording_stats():  # statistics need the general path
            model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert steps == [4, 4, 1, 1]
        with handle.writing(False):
            model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert steps == [4, 4, 1, 1, 1, 1]
    model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)  # autograd on
    assert steps == [4, 4, 1, 1, 1, 1, 1, 1]


def test_zero_initialised_heads_leave_decoding_bit_identical():
    """What the prefill test checks, for the decode steps that take the fused path."""
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 9, 17, 33, 41]])

    def greedy_logits():
        with torch.no_grad():
            out = model.generate(
                prompt, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True,
                pad_token_id=0,
            )
        return torch.stack(out.logits)

    bare = greedy_logits()
    handle = attach_delta_mem(model, DeltaMemConfig())
    attached = greedy_logits()
    assert torch.equal(bare, attached)
    assert handle.get_state().norms()[0] > 0
