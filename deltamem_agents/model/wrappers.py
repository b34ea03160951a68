"""`DeltaLinear`: a projection that adds the correction its layer's memory computed.

Like PEFT's LoRA layers it keeps the original module as ``base_layer`` and adds a low-rank
term to its output; unlike LoRA the term comes from the memory read, which the attention
pre-hook computes once per forward and hands over through ``pending``.
"""

from __future__ import annotations

from torch import Tensor, nn


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
        out = self.base_layer(x)
        correction = self.pending
        self.__dict__["pending"] = None  # consumed: one correction per forward (skips Module.__setattr__)
        if correction is None:
            return out
        if correction.shape != out.shape:
            raise RuntimeError(
                f"δ-mem correction for {self.head}_proj has shape {tuple(correction.shape)} but the "
                f"projection output is {tuple(out.shape)}: the attention module called its "
                "projection on something other than its input hidden states"
            )
        return out + (correction if correction.dtype == out.dtype else correction.to(out.dtype))

    def extra_repr(self) -> str:
        return f"head={self.head!r}"
