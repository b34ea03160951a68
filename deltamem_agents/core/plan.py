"""`DecodePlan`: which memory step a forward runs, and why, decided in one place.

Every attention layer of one forward runs the same kind of step: the fused C++ decode step,
the eager per-token step, a scan, an SSW segment write, or reads only. `choose_plan` decides
from the forward's facts (tokens, writes on or off, SSW segment ids, recorded statistics,
autograd, the weights' device and dtype, the configuration, ``$DELTAMEM_FUSED_DECODE``). The
attention hook (``deltamem_agents.model.attach``) asks once per forward, at its first layer,
and every layer and `deltamem_agents.ops.delta_scan` follow the answer instead of re-deciding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.ops.dispatch import ScanImpl, scan_impl_for
from deltamem_agents.ops.fused import FUSED_MAX_READ_DIM, fused_decode_unavailable

__all__ = ["DecodePlan", "StepKind", "choose_plan"]


class StepKind(str, Enum):
    """What computes a forward's memory reads, writes and corrections."""

    FUSED = "fused"  # the C++ decode step (`deltamem_agents.ops.fused`): one call per layer
    RECURRENT = "recurrent"  # the eager per-token step (`DeltaMemoryLayer._decode_step`)
    SCAN = "scan"  # memory projections for all tokens, then `delta_scan` (prefill)
    SEGMENTS = "segments"  # SSW: reads from the state before, one write per segment
    READ_ONLY = "read_only"  # writes off: reads from the current state, nothing written


@dataclass(frozen=True, slots=True)
class DecodePlan:
    """One forward's step and the reason it was chosen (for logs, tests and benchmarks)."""

    kind: StepKind
    reason: str
    tokens: int  # tokens per row of the forward it was chosen for
    #: the scan implementation for a SCAN plan, already resolved by length; SEGMENTS keeps the
    #: configured one, as the number of segments is known only once the ids are read
    scan_impl: ScanImpl = "auto"

    @property
    def fused(self) -> bool:
        return self.kind is StepKind.FUSED


def choose_plan(
    config: DeltaMemConfig,
    *,
    tokens: int,
    device: torch.device,
    dtype: torch.dtype,
    hidden_dtype: torch.dtype | None = None,
    write: bool = True,
    segments: bool = False,
    record_inputs: bool = False,
    autograd: bool = False,
) -> DecodePlan:
    """The plan for a forward of ``tokens`` tokens per row.

    ``device``/``dtype``: the memory weights'; ``hidden_dtype``: the attention input's (the
    weights' where not given); ``segments``: SSW segment ids cover this forward; ``record_inputs``:
    gate statistics are recorded (they need the scan's inputs); ``autograd``: autograd records
    this forward (grad mode on and a weight, the input or the state requires grad).
    """
    if not write:
        return DecodePlan(StepKind.READ_ONLY, "writing is off", tokens)
    if segments and config.write_strategy == "ssw":
        return DecodePlan(StepKind.SEGMENTS, "SSW segment ids given", tokens, config.scan_impl)
    if tokens != 1 or record_inputs:
        reason = "gate statistics are recorded" if tokens == 1 else f"{tokens} tokens per row"
        return DecodePlan(StepKind.SCAN, reason, tokens, scan_impl_for(tokens, config.scan_impl))
    why_eager = _why_not_fused(config, device, dtype, dtype if hidden_dtype is None else hidden_dtype, autograd)
    if why_eager is not None:
        return DecodePlan(StepKind.RECURRENT, why_eager, tokens)
    return DecodePlan(StepKind.FUSED, "one token per row, CPU float32 weights, no autograd", tokens)


#: attention inputs the C++ step takes (it widens half precision to float32 itself)
_FUSED_HIDDEN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _why_not_fused(
    config: DeltaMemConfig, device: torch.device, dtype: torch.dtype, hidden_dtype: torch.dtype, autograd: bool
) -> str | None:
    """Why a one-token writing forward cannot use the C++ step, or ``None`` where it can; the
    mode and build are asked last, so nothing is built for a forward that cannot use it."""
    if autograd:
        return "autograd records this forward (the C++ step has no backward)"
    if config.trainable_delta_scale:
        return "trainable delta scale (not in the C++ step)"
    if config.delta_o_rmsnorm and "o" in config.delta_heads:
        return "delta o-norm (not in the C++ step)"
    if config.read_dim > FUSED_MAX_READ_DIM:
        return f"read width {config.read_dim} is over the C++ step's {FUSED_MAX_READ_DIM}"
    if device.type != "cpu":
        return f"weights on {device.type} (the C++ step is CPU only)"
    if dtype != torch.float32 or hidden_dtype not in _FUSED_HIDDEN_DTYPES:
        return f"weights {dtype}, hidden states {hidden_dtype} (the C++ step needs float32 weights)"
    return fused_decode_unavailable()
