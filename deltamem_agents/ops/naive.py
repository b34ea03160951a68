"""Reference (token-by-token) gated delta scan with row-wise gates.

This module is the readable *definition* of the recurrence; the chunked and
recurrent kernels are tested against it. Per batch row ``b`` and state head
``h`` a state ``S`` of shape ``[dv, dk]`` evolves, for ``t = 1..T``, as::

    read_t = S_{t-1} q_t                                  # read BEFORE write
    S_t    = diag(keep_t) S_{t-1}
             - diag(erase_t) (S_{t-1} k_t) k_t^T
             + diag(write_t) v_t k_t^T

At padding positions (``mask[b, t] == False``) ``read_t = 0`` and
``S_t = S_{t-1}``.

It also hosts the shared input validation / dtype policy used by every entry
point of :mod:`deltamem_agents.ops`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["naive_delta_scan"]


def compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """Dtype the math runs in: float32, or float64 if any input is float64.

    Low-precision inputs (bf16/fp16) are upcast because the recurrence
    accumulates over many steps and the chunk solve is ill-suited to 8-bit
    mantissas.
    """
    dtype = torch.float32
    for x in tensors:
        if x is not None and x.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_float_tensors(named: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Every value is a floating-point tensor with as many dims as ``layout`` names."""
    ndim = layout.count(",") + 1
    for name, x in named.items():
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != ndim:
            raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {_shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return named


def validate_scan_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    erase: Tensor,
    write: Tensor,
    mask: Optional[Tensor],
    initial_state: Optional[Tensor],
) -> tuple[int, int, int, int, int]:
    """Check shapes/dtypes/devices of a sequence scan; return ``(B, H, T, dk, dv)``.

    Raises ``ValueError`` naming the offending argument and its shape.
    """
    named = check_float_tensors(
        {"q": q, "k": k, "v": v, "keep": keep, "erase": erase, "write": write}, "[B, H, T, D]"
    )
    B, H, T, dk = q.shape
    if T < 1:
        raise ValueError(f"q must have at least one time step, got shape {_shape(q)}")
    if _shape(k) != (B, H, T, dk):
        raise ValueError(f"k must have the same shape as q {(B, H, T, dk)}, got shape {_shape(k)}")
    dv = v.shape[-1]
    if _shape(v)[:3] != (B, H, T):
        raise ValueError(f"v must have shape [B, H, T, dv] = [{B}, {H}, {T}, dv], got shape {_shape(v)}")
    for name in ("keep", "erase", "write"):
        x = named[name]
        if _shape(x) != (B, H, T, dv):
            raise ValueError(f"{name} must have shape [B, H, T, dv] = {(B, H, T, dv)}, got shape {_shape(x)}")
    check_mask_and_state(q, mask, initial_state, (B, T), B, H, dv, dk, "[B, T]")
    return B, H, T, dk, dv


def check_mask_and_state(
    ref: Tensor,
    mask: Optional[Tensor],
    state: Optional[Tensor],
    mask_shape: tuple[int, ...],
    B: int,
    H: int,
    dv: int,
    dk: int,
    mask_desc: str,
    state_name: str = "initial_state",
) -> None:
    """Validate the optional mask (bool, ``mask_shape``) and state ``[B, H, dv, dk]``."""
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape {mask_desc}, got {got}")
        if _shape(mask) != mask_shape:
            raise ValueError(f"mask must have shape {mask_desc} = {mask_shape}, got shape {_shape(mask)}")
        if mask.device != ref.device:
            raise ValueError(f"mask is on {mask.device} but q is on {ref.device}")
    if state is not None:
        if not isinstance(state, Tensor) or not state.is_floating_point():
            raise ValueError(f"{state_name} must be a floating-point tensor of shape [B, H, dv, dk]")
        if _shape(state) != (B, H, dv, dk):
            raise ValueError(
                f"{state_name} must have shape [B, H, dv, dk] = {(B, H, dv, dk)}, got shape {_shape(state)}"
            )
        if state.device != ref.device:
            raise ValueError(f"{state_name} is on {state.device} but q is on {ref.device}")


def check_devices(ref: Tensor, **tensors: Tensor) -> None:
    """All inputs must live on the device of ``q`` (no silent transfers)."""
    for name, x in tensors.items():
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but q is on {ref.device}")


def naive_delta_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    erase: Tensor,
    write: Tensor,
    *,
    mask: Optional[Tensor] = None,
    initial_state: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Run the gated delta rule one token at a time (the reference definition).

    Args:
        q, k: ``[B, H, T, dk]`` queries / keys.
        v, keep, erase, write: ``[B, H, T, dv]`` values and per-state-row gates
            (keep in (0, 1], erase / write in [0, 1]).
        mask: ``[B, T]`` bool, True = real token; ``None`` means all real.
        initial_state: ``[B, H, dv, dk]``; ``None`` means zeros.

    Returns:
        ``(reads [B, H, T, dv], final_state [B, H, dv, dk])`` in float32, or
        float64 if any input is float64.

    O(T) sequential steps: simple and exact, but slow for long T (use
    :func:`~deltamem_agents.ops.chunk.chunk_delta_scan`).
    """
    B, H, T, dk, dv = validate_scan_inputs(q, k, v, keep, erase, write, mask, initial_state)
    check_devices(q, k=k, v=v, keep=keep, erase=erase, write=write)
    dtype = compute_dtype(q, k, v, keep, erase, write, initial_state)
    q, k, v, keep, erase, write = (x.to(dtype) for x in (q, k, v, keep, erase, write))
    if initial_state is None:
        state = q.new_zeros(B, H, dv, dk)
    else:
        state = initial_state.to(dtype)

    reads = []
    for t in range(T):
        q_t, k_t = q[:, :, t], k[:, :, t]  # [B, H, dk]
        read = torch.einsum("bhij,bhj->bhi", state, q_t)  # read before write
        s_k = torch.einsum("bhij,bhj->bhi", state, k_t)  # S_{t-1} k_t
        # each row i: u_i = write_i v_i - erase_i (S k)_i ; S_i <- keep_i S_i + u_i k^T
        u = write[:, :, t] * v[:, :, t] - erase[:, :, t] * s_k
        new_state = keep[:, :, t, :, None] * state + u[..., :, None] * k_t[..., None, :]
        if mask is not None:
            m = mask[:, t].view(B, 1, 1)
            read = torch.where(m, read, torch.zeros_like(read))
            new_state = torch.where(m.unsqueeze(-1), new_state, state)
        reads.append(read)
        state = new_state
    return torch.stack(reads, dim=2), state
