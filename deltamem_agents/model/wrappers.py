"""`DeltaLinear`: a projection that adds the correction its layer's memory computed.

Like PEFT's LoRA layers it keeps the original module as ``base_layer`` and adds a low-rank
term to its output; unlike LoRA the term comes from the memory read, which the attention
pre-hook computes once per forward and hands over through ``pending``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

try:  # nn.Module.__call__ consults these too; without them the direct path is never taken
    from torch.nn.modules import module as _module_globals

    _GLOBAL_HOOKS = tuple(
        getattr(_module_globals, name)
        for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )
except (ImportError, AttributeError):  # pragma: no cover - a torch that moved them
    _GLOBAL_HOOKS = None


def _callable_directly(layer: nn.Module) -> bool:
    """True when calling ``layer`` would run exactly ``F.linear(x, weight, bias)``: a plain
    ``nn.Linear`` with no hooks (its own or global) and no replaced ``forward`` (accelerate's
    offloading replaces it)."""
    return (
        type(layer) is nn.Linear
        and _GLOBAL_HOOKS is not None
        and not any(_GLOBAL_HOOKS)
        and not (layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks or layer._backward_pre_hooks)
        and "forward" not in layer.__dict__
    )


class DeltaLinear(nn.Module):
    """Wraps an ``nn.Linear``; with no pending correction it is exactly the base layer."""

    def __init__(self, base_layer: nn.Linear, head: str) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.head = head
        self.pending: Tensor | None = None

    def set_pending(self, correction: Tensor) -> None:
        """Hand over this forward's correction (a plain attribute write: this runs per layer
        per token, and ``nn.Module.__setattr__`` is several times slower)."""
        self.__dict__["pending"] = correction

    # Code around attention sometimes inspects the projection's weight (dtype checks, etc.).
    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        correction = self.pending
        if correction is None:
            return self.base_layer(x)
        self.__dict__["pending"] = None  # consumed: one correction per forward (skips Module.__setattr__)
        base = self.base_layer
        # per token and layer, the module call around F.linear is a measurable share of decoding
        direct = _callable_directly(base)
        out = F.linear(x, base.weight, base.bias) if direct else base(x)
        if correction.shape != out.shape:
            raise RuntimeError(
                f"δ-mem correction for {self.head}_proj has shape {tuple(correction.shape)} but the "
                f"projection output is {tuple(out.shape)}: the attention module called its "
                "projection on something other than its input hidden states"
            )
        if correction.dtype != out.dtype:
            correction = correction.to(out.dtype)
        # in place only on F.linear's own fresh output (its backward does not need it)
        return out.add_(correction) if direct else out + correction

    def extra_repr(self) -> str:
        return f"head={self.head!r}"
