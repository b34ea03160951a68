"""Weight-only int8 for the frozen backbone: one byte per weight instead of two or four.

Decoding one token reads every weight of the backbone once, so on a CPU its speed is set by
how many bytes the linear layers hold. The backbone is frozen, so its ``nn.Linear`` weights can
be stored as int8 with one scale per output row (symmetric, absmax: the scheme gpt-fast and
torchao call weight-only int8) and multiplied by PyTorch's ``_weight_int8pack_mm`` kernel
without ever being widened in memory. Activations, δ-mem's own parameters and its state keep
their dtype; only what the backbone reads per token shrinks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the weight formats `quantize_backbone` accepts; ``"dense"`` leaves the model as loaded
WeightFormat = Literal["dense", "int8"]
WEIGHT_FORMATS: tuple[str, ...] = ("dense", "int8")

#: up to this many rows (tokens x batch) per call the packed int8 kernel runs; above it the
#: weight is widened for the call: the kernel's cost grows with every row (~12 µs per row on a
#: 576x1536 weight, 2 cores) while widening costs ~160 µs once, so prefill takes the dense path
PACKED_MAX_ROWS = 24


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` whose weight is int8 with one scale per output row.

    ``forward`` computes ``x @ (weight_int8 * scales).T + bias`` in the activation's dtype. Where
    autograd must reach ``x`` (training δ-mem on a quantized backbone), the call has more than
    `PACKED_MAX_ROWS` rows (a prefill), or the packed kernel does not take this device and
    dtype, the weight is widened for that call instead.
    """

    def __init__(self, weight_int8: Tensor, scales: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-D int8 weight, got {weight_int8.dtype} {tuple(weight_int8.shape)}")
        if scales.shape != (weight_int8.shape[0],):
            raise ValueError(f"Int8Linear needs one scale per output row, got {tuple(scales.shape)}")
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize ``linear`` (absmax per output row); scales and bias keep its dtype."""
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(quantized, scales.to(linear.weight.dtype), bias)

    @property
    def weight(self) -> Tensor:
        """The dequantized weight, a fresh tensor: for code that inspects a projection's weight
        (shape, dtype, δ-mem's ``base_slice`` initialisation); never used by ``forward``."""
        return self._widened(self.scales)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        scales = self.scales if self.scales.dtype == x.dtype else self.scales.to(x.dtype)
        if rows > PACKED_MAX_ROWS or (torch.is_grad_enabled() and x.requires_grad) or not self._can_pack(x):
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self._widened(scales), bias)
        flat = x.reshape(rows, self.in_features).contiguous()
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, scales)
        out = out.reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            out = out + (self.bias if self.bias.dtype == x.dtype else self.bias.to(x.dtype))
        return out

    def _widened(self, scales: Tensor) -> Tensor:
        """The weight in ``scales``' dtype: int8 x scale promotes in one op (no separate cast)."""
        return self.weight_int8 * scales[:, None]

    def _can_pack(self, x: Tensor) -> bool:
        """Whether the packed kernel takes ``x``: on CPU in float32 or float16, and in bfloat16
        where the input width is a multiple of 16 (torch 2.13's bf16 kernel reads past the end
        of other widths and crashes; measured, not documented). Elsewhere, e.g. CUDA, whose
        kernel has other limits, each call widens the weight instead: correct, not faster."""
        if x.device.type != "cpu" or self.weight_int8.device.type != "cpu":
            return False
        if x.dtype in (torch.float32, torch.float16):
            return True
        return x.dtype == torch.bfloat16 and self.in_features % 16 == 0

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_backbone(model: nn.Module, weights: WeightFormat | str = "int8") -> int:
    """Replace every ``nn.Linear`` of a frozen ``model`` by its `Int8Linear`, in place; returns
    how many were replaced (``weights="dense"``: none).

    Call it before attaching δ-mem (`deltamem_agents.load_backbone(weights="int8")` does): the
    δ-mem layers are then created in full precision next to the quantized projections. The
    output head is quantized too (it is the largest single matrix of a small model); its tie to
    the input embedding is cut, the embedding keeps full precision.
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weights!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    if weights == "dense":
        return 0
    from deltamem_agents.core.layer import DeltaMemoryLayer

    if any(isinstance(m, DeltaMemoryLayer) for m in model.modules()):
        raise ValueError("quantize the backbone before attaching δ-mem, not after")
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.from_linear(child))
                replaced += 1
    config = getattr(model, "config", None)
    if config is not None and replaced:
        # nothing may tie the head back to the embedding (its weight is no longer a Parameter)
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False
    return replaced


def weight_format(model: nn.Module) -> str:
    """``"int8"`` for a model `quantize_backbone` changed, else ``"dense"``."""
    return "int8" if any(isinstance(m, Int8Linear) for m in model.modules()) else "dense"
