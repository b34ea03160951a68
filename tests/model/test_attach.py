"""Attaching δ-mem to tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from deltamem_agents import DeltaMemConfig, DeltaMemState, attach_delta_mem
from deltamem_agents.core import layer as layer_module
from deltamem_agents.core.layer import DeltaMemoryLayer
from deltamem_agents.core.plan import StepKind
from deltamem_agents.model.wrappers import DeltaLinear
from deltamem_agents.ops import fused
from tests.tiny_models import ARCHITECTURES, randomize_memory, tiny_model

STRATEGIES = [
    pytest.param(DeltaMemConfig(), id="tsw"),
    pytest.param(DeltaMemConfig(write_strategy="msw", rank=4), id="msw-h4"),
]


def _ids(batch: int = 2, steps: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 128, (batch, steps), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zero_initialised_heads_leave_logits_bit_identical(arch):
    model = tiny_model(arch)
    ids = _ids()
    with torch.no_grad():
        bare = model(ids).logits
        handle = attach_delta_mem(model, DeltaMemConfig())
        attached = model(ids).logits
    assert torch.equal(bare, attached)
    assert handle.get_state().norms()[0] > 0, "the memory must still be written"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_detach_restores_the_bare_model_exactly(arch):
    model = tiny_model(arch)
    ids = _ids()
    bare_keys = set(model.state_dict())
    with torch.no_grad():
        bare = model(ids).logits
        handle = attach_delta_mem(model, DeltaMemConfig(write_strategy="msw"))
        randomize_memory(handle)
        assert not torch.allclose(model(ids).logits, bare, atol=1e-3), "random memory must matter"
        handle.detach()
        restored = model(ids).logits
    assert torch.equal(bare, restored)
    assert set(model.state_dict()) == bare_keys
    assert not any(isinstance(m, DeltaLinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters()), "detach restores requires_grad"


def test_handle_reports_matches_and_freezes_the_backbone():
    model = tiny_model("qwen3")
    handle = attach_delta_mem(model, DeltaMemConfig(delta_heads=("q", "o")))
    assert handle.matched_modules == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".delta_memory." in n for n in trainable)
    assert handle.num_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < handle.parameter_share < 1
    with pytest.raises(ValueError, match="already attached"):
        attach_delta_mem(model, DeltaMemConfig())


def test_target_layers_and_unknown_layers():
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig(target_layers=(1,)))
    assert list(handle.layers) == [1]
    handle.detach()
    with pytest.raises(ValueError, match=r"target_layers \[5\] do not exist"):
        attach_delta_mem(model, DeltaMemConfig(target_layers=(5,)))


def test_unsupported_model_names_the_fix():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="ATTENTION_TARGETS"):
        attach_delta_mem(model, DeltaMemConfig())


def test_qwen3_4b_parameter_count_on_meta_device():
    """The paper's size: Qwen3-4B, q and o heads, rank 8 = 135,176 x 36 layers."""
    config = AutoConfig.for_model(
        "qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    handle = attach_delta_mem(model, DeltaMemConfig(delta_heads=("q", "o"), rank=8))
    assert handle.num_parameters == 4_866_336
    assert handle.parameter_share == pytest.approx(0.0012, abs=0.0001)


@pytest.mark.parametrize("config", STRATEGIES)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_prefill_then_decode_equals_one_long_prefill(arch, config):
    model = tiny_model(arch)
    handle = attach_delta_mem(model, config)
    randomize_memory(handle)
    ids = _ids(steps=20)
    with torch.no_grad():
        full = model(ids).logits
        full_state = handle.get_state()
        handle.reset_state()
        cache = DynamicCache(config=model.config)
        out = model(ids[:, :13], past_key_values=cache, use_cache=True)
        pieces = [out.logits]
        for t in range(13, 20):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=2e-5, rtol=1e-4)
    for index, tensor in handle.get_state().layers.items():
        torch.testing.assert_close(tensor, full_state.layers[index], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config", STRATEGIES)
def test_generate_uses_the_cache_and_updates_the_state_each_step(config):
    model = tiny_model("llama")
    handle = attach_delta_mem(model, config)
    randomize_memory(handle)
    prompt = _ids(batch=1, steps=10)
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        after_generate = handle.get_state()
        handle.reset_state()
        # The last generated token is sampled but never fed back, so it is never written.
        model(generated[:, :-1])
    for index, tensor in handle.get_state().layers.items():
        torch.testing.assert_close(after_generate.layers[index], tensor, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_left_padded_batch_equals_each_row_alone(arch):
    model = tiny_model(arch)
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    rows = [_ids(batch=1, steps=16, seed=2)[0], _ids(batch=1, steps=11, seed=3)[0]]
    width = max(len(r) for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        batched_state = handle.get_state()
        for i, row in enumerate(rows):
            handle.reset_state()
            alone = model(row[None]).logits
            torch.testing.assert_close(batched[i, width - len(row) :], alone[0], atol=1e-5, rtol=1e-4)
            for index, tensor in handle.get_state().layers.items():
                torch.testing.assert_close(batched_state.layers[index][i], tensor[0], atol=1e-5, rtol=1e-4)


def test_writing_disabled_reads_but_never_changes_the_state():
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    with torch.no_grad():
        model(_ids(batch=1))
        before = handle.get_state().clone()
        with handle.writing(False):
            probed = model(_ids(batch=1, seed=5)).logits
        assert handle.get_state().equal(before)
        # The probe did read the memory: an empty state gives other logits.
        handle.reset_state()
        with handle.writing(False):
            empty = model(_ids(batch=1, seed=5)).logits
    assert not torch.allclose(probed, empty, atol=1e-4)


def test_state_save_and_restore_gives_identical_next_token_logits(tmp_path):
    model = tiny_model("qwen3")
    handle = attach_delta_mem(model, DeltaMemConfig(write_strategy="msw"))
    randomize_memory(handle)
    history, probe = _ids(batch=1, steps=30), _ids(batch=1, steps=5, seed=9)
    with torch.no_grad():
        model(history)
        path = handle.get_state().save(tmp_path / "state.safetensors")
        with handle.writing(False):
            expected = model(probe).logits[:, -1]
        handle.reset_state()
        handle.set_state(DeltaMemState.load(path))
        with handle.writing(False):
            restored = model(probe).logits[:, -1]
    assert torch.equal(expected, restored)


def test_set_state_rejects_a_state_of_other_shape():
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig(rank=4))
    wrong = DeltaMemState({0: torch.zeros(1, 1, 8, 8), 1: torch.zeros(1, 1, 8, 8)})
    with pytest.raises(ValueError, match="rank 8"):
        handle.set_state(wrong)
    with pytest.raises(ValueError, match="covers layers"):
        handle.set_state(DeltaMemState({0: torch.zeros(1, 1, 4, 4)}))


def test_batch_size_change_needs_a_reset():
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    with torch.no_grad():
        model(_ids(batch=2))
        with pytest.raises(ValueError, match="reset_state"):
            model(_ids(batch=3))
        handle.reset_state()
        model(_ids(batch=3))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_bfloat16_backbone_runs_and_stays_close_to_float32(arch):
    ids = _ids(batch=1)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_model(arch, dtype=dtype)
        handle = attach_delta_mem(model, DeltaMemConfig())
        randomize_memory(handle)
        with torch.no_grad():
            results[dtype] = model(ids).logits.float()
        assert handle.get_state().layers[0].dtype == torch.float32, "states are kept in float32"
    assert (results[torch.float32] - results[torch.bfloat16]).abs().max() < 0.1


def test_only_memory_parameters_receive_gradients_and_state_carries_the_graph():
    """The training objective writes history, then supervises with it out of the context."""
    model = tiny_model("llama")
    _handle = attach_delta_mem(model, DeltaMemConfig(delta_init="base_slice"))  # kept for the whole test
    history, question = _ids(batch=2, steps=12), _ids(batch=2, steps=6, seed=4)
    model(history)  # written into the state; its KV cache is not kept
    loss = model(question, labels=question).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".delta_memory." in n for n in grads)
    # gradient reached the write path of the history pass through the state
    assert all(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("memory_in_proj"))


def test_gradient_checkpointing_is_refused_rather_than_silently_wrong():
    model = tiny_model("llama")
    attach_delta_mem(model, DeltaMemConfig())
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(RuntimeError, match="gradient_checkpointing_disable"):
        model(_ids(batch=1))
    with torch.no_grad():  # inference is unaffected
        model(_ids(batch=1))


def test_read_ratio_tells_an_empty_memory_from_a_full_one():
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    probe = _ids(batch=1, steps=6, seed=7)
    with torch.no_grad(), handle.recording_stats(), handle.writing(False):
        model(probe)
        assert handle.read_ratio() == 0.0  # nothing stored yet
        with handle.writing(True):
            model(_ids(batch=1, steps=40))
        model(probe)
        ratio = handle.read_ratio()
    assert 0.0 < ratio <= 1.0 + 1e-6
    assert all(layer.last_beta_mean is not None for layer in handle.layers.values())



def test_hooks_on_a_wrapped_projection_still_run():
    """The wrapper calls F.linear itself only where the projection has no hooks; with one (its
    own or a global one), the projection module is called and the hook sees the base output."""
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    base = handle.layers[0].wrappers["q"].base_layer
    ids = torch.tensor([[5, 9, 17]])
    seen: list[str] = []
    own = base.register_forward_hook(lambda module, args, output: seen.append("own"))
    with torch.no_grad():
        model(ids)
    own.remove()
    everywhere = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append("global") if module is base else None
    )
    try:
        with torch.no_grad():
            model(ids)
    finally:
        everywhere.remove()
    with torch.no_grad():
        model(ids)
    assert seen == ["own", "global"]


@pytest.fixture
def plans(monkeypatch):
    """Every plan `choose_plan` returns, in order; and every plan a layer's step was handed."""
    chosen, followed = [], []
    monkeypatch.setenv(fused.FUSED_DECODE_ENV, "require")
    original_choose, original_step = layer_module.choose_plan, DeltaMemoryLayer.step

    def choose(*args, **kwargs):
        chosen.append(original_choose(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(layer_module, "choose_plan", choose)

    def step(self, *args, **kwargs):
        followed.append(kwargs.get("plan"))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(DeltaMemoryLayer, "step", step)
    return chosen, followed


def test_the_plan_is_chosen_once_per_forward_and_every_layer_follows_it(plans):
    chosen, followed = plans
    model = tiny_model("llama")  # two attention layers
    handle = attach_delta_mem(model, DeltaMemConfig())
    ids = _ids(batch=1, steps=12)
    with torch.no_grad():
        out = model(ids, use_cache=True)
        assert [p.kind for p in chosen] == [StepKind.SCAN] and chosen[0].scan_impl == "chunk"
        assert followed == [chosen[0], chosen[0]]  # both layers ran the plan they were handed
        for t in range(3):  # decode forwards: one plan each, fused, no general step at all
            out = model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert [p.kind for p in chosen[1:]] == [StepKind.FUSED] * 3 and len(followed) == 2
        with handle.writing(False):
            model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert chosen[-1].kind is StepKind.READ_ONLY and followed[-2:] == [chosen[-1]] * 2
        with handle.recording_stats():
            model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        assert chosen[-1].kind is StepKind.SCAN and "statistics" in chosen[-1].reason
    model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)  # autograd on
    assert chosen[-1].kind is StepKind.RECURRENT and "autograd" in chosen[-1].reason
    assert len(chosen) == 7 and len(followed) == 8


def test_a_decode_forward_after_a_reset_is_fused_from_a_fresh_state(plans):
    chosen, followed = plans
    model = tiny_model("llama")
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    token = _ids(batch=2, steps=1)
    with torch.no_grad():
        model(token)
        fused_state = handle.get_state()
        handle.reset_state()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(fused.FUSED_DECODE_ENV, "off")
            model(token)
    assert [p.kind for p in chosen] == [StepKind.FUSED, StepKind.RECURRENT]
    assert followed[:2] == [chosen[0]] * 2  # no state yet: the layer step runs the fused plan
    for index, tensor in handle.get_state().layers.items():
        torch.testing.assert_close(tensor, fused_state.layers[index], atol=1e-5, rtol=1e-5)


def test_bfloat16_decoding_takes_the_fused_step_and_equals_the_eager_one(plans):
    """A bf16 backbone keeps float32 δ-mem weights; the fused step widens its hidden states."""
    chosen, _ = plans
    model = tiny_model("llama", dtype=torch.bfloat16)
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    token = _ids(batch=2, steps=1)
    with torch.no_grad():
        fused_logits = model(token).logits
        fused_state = handle.get_state()
        handle.reset_state()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(fused.FUSED_DECODE_ENV, "off")
            eager_logits = model(token).logits
    assert [p.kind for p in chosen] == [StepKind.FUSED, StepKind.RECURRENT]
    for index, tensor in handle.get_state().layers.items():
        torch.testing.assert_close(tensor, fused_state.layers[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_logits.float(), eager_logits.float(), atol=2e-2, rtol=2e-2)
