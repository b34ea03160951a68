"""Tests for the gated delta scan (naive reference vs chunked vs decode step)."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from deltamem_agents.ops import (
    chunk_delta_scan,
    delta_scan,
    delta_step,
    naive_delta_scan,
)

GATE_MODES = ("sigmoid", "keep1", "tiny")
NAMES = ("q", "k", "v", "keep", "erase", "write", "initial_state")


def make_inputs(
    B: int, H: int, T: int, dk: int, dv: int, *, gates: str = "sigmoid",
    dtype: torch.dtype = torch.float32, seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random inputs: l2-normalised q/k, sigmoid gates, random initial state.

    ``gates="keep1"`` sets ~40% of keep entries (and one whole head) to exactly 1;
    ``gates="tiny"`` sets ~30% of keep entries to 1e-4 (near-total forgetting).
    """
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    keep = torch.sigmoid(rnd(B, H, T, dv) + 2.0)
    if gates == "keep1":
        keep = torch.where(torch.rand(B, H, T, dv, generator=g, dtype=torch.float64) < 0.4, 1.0, keep)
        keep[:, -1] = 1.0
    elif gates == "tiny":
        keep = torch.where(torch.rand(B, H, T, dv, generator=g, dtype=torch.float64) < 0.3, 1e-4, keep)
    x = {
        "q": F.normalize(rnd(B, H, T, dk), dim=-1),
        "k": F.normalize(rnd(B, H, T, dk), dim=-1),
        "v": rnd(B, H, T, dv),
        "keep": keep,
        "erase": torch.sigmoid(rnd(B, H, T, dv)),
        "write": torch.sigmoid(rnd(B, H, T, dv)),
        "initial_state": rnd(B, H, dv, dk),
    }
    return {n: t.to(dtype) for n, t in x.items()}


def make_mask(B: int, T: int) -> torch.Tensor:
    """Row 0: left padding; row 1: an interior gap; other rows: all real."""
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, : max(1, T // 3)] = False
    if B > 1 and T > 2:
        mask[1, T // 2 : T // 2 + 5] = False
    return mask


def err_ratio(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error (fla-style), scale-free across tensors."""
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).pow(2).mean().sqrt() / (ref.pow(2).mean().sqrt() + 1e-30)).item()


def assert_close(name: str, x: torch.Tensor, ref: torch.Tensor, ratio: float) -> None:
    assert x.shape == ref.shape, f"{name}: shape {tuple(x.shape)} != {tuple(ref.shape)}"
    err = err_ratio(x, ref)
    assert err <= ratio, f"{name}: relative RMS error {err:.3e} > {ratio:.1e}"


def run_with_grads(fn, x: dict[str, torch.Tensor], mask: Optional[torch.Tensor], seed: int = 1, **kw):
    """Forward + backward with a random cotangent on both outputs; returns outputs and grads."""
    leaves = {n: t.clone().requires_grad_() for n, t in x.items()}
    reads, state = fn(**leaves, mask=mask, **kw)
    g = torch.Generator().manual_seed(seed)
    d_reads = torch.randn(reads.shape, generator=g, dtype=torch.float64).to(reads.dtype)
    d_state = torch.randn(state.shape, generator=g, dtype=torch.float64).to(state.dtype)
    (reads * d_reads).sum().add((state * d_state).sum()).backward()
    return reads.detach(), state.detach(), {n: t.grad for n, t in leaves.items()}


@pytest.mark.parametrize(
    ("T", "H", "dk", "dv", "chunk_size", "gates", "masked", "dtype"),
    [
        pytest.param(*case, id="T{}-H{}-dk{}-dv{}-C{}-{}-mask{}-{}".format(*case[:7], str(case[7])[6:]))
        for case in [
            (1, 1, 8, 8, 16, "sigmoid", True, torch.float32),
            (7, 4, 8, 8, 16, "sigmoid", True, torch.float32),
            (63, 1, 8, 8, 16, "keep1", True, torch.float32),
            (64, 4, 8, 8, 64, "sigmoid", False, torch.float32),
            (65, 4, 8, 8, 64, "tiny", True, torch.float32),
            (130, 1, 8, 8, 16, "tiny", True, torch.float32),
            (257, 4, 8, 8, 64, "sigmoid", True, torch.float32),
            (257, 1, 8, 8, 16, "keep1", False, torch.float32),
            (65, 4, 8, 6, 16, "sigmoid", True, torch.float32),
            (7, 1, 8, 8, 16, "tiny", True, torch.float64),
            (64, 4, 8, 8, 16, "keep1", True, torch.float64),
            (130, 4, 8, 4, 64, "tiny", True, torch.float64),
            (257, 1, 8, 8, 64, "sigmoid", True, torch.float64),
        ]
    ],
)
def test_chunk_matches_naive(T, H, dk, dv, chunk_size, gates, masked, dtype):
    B = 2
    x = make_inputs(B, H, T, dk, dv, gates=gates, dtype=dtype)
    mask = make_mask(B, T) if masked else None
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    ref_r, ref_s, ref_g = run_with_grads(naive_delta_scan, x, mask)
    tri_r, tri_s, tri_g = run_with_grads(chunk_delta_scan, x, mask, chunk_size=chunk_size)
    assert tri_r.dtype == tri_s.dtype == dtype
    assert_close("reads", tri_r, ref_r, tol)
    assert_close("final_state", tri_s, ref_s, tol)
    for name in NAMES:
        assert_close(f"d{name}", tri_g[name], ref_g[name], tol)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")])
def test_chunk_handles_zero_keep(dtype):
    """keep == 0 exactly (sigmoid underflow) is outside the nominal range but must not NaN."""
    x = make_inputs(2, 1, 37, 8, 8, dtype=dtype)
    x["keep"][..., 5::7, :] = 0.0
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    ref_r, ref_s, ref_g = run_with_grads(naive_delta_scan, x, None)
    tri_r, tri_s, tri_g = run_with_grads(chunk_delta_scan, x, None, chunk_size=16)
    assert_close("reads", tri_r, ref_r, tol)
    assert_close("final_state", tri_s, ref_s, tol)
    for name in NAMES:
        assert torch.isfinite(tri_g[name]).all(), name
        assert_close(f"d{name}", tri_g[name], ref_g[name], tol)


def test_chunk_gradcheck():
    x = make_inputs(1, 1, 5, 3, 2, dtype=torch.float64, seed=3)
    mask = torch.tensor([[True, True, False, True, True]])
    leaves = tuple(x[n].clone().requires_grad_() for n in NAMES)

    def fn(q, k, v, keep, erase, write, s0):
        return chunk_delta_scan(q, k, v, keep, erase, write, mask=mask, initial_state=s0, chunk_size=2)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")])
@pytest.mark.parametrize("masked", [pytest.param(False, id="nomask"), pytest.param(True, id="mask")])
def test_step_matches_naive(dtype, masked):
    B, H, T, dk, dv = 2, 4, 19, 8, 6
    x = make_inputs(B, H, T, dk, dv, gates="keep1", dtype=dtype)
    mask = make_mask(B, T) if masked else None
    ref_r, ref_s = naive_delta_scan(**{n: x[n] for n in NAMES[:-1]}, mask=mask, initial_state=x["initial_state"])
    state, reads = x["initial_state"], []
    for t in range(T):
        step = {n: x[n][:, :, t] for n in NAMES[:-1]}
        read, state = delta_step(**step, state=state, mask=None if mask is None else mask[:, t])
        reads.append(read)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close("reads", torch.stack(reads, dim=2), ref_r, tol)
    assert_close("final_state", state, ref_s, tol)


@pytest.mark.parametrize(
    ("fn", "split"),
    [
        pytest.param(naive_delta_scan, 37, id="naive"),
        pytest.param(lambda *a, **kw: chunk_delta_scan(*a, chunk_size=16, **kw), 37, id="chunk"),
        pytest.param(lambda *a, **kw: chunk_delta_scan(*a, chunk_size=16, **kw), 48, id="chunk-aligned"),
    ],
)
def test_state_carry(fn, split):
    """Scanning a prefix, then continuing from its final state == one scan of everything."""
    B, H, T, dk, dv = 2, 4, 100, 8, 8
    x = make_inputs(B, H, T, dk, dv, dtype=torch.float64)
    mask = make_mask(B, T)
    seq = {n: x[n] for n in NAMES[:-1]}
    full_r, full_s = fn(**seq, mask=mask, initial_state=x["initial_state"])
    head = {n: t[:, :, :split] for n, t in seq.items()}
    tail = {n: t[:, :, split:] for n, t in seq.items()}
    r1, s1 = fn(**head, mask=mask[:, :split], initial_state=x["initial_state"])
    r2, s2 = fn(**tail, mask=mask[:, split:], initial_state=s1)
    assert_close("reads", torch.cat([r1, r2], dim=2), full_r, 1e-12)
    assert_close("final_state", s2, full_s, 1e-12)


@pytest.mark.parametrize(
    "impl",
    [
        pytest.param("naive", id="naive"),
        pytest.param("chunk", id="chunk"),
        pytest.param("auto", id="auto"),
        pytest.param("chunk16", id="chunk16"),
    ],
)
def test_masked_positions(impl):
    """Masked tokens read exactly 0 and leave the state bit-for-bit unchanged."""
    B, H, T, dk, dv = 3, 2, 70, 8, 8
    x = make_inputs(B, H, T, dk, dv)
    mask = make_mask(B, T)
    mask[2] = False  # fully masked row keeps its initial state
    seq = {n: x[n] for n in NAMES[:-1]}
    if impl == "chunk16":
        reads, state = chunk_delta_scan(**seq, mask=mask, initial_state=x["initial_state"], chunk_size=16)
    else:
        reads, state = delta_scan(**seq, mask=mask, initial_state=x["initial_state"], impl=impl)
    assert torch.equal(reads.masked_fill(mask[:, None, :, None], 0.0), torch.zeros_like(reads))
    assert torch.equal(state[2], x["initial_state"][2])
    # Garbage at masked positions must not leak either.
    dirty = {n: torch.where(mask[:, None, :, None], t, float("nan")) for n, t in seq.items()}
    reads2, state2 = delta_scan(**dirty, mask=mask, initial_state=x["initial_state"],
                                impl="naive" if impl == "naive" else "chunk")
    assert torch.isfinite(reads2).all() and torch.isfinite(state2).all()
    assert_close("reads", reads2, reads, 1e-6)


def test_trailing_padding_does_not_change_state():
    B, H, T, dk, dv = 2, 1, 40, 8, 8
    x = make_inputs(B, H, T, dk, dv, dtype=torch.float64)
    seq = {n: x[n] for n in NAMES[:-1]}
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, 30:] = False
    _, s_full = chunk_delta_scan(**seq, mask=mask, initial_state=x["initial_state"], chunk_size=16)
    _, s_cut = naive_delta_scan(**{n: t[:, :, :30] for n, t in seq.items()}, initial_state=x["initial_state"])
    assert_close("final_state", s_full, s_cut, 1e-12)


@pytest.mark.parametrize("fn", [pytest.param(naive_delta_scan, id="naive"), pytest.param(chunk_delta_scan, id="chunk")])
def test_bf16_upcasts(fn):
    B, H, T, dk, dv = 2, 4, 65, 8, 8
    x32 = make_inputs(B, H, T, dk, dv)
    x16 = {n: t.to(torch.bfloat16) for n, t in x32.items()}
    mask = make_mask(B, T)
    r16, s16 = fn(**{n: x16[n] for n in NAMES[:-1]}, mask=mask, initial_state=x16["initial_state"])
    assert r16.dtype == torch.float32 and s16.dtype == torch.float32
    # identical to an fp32 run on the same (bf16-rounded) values ...
    r_up, s_up = fn(**{n: x16[n].float() for n in NAMES[:-1]}, mask=mask, initial_state=x16["initial_state"].float())
    assert_close("reads", r16, r_up, 1e-6)
    assert_close("final_state", s16, s_up, 1e-6)
    # ... and close to the fp32 result (only input rounding differs).
    r32, s32 = fn(**{n: x32[n] for n in NAMES[:-1]}, mask=mask, initial_state=x32["initial_state"])
    assert_close("reads", r16, r32, 5e-2)
    assert_close("final_state", s16, s32, 5e-2)


def test_dtype_policy():
    x = make_inputs(1, 1, 20, 8, 8, dtype=torch.float32)
    seq = {n: x[n] for n in NAMES[:-1]}
    r, s = chunk_delta_scan(**seq, initial_state=x["initial_state"].double())
    assert r.dtype == s.dtype == torch.float64
    r, s = naive_delta_scan(**{n: t.half() for n, t in seq.items()})
    assert r.dtype == s.dtype == torch.float32


@pytest.mark.parametrize("T", [pytest.param(t, id=f"T{t}") for t in (1, 5, 40)])
def test_dispatch_auto_matches_naive(T):
    B, H, dk, dv = 2, 4, 8, 8
    x = make_inputs(B, H, T, dk, dv, dtype=torch.float64)
    mask = make_mask(B, T)
    seq = {n: x[n] for n in NAMES[:-1]}
    ref_r, ref_s = naive_delta_scan(**seq, mask=mask, initial_state=x["initial_state"])
    for impl in ("auto", "naive", "chunk"):
        r, s = delta_scan(**seq, mask=mask, initial_state=x["initial_state"], impl=impl)
        assert_close(f"{impl} reads", r, ref_r, 1e-12)
        assert_close(f"{impl} final_state", s, ref_s, 1e-12)
    r, s = delta_scan(**seq)  # no mask, no initial state
    ref_r, ref_s = naive_delta_scan(**seq)
    assert_close("reads", r, ref_r, 1e-12)
    assert_close("final_state", s, ref_s, 1e-12)


def _bad_inputs():
    B, H, T, dk, dv = 2, 3, 5, 8, 6
    good = make_inputs(B, H, T, dk, dv)
    seq = {n: good[n] for n in NAMES[:-1]}
    cases = [
        ("q", dict(seq, q=seq["q"][0])),
        ("k", dict(seq, k=seq["k"][..., :4])),
        ("v", dict(seq, v=seq["v"][:, :, :3])),
        ("keep", dict(seq, keep=seq["keep"][..., :4])),
        ("erase", dict(seq, erase=seq["erase"][:1])),
        ("write", dict(seq, write=seq["write"][:, :1])),
        ("mask", dict(seq, mask=torch.ones(B, T + 1, dtype=torch.bool))),
        ("mask", dict(seq, mask=torch.ones(B, T))),
        ("initial_state", dict(seq, initial_state=good["initial_state"].mT)),
        ("q", dict(seq, q=seq["q"].long())),
    ]
    return [pytest.param(name, kw, id=f"{name}-{i}") for i, (name, kw) in enumerate(cases)]


@pytest.mark.parametrize(("name", "kwargs"), _bad_inputs())
@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(naive_delta_scan, id="naive"),
        pytest.param(chunk_delta_scan, id="chunk"),
        pytest.param(delta_scan, id="dispatch"),
    ],
)
def test_shape_errors(fn, name, kwargs):
    with pytest.raises(ValueError, match=name):
        fn(**kwargs)


def test_step_and_option_errors():
    x = make_inputs(2, 3, 1, 8, 6)
    step = {n: x[n][:, :, 0] for n in NAMES[:-1]}
    with pytest.raises(ValueError, match="state"):
        delta_step(**step, state=x["initial_state"][..., :4])
    with pytest.raises(ValueError, match="v"):
        delta_step(**dict(step, v=step["v"][:, :, None]), state=x["initial_state"])
    with pytest.raises(ValueError, match="mask"):
        delta_step(**step, state=x["initial_state"], mask=torch.ones(3, dtype=torch.bool))
    seq = {n: x[n] for n in NAMES[:-1]}
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_scan(**seq, chunk_size=0)
    with pytest.raises(ValueError, match="impl"):
        delta_scan(**seq, impl="fast")


def test_device_agnostic_meta():
    """No tensor is created on a hard-coded device: everything runs on 'meta' (shapes only)."""
    B, H, T, dk, dv = 2, 2, 40, 8, 6
    x = {n: t.to("meta") for n, t in make_inputs(B, H, T, dk, dv).items()}
    mask = torch.ones(B, T, dtype=torch.bool, device="meta")
    leaves = {n: t.requires_grad_() for n, t in x.items()}
    reads, state = chunk_delta_scan(**leaves, mask=mask, chunk_size=16)
    (reads.sum() + state.sum()).backward()
    assert reads.device.type == "meta" and reads.shape == (B, H, T, dv) and state.shape == (B, H, dv, dk)
    assert leaves["keep"].grad.shape == (B, H, T, dv)
    r, s = delta_scan(**{n: t.detach() for n, t in x.items()}, mask=mask)
    assert r.device.type == "meta" and s.shape == (B, H, dv, dk)
