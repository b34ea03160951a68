"""Single-token decode step of the gated delta rule (O(1) per token)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .naive import (
    check_devices,
    check_float_tensors,
    check_mask_and_state,
    compute_dtype,
)

__all__ = ["delta_step", "delta_step_qk"]


def delta_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    erase: Tensor,
    write: Tensor,
    state: Tensor,
    *,
    mask: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Advance the state by one token; the read happens before the write.

    Args:
        q, k: ``[B, H, dk]``; v, keep, erase, write: ``[B, H, dv]``.
        state: ``[B, H, dv, dk]`` (required: decoding always carries a state).
        mask: ``[B]`` bool, True = real token; False rows read 0 and keep their state.

    Returns:
        ``(read [B, H, dv], new_state [B, H, dv, dk])`` in float32 (float64 if
        any input is float64).
    """
    named = check_float_tensors({"q": q, "k": k, "v": v, "keep": keep, "erase": erase, "write": write}, "[B, H, D]")
    B, H, dk = q.shape
    dv = v.shape[-1]
    if tuple(k.shape) != (B, H, dk):
        raise ValueError(f"k must have the same shape as q {(B, H, dk)}, got shape {tuple(k.shape)}")
    if tuple(v.shape)[:2] != (B, H):
        raise ValueError(f"v must have shape [B, H, dv] = [{B}, {H}, dv], got shape {tuple(v.shape)}")
    for name in ("keep", "erase", "write"):
        if tuple(named[name].shape) != (B, H, dv):
            raise ValueError(f"{name} must have shape [B, H, dv] = {(B, H, dv)}, got shape {tuple(named[name].shape)}")
    if state is None:
        raise ValueError("state is required for delta_step (use zeros for a fresh sequence)")
    check_mask_and_state(q, mask, state, (B,), B, H, dv, dk, "[B]", state_name="state")
    check_devices(q, k=k, v=v, keep=keep, erase=erase, write=write)

    dtype = compute_dtype(q, k, v, keep, erase, write, state)
    q, k, v, keep, erase, write, state = (x.to(dtype) for x in (q, k, v, keep, erase, write, state))
    return delta_step_qk(torch.stack((q, k), dim=-2), v, keep, erase, write, state, mask=mask)


def delta_step_qk(
    qk: Tensor,
    v: Tensor,
    keep: Optional[Tensor],
    erase: Tensor,
    write: Tensor,
    state: Tensor,
    *,
    mask: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """`delta_step` without validation or casting, for callers that build the inputs
    themselves (the decode hot path, where checks would cost more than the math).

    The query and key come stacked, ``qk [B, H, 2, dk]`` (a view of one projection, so nothing
    is stacked per token): both state products are one matmul. Gates may also be ``[B, H, 1]``
    (one scalar per head), broadcast over the rows. ``keep=None`` means keep everything
    (``no_lambda``), without multiplying the state by ones.
    """
    read, predicted = (qk @ state.transpose(-1, -2)).unbind(-2)  # S q and S k, [B, H, dv] each
    # standard / no_lambda modes erase and write with the same gate: one multiply fewer
    u = write * (v - predicted) if erase is write else write * v - erase * predicted
    kept = state if keep is None else keep.unsqueeze(-1) * state
    new_state = torch.addcmul(kept, u.unsqueeze(-1), qk[..., 1:, :])  # + u k^T
    if mask is not None:
        m = mask.view(-1, 1, 1)
        read = torch.where(m, read, read.new_zeros(()))
        new_state = torch.where(m.unsqueeze(-1), new_state, state)
    return read, new_state
