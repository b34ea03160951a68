"""Tiny random Hugging Face causal LMs built from configs: fast, offline, deterministic."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral", "smollm3")

_COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_config(model_type: str = "llama", **overrides):
    options = dict(_COMMON, **overrides)
    if model_type == "smollm3":
        options.setdefault("no_rope_layers", [1, 0])
    config = AutoConfig.for_model(model_type, **options)
    config._attn_implementation = "eager"
    return config


def tiny_model(model_type: str = "llama", *, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), dtype=dtype)
    return model.eval()


def randomize_memory(handle, *, seed: int = 0, delta_std: float = 0.05, gate_std: float = 0.1) -> None:
    """Give an attached δ-mem non-trivial weights so that memory changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in handle.layers.values():
            memory = layer.memory
            d = memory.read_dim
            w = memory.memory_in_proj
            w[3 * d :].copy_(torch.randn(w[3 * d :].shape, generator=generator) * gate_std)
            memory.delta_out_proj.copy_(torch.randn(memory.delta_out_proj.shape, generator=generator) * delta_std)
            memory.gate_bias.add_(torch.randn(memory.gate_bias.shape, generator=generator) * 0.3)


def tiny_runtime(
    tokenizer,
    store,
    *,
    window: int = 512,
    seed: int = 2,
    config=None,
    model: PreTrainedModel | None = None,
    randomize: bool = True,
):
    """A `DeltaMemRuntime` on a tiny random Llama with a real tokenizer (``store``: a folder or a
    `SessionStore`); with ``randomize``, its memory has non-trivial weights, so it matters."""
    import warnings

    from deltamem_agents import DeltaMemConfig
    from deltamem_agents.session import (
        DeltaMemRuntime,
        SessionConfig,
        UntrainedMemoryWarning,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime(
            "tiny-llama",
            model=model or tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=4096),
            tokenizer=tokenizer, adapter=None, config=config or DeltaMemConfig(), store=store,
            session_config=SessionConfig(context_window=window),
        )
    if randomize:
        randomize_memory(runtime.handle, seed=seed)
    return runtime

