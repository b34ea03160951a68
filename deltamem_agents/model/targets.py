"""Which modules of which architecture δ-mem attaches to.

Supporting a new architecture is one row here, never a copy of its attention forward: the
attention module must take the hidden states as its first argument (or ``hidden_states=``)
and call separate q/k/v/o projection modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from deltamem_agents.model.quantize import Int8Linear


@dataclass(frozen=True)
class AttentionTarget:
    """Attribute names of the projections inside one attention module."""

    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"

    def projection_names(self) -> dict[str, str]:
        return {"q": self.q, "k": self.k, "v": self.v, "o": self.o}


_STANDARD = AttentionTarget()

#: model_type -> projection names. Architectures tested in tests/model are marked.
ATTENTION_TARGETS: dict[str, AttentionTarget] = {
    "llama": _STANDARD,  # tested (SmolLM2 is a Llama)
    "qwen2": _STANDARD,  # tested
    "qwen3": _STANDARD,  # tested
    "mistral": _STANDARD,  # tested
    "smollm3": _STANDARD,  # tested
    "qwen3_moe": _STANDARD,
    "olmo2": _STANDARD,
    "gemma": _STANDARD,
    "gemma2": _STANDARD,
    "granite": _STANDARD,
    "phimoe": _STANDARD,
}

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class MatchedAttention:
    """One attention module δ-mem will attach to."""

    name: str
    layer_index: int
    module: nn.Module
    projections: dict[str, nn.Linear]


def find_attention_modules(model: nn.Module) -> list[MatchedAttention]:
    """All attention modules of ``model`` with q/k/v/o ``nn.Linear`` (or int8, `Int8Linear`)
    projections, by layer."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    target = ATTENTION_TARGETS.get(model_type or "", _STANDARD)
    found: list[MatchedAttention] = []
    for name, module in model.named_modules():
        projections = {head: _unwrap(getattr(module, attr, None)) for head, attr in target.projection_names().items()}
        if not all(isinstance(p, (nn.Linear, Int8Linear)) for p in projections.values()):
            continue
        layer_index = getattr(module, "layer_idx", None)
        if layer_index is None:
            match = _LAYER_INDEX.search(name + ".")
            if match is None:
                raise ValueError(f"cannot tell the decoder layer index of attention module {name!r}")
            layer_index = int(match.group(1))
        found.append(MatchedAttention(name, int(layer_index), module, projections))  # type: ignore[arg-type]
    if not found:
        raise ValueError(
            f"no attention module with q/k/v/o projections ({', '.join(target.projection_names().values())}) "
            f"was found in this {type(model).__name__} (model_type={model_type!r}); add a row to "
            "deltamem_agents.model.targets.ATTENTION_TARGETS naming its projection attributes"
        )
    indices = [m.layer_index for m in found]
    if len(set(indices)) != len(indices):
        raise ValueError(f"several attention modules claim the same layer index: {sorted(indices)}")
    return sorted(found, key=lambda m: m.layer_index)


def _unwrap(module: object) -> object:
    """An attached projection reports its base layer, so signatures match before and after."""
    from deltamem_agents.model.wrappers import DeltaLinear

    return module.base_layer if isinstance(module, DeltaLinear) else module
