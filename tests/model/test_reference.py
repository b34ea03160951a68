"""Our engine against values computed by the reference implementation (declare-lab/delta-Mem).

``tests/fixtures/reference`` holds a tiny random Qwen3, adapters saved by the reference code in
its release format, and the logits and states the reference computed (see its README).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from deltamem_agents import DeltaMemState, load_adapter
from deltamem_agents.model.adapters import (
    convert_reference_adapter,
    read_adapter,
    write_adapter_folder,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "reference"
VARIANTS = ["tsw_qo", "tsw_qkvo_uncoupled_lambda_outside", "tsw_scalar_gate_no_lambda", "msw_h4", "ssw_message"]
ATOL = 1e-4


def _model():
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-qwen3", dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def _close_on_valid(actual, expected, mask):
    valid = mask.bool()
    torch.testing.assert_close(actual[valid], expected[valid], atol=ATOL, rtol=0)


def _states(handle, expected, prefix):
    for index, tensor in handle.get_state().layers.items():
        reference = expected[f"{prefix}.layer{index}"]
        ours = tensor if reference.dim() == 4 else tensor[:, 0]  # the reference drops H when H = 1
        torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def bare_model():
    return _model()


def test_fixture_backbone_matches_the_reference_run(bare_model):
    e = load_file(FIXTURES / "tsw_qo" / "expected.safetensors")
    with torch.no_grad():
        logits = bare_model(e["input_ids_1"], attention_mask=e["attention_mask_1"]).logits
    _close_on_valid(logits, e["bare_logits_1"], e["attention_mask_1"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_and_states_match_the_reference(variant):
    e = load_file(FIXTURES / variant / "expected.safetensors")
    model = _model()
    handle = load_adapter(model, FIXTURES / variant)
    ssw = variant.startswith("ssw")

    def ids(name):
        return handle.segments(e[f"message_ids_{name}"] if ssw else None)

    with torch.no_grad():
        with ids("1"):
            out1 = model(e["input_ids_1"], attention_mask=e["attention_mask_1"], use_cache=True)
        _close_on_valid(out1.logits, e["logits_1"], e["attention_mask_1"])
        _states(handle, e, "state1")
        after_1 = handle.get_state()

        with ids("2"):  # a second call without the cache: the state carries over
            out2 = model(e["input_ids_2"], attention_mask=e["attention_mask_2"])
        _close_on_valid(out2.logits, e["logits_2"], e["attention_mask_2"])
        _states(handle, e, "state2")

        with handle.writing(False):
            out3 = model(e["input_ids_3"], attention_mask=e["attention_mask_3"])
        _close_on_valid(out3.logits, e["logits_3_frozen"], e["attention_mask_3"])
        _states(handle, e, "state2")

        if ssw:  # one-token decode steps: each is its own one-token write
            for tag in ("a", "b"):
                with ids("decode"):
                    out = model(e[f"input_ids_decode_{tag}"])
                torch.testing.assert_close(out.logits, e[f"logits_decode_{tag}"], atol=ATOL, rtol=0)
                _states(handle, e, f"state_decode_{tag}")

        handle.set_state(after_1)  # the same second call, continuing the KV cache of the first
        with ids("2"):
            out_kv = model(e["input_ids_2"], attention_mask=e["attention_mask_2_kv"], past_key_values=out1.past_key_values)
        torch.testing.assert_close(out_kv.logits, e["logits_2_kv"], atol=ATOL, rtol=0)
        _states(handle, e, "state2_kv")


def test_ssw_chunk_without_segmented_tokens_writes_nothing_unlike_the_reference():
    """Deliberate divergence: the reference token-writes a chunk whose ids are all -1 (its
    fallback for 'no ids'); we treat -1 as 'not written', as it means everywhere else."""
    e = load_file(FIXTURES / "ssw_message" / "expected.safetensors")
    model = _model()
    handle = load_adapter(model, FIXTURES / "ssw_message")
    with torch.no_grad():
        with handle.segments(e["message_ids_1"]):
            model(e["input_ids_1"], attention_mask=e["attention_mask_1"])
        before = handle.get_state()
        with handle.segments(e["message_ids_allneg"]):
            model(e["input_ids_allneg"])
    assert handle.get_state().equal(before)
    assert not torch.equal(e["state_allneg.layer0"], e["state_decode_b.layer0"]), "the reference does write"


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_adapter_converts_to_our_format(tmp_path, variant):
    meta, tensors = convert_reference_adapter(FIXTURES / variant, backbone_name="tiny-qwen3")
    write_adapter_folder(meta, tensors, tmp_path / "ours")
    ours_meta, ours_tensors = read_adapter(tmp_path / "ours")
    assert ours_meta.backbone.name == "tiny-qwen3"
    assert ours_tensors.keys() == tensors.keys()

    e = load_file(FIXTURES / variant / "expected.safetensors")
    logits = {}
    for source in (FIXTURES / variant, tmp_path / "ours"):
        model = _model()
        handle = load_adapter(model, source)
        with torch.no_grad(), handle.segments(e.get("message_ids_1")):
            logits[source] = model(e["input_ids_1"], attention_mask=e["attention_mask_1"]).logits
        handle.detach()
    assert torch.equal(*logits.values())


def test_reference_features_we_lack_are_refused(tmp_path):
    import json
    import shutil

    shutil.copytree(FIXTURES / "tsw_qo", tmp_path / "a", ignore=shutil.ignore_patterns("expected*"))
    config = json.loads((tmp_path / "a" / "delta_mem_config.json").read_text())
    config["num_memory_partitions"] = 4
    (tmp_path / "a" / "delta_mem_config.json").write_text(json.dumps(config))
    from deltamem_agents import AdapterError

    with pytest.raises(AdapterError, match="num_memory_partitions=4"):
        load_adapter(_model(), tmp_path / "a")


def test_state_of_the_reference_shape_round_trips(tmp_path):
    model = _model()
    handle = load_adapter(model, FIXTURES / "msw_h4")
    e = load_file(FIXTURES / "msw_h4" / "expected.safetensors")
    with torch.no_grad():
        model(e["input_ids_1"], attention_mask=e["attention_mask_1"])
    path = handle.get_state().save(tmp_path / "s.safetensors")
    assert DeltaMemState.load(path).num_heads == 4
