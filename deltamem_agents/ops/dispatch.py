"""Pick the fastest exact implementation of the scan for a given length."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from .chunk import chunk_delta_scan
from .naive import naive_delta_scan, validate_scan_inputs
from .recurrent import delta_step

__all__ = ["delta_scan", "NAIVE_MAX_LEN", "chunk_size_for", "scan_impl_for", "ScanImpl", "ScanKernel"]

#: what a caller may ask for: ``auto`` picks by length (`scan_impl_for`)
ScanImpl = Literal["auto", "naive", "chunk", "step"]
#: what actually runs
ScanKernel = Literal["step", "naive", "chunk"]
_IMPLS = ("auto", "naive", "chunk", "step")

# Measured on CPU (2 cores, torch 2.13, d=8, fp32; see deltamem_agents/bench/scan.py):
# the chunk path overtakes the token loop at T ~ 6 for B=H=1 and at T ~ 16 for
# B=8, H=4 (inference and forward+backward alike), so lengths up to 8 stay naive.
NAIVE_MAX_LEN = 8

# Tokens per chunk. On CPU the C x C per-row buffers dominate (memory traffic
# grows with T * C), and C=16 was fastest at every length 512..32768 (C=64 was
# 2-3x slower at T=8192). Accelerators amortise larger chunks better.
CPU_CHUNK_SIZE = 16
ACCEL_CHUNK_SIZE = 64


def chunk_size_for(device: torch.device) -> int:
    """Chunk size used by :func:`delta_scan` on ``device``."""
    return CPU_CHUNK_SIZE if device.type == "cpu" else ACCEL_CHUNK_SIZE


def scan_impl_for(length: int, impl: ScanImpl = "auto") -> ScanKernel:
    """The one length rule: which implementation scans ``length`` tokens when ``impl`` is
    asked for. ``auto``: one token -> ``step``, up to `NAIVE_MAX_LEN` -> ``naive``, else
    ``chunk``; anything else is taken as given. `deltamem_agents.core.plan.choose_plan`
    resolves it once per forward, so the layer hands `delta_scan` a concrete choice."""
    if impl not in _IMPLS:
        raise ValueError(f"impl must be 'auto', 'naive', 'chunk' or 'step', got {impl!r}")
    if impl != "auto":
        return impl
    if length == 1:
        return "step"
    return "naive" if length <= NAIVE_MAX_LEN else "chunk"


def delta_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    erase: Tensor,
    write: Tensor,
    *,
    mask: Optional[Tensor] = None,
    initial_state: Optional[Tensor] = None,
    impl: ScanImpl = "auto",
) -> tuple[Tensor, Tensor]:
    """Gated delta scan over ``[B, H, T, D]`` inputs; see :func:`naive_delta_scan`.

    ``impl``: ``naive``, ``chunk`` (chunk size per device) or ``step`` (:func:`delta_step`,
    one token only) run as named; ``auto`` picks by length (:func:`scan_impl_for`). All paths
    compute the same function (up to float rounding) and return
    ``(reads [B, H, T, dv], final_state [B, H, dv, dk])``.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be 'auto', 'naive', 'chunk' or 'step', got {impl!r}")
    B, H, T, dk, dv = validate_scan_inputs(q, k, v, keep, erase, write, mask, initial_state)
    kernel = scan_impl_for(T, impl)
    if kernel == "step":
        if T != 1:
            raise ValueError(f"impl='step' scans one token, got T={T}")
        state = initial_state if initial_state is not None else q.new_zeros(B, H, dv, dk)
        read, state = delta_step(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], keep[:, :, 0], erase[:, :, 0], write[:, :, 0], state,
            mask=None if mask is None else mask[:, 0],
        )
        return read.unsqueeze(2), state
    if kernel == "naive":
        return naive_delta_scan(q, k, v, keep, erase, write, mask=mask, initial_state=initial_state)
    return chunk_delta_scan(
        q, k, v, keep, erase, write, mask=mask, initial_state=initial_state, chunk_size=chunk_size_for(q.device)
    )
