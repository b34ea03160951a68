"""Chunk-parallel gated delta scan (WY / UT-transform form), pure PyTorch.

Why: the token loop in :mod:`.naive` costs O(T) tiny sequential kernels. Each
state row ``i`` is an independent scalar-gated delta rule, so inside a chunk
of ``C`` tokens with start state ``s_0`` (one row) and ``G_t = prod_{m<=t}
keep_m``::

    s_t = G_t s_0 + sum_{j<=t} (G_t / G_j) u_j k_j,
    u_t = write_t v_t - erase_t (s_{t-1} . k_t)

Substituting ``s_{t-1}`` gives a unit-lower-triangular C x C system per row,
``A u = write*v - diag(erase G_{t-1}) K s_0``, solved once per chunk for a part
independent of ``s_0`` (``u~``) and a linear map of it (``W``):
``u = u~ - W s_0``. Every chunk is therefore precomputed in parallel; across
chunks only the affine chunk maps ``s_C = M s_0 + c`` (a ``dk x dk`` matrix +
vector per row) are chained, by a log-depth prefix composition. Reads
(before write) are::

    read_t = G_{t-1} (q_t . s_0) + sum_{j<t} (G_{t-1} / G_j) (k_j . q_t) u_j

Gate ratios ``G_{t-1} / G_j`` are products of exactly the gates in the segment
(a masked cumulative product): never a division by keep, never a difference of
long cumulative log-sums, so tiny (even zero) keeps neither overflow nor lose
precision.

Layout note: the C x C per-row matrices are built transposed (``[j, t]``) so
that ``A`` is a column-major view, which LAPACK's triangular solve uses without
a copy; on CPU these C x C passes dominate the cost.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .naive import check_devices, compute_dtype, validate_scan_inputs

__all__ = ["chunk_delta_scan"]


def _segment_gates_t(a: Tensor, inplace: bool) -> Tensor:
    """``Dt[..., j, t] = prod_{m=j+1}^{t-1} a[..., m]`` for ``t > j`` (garbage for ``t <= j``).

    A masked cumulative product of repeated gates (multiplicative Mamba-2
    "segsum"): each entry multiplies exactly the gates it spans. Callers mask
    the ``t <= j`` half through strictly-triangular key products.
    """
    C = a.shape[-1]
    shifted = F.pad(a[..., :-1], (1, 0), value=1.0)  # shifted[t] = a[t-1]
    rep = shifted.unsqueeze(-2)  # rep[j, t] = a[t-1], broadcast over j
    spans = torch.ones(C, C, dtype=a.dtype, device=a.device).triu(2)  # 1 where t >= j + 2
    # (1 - spans) + spans * rep is exact (selects rep or 1) and, unlike torch.where
    # with broadcasting, runs as one vectorised pass on CPU.
    Dt = torch.addcmul(1.0 - spans, spans, rep)
    return Dt.cumprod_(dim=-1) if inplace else Dt.cumprod(dim=-1)


def _prefix_compose(maps: Tensor) -> Tensor:
    """Inclusive prefix composition along dim 2: ``out[n] = maps[n] @ ... @ maps[0]``.

    Work-efficient odd/even recursion: ~2N small batched matmuls in
    2 log2(N) calls, instead of N sequential steps (Python overhead) or
    N log N matmuls (Hillis-Steele).
    """
    N = maps.shape[2]
    if N == 1:
        return maps
    even, odd = maps[:, :, 0::2], maps[:, :, 1::2]
    n_odd = odd.shape[2]
    pairs = _prefix_compose(odd @ even[:, :, :n_odd])  # prefix up to 2i+1
    rest = even[:, :, 1:] @ pairs[:, :, : even.shape[2] - 1]  # prefix up to 2i (i >= 1)
    even_out = torch.cat([even[:, :, :1], rest], dim=2)
    out = torch.stack([even_out[:, :, :n_odd], pairs], dim=3).flatten(2, 3)
    if N % 2:
        out = torch.cat([out, even_out[:, :, -1:]], dim=2)
    return out


def chunk_delta_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor,
    erase: Tensor,
    write: Tensor,
    *,
    mask: Optional[Tensor] = None,
    initial_state: Optional[Tensor] = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunked equivalent of :func:`~deltamem_agents.ops.naive.naive_delta_scan`.

    Args/returns exactly as the naive scan (``q, k: [B, H, T, dk]``; ``v`` and
    gates ``[B, H, T, dv]``; ``mask [B, T]``; ``initial_state [B, H, dv, dk]``
    -> ``(reads [B, H, T, dv], final_state [B, H, dv, dk])``), plus
    ``chunk_size``: tokens per chunk (T is padded up to a multiple with
    identity steps). Work is O(T * C * dv * (dk + C)) in parallel plus a
    log-depth composition of ``(dk+1) x (dk+1)`` maps. Differentiable.
    """
    B, H, T, dk, dv = validate_scan_inputs(q, k, v, keep, erase, write, mask, initial_state)
    check_devices(q, k=k, v=v, keep=keep, erase=erase, write=write)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    # Without autograd, the C x C buffers are reused in place: on CPU, first-touching
    # fresh memory costs more than the arithmetic on it.
    inplace = not (torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, keep, erase, write, initial_state)))
    dtype = compute_dtype(q, k, v, keep, erase, write, initial_state)
    q, k, v, keep, erase, write = (x.to(dtype) for x in (q, k, v, keep, erase, write))
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T

    # Padding / masked tokens become identity steps: keep=1, erase=write=0, and
    # zeroed q/k so garbage in padding cannot leak through 0 * inf.
    wv = write * v
    if mask is not None:
        m = mask[:, None, :, None]  # [B, 1, T, 1]
        keep = torch.where(m, keep, 1.0)
        erase, wv, q, k = (torch.where(m, x, 0.0) for x in (erase, wv, q, k))
    if pad:
        q, k, wv, erase = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, wv, erase))
        keep = F.pad(keep, (0, 0, 0, pad), value=1.0)

    # Chunk layout: token tensors [B, H, N, C, d]; row-wise gates [B, H, N, dv, C].
    Q = q.reshape(B, H, N, C, dk)
    K = k.reshape(B, H, N, C, dk)

    def rows(x: Tensor) -> Tensor:
        # Contiguous row layout: broadcasting against C x C tensors is much faster.
        return x.reshape(B, H, N, C, dv).transpose(-1, -2).contiguous()

    a, e, b = rows(keep), rows(erase), rows(wv)

    # Gate products within the chunk (each a product of exactly the gates it spans).
    G_prev = F.pad(a[..., :-1], (1, 0), value=1.0).cumprod(-1)  # G_{t-1}
    G_end = a.prod(-1)  # G_C
    gamma = F.pad(a[..., 1:], (0, 1), value=1.0).flip(-1).cumprod(-1).flip(-1)  # G_C / G_j
    Dt = _segment_gates_t(a, inplace)  # [B, H, N, dv, C(j), C(t)]

    # Strictly upper in [j, t] == strictly lower in [t, j]: reads and erases only see j < t.
    KKt = (K @ K.transpose(-1, -2)).triu(1).unsqueeze(3)  # k_j . k_t, [B, H, N, 1, C, C]
    QKt = (K @ Q.transpose(-1, -2)).triu(1).unsqueeze(3)  # k_j . q_t
    A = KKt * e.unsqueeze(-2)
    A = (A.mul_(Dt) if inplace else A * Dt).mT  # strictly lower part of A (unit diagonal implied)
    # Right-hand sides [write*v | erase G_{t-1} k_t], built column-major like A.
    rhs = torch.cat([b.unsqueeze(-2), (e * G_prev).unsqueeze(-2) * K.mT.unsqueeze(3)], dim=-2).mT
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    u_free, W = X[..., 0], X[..., 1:]  # u = u_free - W s_0; [.., dv, C], [.., dv, C, dk]

    # Affine chunk map per row, s_C = M s_0 + c, stored augmented as [[M, c], [0, 1]].
    gK = gamma.unsqueeze(-1) * K.unsqueeze(3)  # [B, H, N, dv, C, dk]
    eye = torch.eye(dk, dtype=dtype, device=q.device)
    M = G_end[..., None, None] * eye - gK.mT @ W  # [B, H, N, dv, dk, dk]
    c = gK.mT @ u_free.unsqueeze(-1)  # [B, H, N, dv, dk, 1]
    last = F.pad(q.new_ones(B, H, N, dv, 1, 1), (dk, 0))  # [0 ... 0 1]
    maps = torch.cat([torch.cat([M, c], dim=-1), last], dim=-2)  # [B, H, N, dv, dk+1, dk+1]

    state = q.new_zeros(B, H, dv, dk) if initial_state is None else initial_state.to(dtype)
    prefix = _prefix_compose(maps)  # prefix[n] = map_n o ... o map_0
    ends = prefix[..., :dk, :dk] @ state.unsqueeze(2).unsqueeze(-1) + prefix[..., :dk, dk:]
    ends = ends.squeeze(-1)  # state after each chunk, [B, H, N, dv, dk]
    S0 = torch.cat([state.unsqueeze(2), ends[:, :, :-1]], dim=2)  # state before each chunk
    final_state = ends[:, :, -1]

    u = u_free - (W @ S0.unsqueeze(-1)).squeeze(-1)  # [B, H, N, dv, C]
    del A
    # intra[t] = sum_{j<t} D_tj (k_j . q_t) u_j
    if inplace:
        intra = Dt.mul_(QKt).mul_(u.unsqueeze(-1)).sum(-2)
    else:
        intra = (u.unsqueeze(-2) @ (Dt * QKt)).squeeze(-2)
    reads = G_prev * (S0 @ Q.mT) + intra  # [B, H, N, dv, C]
    reads = reads.transpose(-1, -2).reshape(B, H, N * C, dv)[:, :, :T]
    if mask is not None:
        reads = torch.where(mask[:, None, :, None], reads, 0.0)
    return reads, final_state
