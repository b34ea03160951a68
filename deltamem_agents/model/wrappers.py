"""`DeltaLinear`: a projection that adds the correction its layer's memory computed.

Like PEFT's LoRA layers it keeps the original module as ``base_layer`` and adds a low-rank
term to its output; unlike LoRA the term comes from the memory read, which the attention
pre-hook computes once per forward and hands over through ``pending``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

try:  # nn.Module.__call__ consults these too; without them the direct path is never taken
    from torch.nn.modules.module import (
        _global_backward_hooks,
        _global_backward_pre_hooks,
        _global_forward_hooks,
        _global_forward_pre_hooks,
    )

    _CAN_CALL_DIRECTLY = True
except ImportError:  # pragma: no cover - a torch that moved them
    _global_backward_hooks = _global_backward_pre_hooks = _global_forward_hooks = _global_forward_pre_hooks = {}
    _CAN_CALL_DIRECTLY = False


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
        base = self._modules["base_layer"]  # not self.base_layer: Module.__getattr__ is a Python call
        if correction is None:
            return base(x)
        self.__dict__["pending"] = None  # consumed: one correction per forward (skips Module.__setattr__)
        # Call F.linear directly where calling the layer would do exactly that: a plain nn.Linear
        # with no hooks of its own or global and no replaced forward (accelerate's offloading
        # replaces it). This runs four times per layer per generated token, so the checks are
        # written out here rather than in a helper function.
        direct = (
            type(base) is nn.Linear
            and _CAN_CALL_DIRECTLY
            and not (
                base._forward_hooks or base._forward_pre_hooks or base._backward_hooks or base._backward_pre_hooks
                or _global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks
                or _global_backward_pre_hooks or "forward" in base.__dict__
            )
        )
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
