"""`DeltaMemoryLayer`: the δ-mem parameters of one attention layer and what they compute.

From the attention input ``h`` (``[B, T, hidden]``) it projects memory queries, keys, values
and gates, reads the layer's state before writing, writes with the gated delta rule (token by
token, or once per segment for SSW), and turns the reads into corrections for the attention's
q/k/v/o projections. It knows nothing about Hugging Face: ``deltamem_agents.model`` feeds it.

Weights are packed so one token costs two small matmuls:

* ``memory_in_proj`` ``[3*D + G (+ G), hidden]``: rows ``[0, D)`` memory q, ``[D, 2D)`` memory
  k, ``[2D, 3D)`` memory v, then ``G`` beta-gate rows and (uncoupled lambda only) ``G`` lambda
  rows. ``D = H * r`` (H state heads of rank r), ``G = H * r`` rank-wise or ``H`` scalar gates.
* ``gate_bias`` ``[G (+ G)]``: beta then lambda biases (the memory q/k/v have no bias).
* ``delta_out_proj`` ``[sum(out features of the active heads), D]``: delta heads stacked in
  q, k, v, o order.

Which step a forward runs (fused C++, eager per-token, scan, SSW segments, reads only) is a
`DecodePlan` (``core/plan.py``) chosen once; the gate math is `write_gates` (``core/gates.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deltamem_agents.core.config import ALL_DELTA_HEADS, DeltaMemConfig
from deltamem_agents.core.gates import write_gates
from deltamem_agents.core.plan import DecodePlan, StepKind, choose_plan
from deltamem_agents.ops import delta_scan
from deltamem_agents.ops.dispatch import ScanImpl
from deltamem_agents.ops.fused import fused_decode_plan
from deltamem_agents.ops.recurrent import delta_step_qk

QK_NORM_EPS = 1e-6
# the fused decode step's codes for `state_update_mode`
_UPDATE_MODE_CODES = {"standard": 0, "lambda_outside": 1, "no_lambda": 2}


@dataclass
class MemoryInputs:
    """Projected memory inputs in scan layout ``[B, H, T, r]``, float32 or wider."""

    q: Tensor
    k: Tensor
    v: Tensor
    keep: Tensor
    erase: Tensor
    write: Tensor
    beta: Tensor  # [B, H, T, r], kept for gate statistics


@dataclass
class MemoryStep:
    """What one forward through an attention layer needs from its memory."""

    reads: Tensor  # [B, T, D]
    new_state: Tensor  # [B, H, r, r]
    inputs: MemoryInputs | None  # the write's inputs, where they were computed
    corrections: dict[str, Tensor]  # per delta head, [B, T, out]


class DeltaMemoryLayer(nn.Module):
    """δ-mem for one attention layer: projections, gates, the scan and the delta heads."""

    def __init__(
        self,
        config: DeltaMemConfig,
        hidden_size: int,
        out_features: Mapping[str, int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        base_weights: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        missing = [h for h in config.delta_heads if h not in out_features]
        if missing:
            raise ValueError(f"no output width given for delta heads {missing}")
        self.config = config
        self.hidden_size = hidden_size
        self.heads = config.ordered_delta_heads()
        self.out_features = {h: int(out_features[h]) for h in self.heads}
        d, g = config.read_dim, config.gates_per_head * config.num_state_heads
        self.read_dim, self.gate_dim = d, g
        n_gate_groups = 1 if config.couple_lambda else 2
        factory = {"device": device, "dtype": dtype}
        self.memory_in_proj = nn.Parameter(torch.empty(3 * d + n_gate_groups * g, hidden_size, **factory))
        self.gate_bias = nn.Parameter(torch.empty(n_gate_groups * g, **factory))
        self.delta_out_proj = nn.Parameter(torch.empty(sum(self.out_features.values()), d, **factory))
        if config.trainable_delta_scale:
            n_scales = len(ALL_DELTA_HEADS) if config.delta_scale_granularity == "head" else 1
            self.delta_scale_raw = nn.Parameter(torch.empty(n_scales, **factory))
        else:
            self.delta_scale_raw = None
        if config.delta_o_rmsnorm and "o" in self.heads:
            self.delta_o_norm_weight = nn.Parameter(torch.empty(self.out_features["o"], **factory))
        else:
            self.delta_o_norm_weight = None
        self._record_inputs = False  # set by the handle while gate statistics are recorded
        self._fused_args = (  # the fused step's fixed arguments, built once
            config.num_state_heads, config.rank, config.gates_per_head, config.normalize_qk, config.couple_lambda,
            _UPDATE_MODE_CODES[config.state_update_mode], QK_NORM_EPS, config.scaling, tuple(self.out_features.values()),
        )
        if self.memory_in_proj.device.type != "meta":
            self.reset_parameters(base_weights)

    # -- initialisation -----------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, base_weights: Mapping[str, Tensor] | None = None) -> None:
        """Reference initial values: kaiming-uniform memory q/k/v, zero gate weights, beta bias
        ``beta_bias_init`` (lambda bias its negative), zero delta heads unless ``base_slice``."""
        d, g, cfg = self.read_dim, self.gate_dim, self.config
        for block in range(3):
            nn.init.kaiming_uniform_(self.memory_in_proj[block * d : (block + 1) * d], a=math.sqrt(5))
        self.memory_in_proj[3 * d :].zero_()
        self.gate_bias[:g].fill_(cfg.beta_bias_init)
        self.gate_bias[g:].fill_(-cfg.beta_bias_init)
        self.delta_out_proj.zero_()
        if cfg.delta_init == "base_slice":
            if base_weights is None:
                raise ValueError("delta_init='base_slice' needs the base projection weights")
            for head, block in self.delta_blocks().items():
                base = base_weights[head]
                width = min(cfg.rank, base.shape[1])
                sliced = F.normalize(base[:, :width].detach().float(), dim=0, eps=1e-6)
                block[:, :width].copy_(sliced * cfg.base_slice_gain)
        if self.delta_scale_raw is not None:
            self.delta_scale_raw.fill_(cfg.delta_scale_raw_init)
        if self.delta_o_norm_weight is not None:
            self.delta_o_norm_weight.fill_(1.0)

    def delta_blocks(self) -> dict[str, Tensor]:
        """Views of ``delta_out_proj``, one ``[out, D]`` block per active head."""
        return dict(zip(self.heads, torch.split(self.delta_out_proj, list(self.out_features.values())), strict=True))

    # -- projections ----------------------------------------------------------------------------
    def memory_inputs(self, hidden: Tensor) -> MemoryInputs:
        """Project ``[B, T, hidden]`` into scan inputs ``[B, H, T, r]`` (float32 or wider)."""
        cfg, d = self.config, self.read_dim
        batch, steps, _ = hidden.shape
        heads, rank = cfg.num_state_heads, cfg.rank
        packed = F.linear(hidden.to(self.memory_in_proj.dtype), self.memory_in_proj)
        compute_dtype = torch.promote_types(packed.dtype, torch.float32)
        packed = packed.to(compute_dtype)
        q, k, v = (packed[..., i * d : (i + 1) * d].reshape(batch, steps, heads, rank) for i in range(3))
        if cfg.normalize_qk:
            q = F.normalize(torch.tanh(q), dim=-1, eps=QK_NORM_EPS)
            k = F.normalize(torch.tanh(k), dim=-1, eps=QK_NORM_EPS)
        gates = write_gates(packed[..., 3 * d :], cfg, bias=self.gate_bias.to(compute_dtype))

        def rows(gate: Tensor) -> Tensor:  # [B, T, H, 1 or r] -> one value per state row
            return gate.expand(-1, -1, -1, rank)

        beta = rows(gates.beta)
        keep = torch.ones_like(beta) if gates.keep is None else rows(gates.keep)
        erase = beta if gates.erase is gates.beta else rows(gates.erase)

        def scan_layout(x: Tensor) -> Tensor:
            return x.transpose(1, 2)

        return MemoryInputs(*(scan_layout(x) for x in (q, k, v, keep, erase, beta, beta)))

    # -- read and write ---------------------------------------------------------------------------
    def plan(
        self, hidden: Tensor, state: Tensor | None = None, *, write: bool = True, segment_ids: Tensor | None = None
    ) -> DecodePlan:
        """`choose_plan` for a forward of ``hidden`` through this layer. The attention hook asks
        once per forward; `step` and `read_write` ask only where they are given no plan."""
        weight = self.memory_in_proj
        autograd = torch.is_grad_enabled() and (
            hidden.requires_grad
            or (state is not None and state.requires_grad)
            or any(p.requires_grad for p in self._parameters.values() if p is not None)
        )
        return choose_plan(
            self.config, tokens=hidden.shape[1], device=weight.device, dtype=weight.dtype, hidden_dtype=hidden.dtype,
            write=write, segments=segment_ids is not None, record_inputs=self._record_inputs, autograd=autograd,
        )

    def step(
        self,
        hidden: Tensor,
        state: Tensor,
        *,
        token_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        write: bool = True,
        plan: DecodePlan | None = None,
    ) -> MemoryStep:
        """`read_write` then `corrections`: one attention forward's memory work, as ``plan`` says
        (given by the attention hook; else asked of `plan`). A FUSED plan runs the C++ step
        (`deltamem_agents.ops.fused`), which computes the corrections too; should this layer's
        tensors not be CPU float32 after all (layers on several devices), the eager step runs."""
        if plan is None:
            plan = self.plan(hidden, state, write=write, segment_ids=segment_ids)
        if plan.kind is StepKind.FUSED:
            fused = self._fused_step(hidden, state, token_mask)
            if fused is not None:
                return fused
        reads, new_state, inputs = self._run(plan, hidden, state, token_mask, segment_ids)
        return MemoryStep(reads, new_state, inputs, self.corrections(reads))

    def _fused_step(self, hidden: Tensor, state: Tensor, token_mask: Tensor | None) -> MemoryStep | None:
        """The C++ decode step, or ``None`` where its tensors are not all CPU float32."""
        kernel = self.fused_kernel()
        if kernel is None:
            return None
        out = kernel(self.memory_in_proj, self.gate_bias, self.delta_out_proj, hidden, state, token_mask)
        if out is None:
            return None
        return MemoryStep(out[0], out[1], None, dict(zip(self.heads, out[2:])))

    def fused_kernel(self) -> Callable[..., tuple | None] | None:
        """The C++ step compiled for this layer's configuration, or ``None`` where it is switched
        off or did not build. For FUSED plans only: it has no trainable delta scale, o-norm or
        backward (`choose_plan` checks). Called as
        ``kernel(memory_in_proj, gate_bias, delta_out_proj, hidden, state, token_mask)``, it
        returns ``(reads, new_state, *corrections in head order)``, or ``None`` where the tensors
        are not all CPU float32."""
        return fused_decode_plan(self._fused_args)

    def read_write(
        self,
        hidden: Tensor,
        state: Tensor,
        *,
        token_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        write: bool = True,
        plan: DecodePlan | None = None,
    ) -> tuple[Tensor, Tensor, MemoryInputs | None]:
        """Read this pass's tokens from ``state`` and (if ``write``) return the updated state.

        ``hidden`` ``[B, T, hidden]``; ``state`` ``[B, H, r, r]``; ``token_mask`` ``[B, T]`` bool
        (False = padding: reads zero, no write); ``segment_ids`` ``[B, T]`` (SSW only; -1 = not
        part of any segment). Returns ``(reads [B, T, D], new_state, write_inputs)``. A FUSED
        plan runs the eager per-token step here (the C++ step also makes the corrections: `step`).
        """
        if plan is None:
            plan = self.plan(hidden, state, write=write, segment_ids=segment_ids)
        return self._run(plan, hidden, state, token_mask, segment_ids)

    def _run(
        self, plan: DecodePlan, hidden: Tensor, state: Tensor, token_mask: Tensor | None, segment_ids: Tensor | None
    ) -> tuple[Tensor, Tensor, MemoryInputs | None]:
        """`read_write` as ``plan`` says, deciding nothing."""
        kind = plan.kind
        if kind is StepKind.FUSED or kind is StepKind.RECURRENT:
            return self._decode_step(hidden, state, token_mask)
        inputs = self.memory_inputs(hidden)
        if kind is StepKind.SCAN:
            reads, new_state = delta_scan(
                inputs.q, inputs.k, inputs.v, inputs.keep, inputs.erase, inputs.write,
                mask=token_mask, initial_state=state, impl=plan.scan_impl,
            )
            return self._flatten_reads(reads), new_state, inputs
        reads = self._frozen_reads(state, inputs.q, token_mask)
        if kind is StepKind.READ_ONLY:
            return reads, state, inputs
        if segment_ids is None:
            raise ValueError("a SEGMENTS plan needs the forward's segment_ids")
        new_state, seg_inputs = self._segment_write(hidden, state, segment_ids, token_mask, plan.scan_impl)
        return reads, new_state, seg_inputs

    def _decode_step(self, hidden: Tensor, state: Tensor, token_mask: Tensor | None) -> tuple[Tensor, Tensor, None]:
        """One token per row: the same math as `memory_inputs` + the scan, in as few small
        ops as possible, because it runs once per layer for every generated token."""
        cfg, d = self.config, self.read_dim
        batch = hidden.shape[0]
        heads, rank = cfg.num_state_heads, cfg.rank
        weight = self.memory_in_proj
        x = hidden[:, 0]
        x = x if x.dtype == weight.dtype else x.to(weight.dtype)
        wide = weight.dtype in (torch.float32, torch.float64)
        # float32/64 weights: the gate biases ride along in the matmul (zeros for q/k/v rows)
        packed = F.linear(x, weight, self._packed_bias() if wide else None)
        if not wide:
            packed = packed.float()
        qk = packed[:, : 2 * d].view(batch, 2, heads, rank)
        if cfg.normalize_qk:  # F.normalize(tanh(.)), without its Python-level overhead
            qk = torch.tanh(qk)
            qk = qk / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(QK_NORM_EPS)
        qk = qk.transpose(1, 2)  # [B, H, 2, r]
        v = packed[:, 2 * d : 3 * d].view(batch, heads, rank)
        bias = None if wide else self.gate_bias.to(packed.dtype)
        gates = write_gates(packed[:, 3 * d :], cfg, bias=bias, one=self._one(packed))  # [B, H, r or 1]
        mask = None if token_mask is None else token_mask[:, 0]
        if state.dtype != packed.dtype:
            state = state.to(packed.dtype)
        read, new_state = delta_step_qk(qk, v, gates.keep, gates.erase, gates.beta, state, mask=mask)
        return read.reshape(batch, 1, d), new_state, None

    def _one(self, like: Tensor) -> Tensor:
        """A cached 0-dim ``1`` for ``1 - beta``: a Python ``1.0`` costs a scalar-tensor
        conversion per call, which matters 30 times per generated token."""
        return self._cached("one", (like.dtype, like.device), lambda: torch.ones((), dtype=like.dtype, device=like.device))

    def _packed_bias(self) -> Tensor:
        """``[0] * 3D + gate_bias``: the bias of the whole packed projection. Rebuilt only when
        the gate bias changed (or autograd must see it), as decoding calls this per token."""
        return self._derived("packed_bias", self.gate_bias, lambda bias: F.pad(bias, (3 * self.read_dim, 0)))

    def _scaled_delta_weight(self) -> Tensor:
        """``delta_out_proj * alpha / r``, so the corrections are one matmul of the raw reads."""
        return self._derived("scaled_delta", self.delta_out_proj, lambda weight: weight * self.config.scaling)

    def _derived(self, name: str, source: nn.Parameter, build: Callable[[Tensor], Tensor]) -> Tensor:
        """``build(source)``, cached while ``source`` is unchanged (same storage, same version)
        and autograd is off; with autograd on it is rebuilt in the graph every call, and so it is
        for weights created under ``torch.inference_mode()``, which keep no version counter."""
        if torch.is_grad_enabled() or source.is_inference():
            return build(source)
        key = (source._version, source.data_ptr(), source.dtype, source.device)
        return self._cached(name, key, lambda: build(source.detach()))

    def _cached(self, name: str, key: tuple, build: Callable[[], Tensor]) -> Tensor:
        """``build()``, kept under ``name`` until ``key`` changes; a plain attribute dict, not a
        buffer, so it never reaches the state dict."""
        cache: dict[str, tuple[tuple, Tensor]] = self.__dict__.setdefault("_derived_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable in either mode
                hit = cache[name] = (key, build())
        return hit[1]

    def _frozen_reads(self, state: Tensor, q: Tensor, token_mask: Tensor | None) -> Tensor:
        reads = torch.einsum("bhij,bhtj->bhti", state.to(q.dtype), q)
        if token_mask is not None:
            reads = reads * token_mask[:, None, :, None].to(reads.dtype)
        return self._flatten_reads(reads)

    @staticmethod
    def _flatten_reads(reads: Tensor) -> Tensor:
        """``[B, H, T, r]`` -> ``[B, T, H*r]``: the H head reads concatenated, no mixing."""
        batch, heads, steps, rank = reads.shape
        return reads.transpose(1, 2).reshape(batch, steps, heads * rank)

    def _segment_write(
        self, hidden: Tensor, state: Tensor, segment_ids: Tensor, token_mask: Tensor | None, impl: ScanImpl
    ) -> tuple[Tensor, MemoryInputs | None]:
        """SSW: mean-pool each segment's hidden states, then scan the segments like tokens
        (``impl`` as configured: `delta_scan` resolves it once the segment count is known)."""
        batch, steps, width = hidden.shape
        if segment_ids.shape != (batch, steps):
            raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)}, expected {(batch, steps)}")
        segment_ids = segment_ids.to(hidden.device)
        valid = segment_ids >= 0
        if token_mask is not None:
            valid = valid & token_mask
        if not bool(valid.any()):
            return state, None
        order = torch.unique(segment_ids[valid])  # sorted: segments are written in id order
        slot = torch.searchsorted(order, segment_ids.clamp_min(0))
        slot = torch.where(valid, slot, torch.full_like(slot, len(order)))  # extra slot = ignored
        sums = hidden.new_zeros(batch, len(order) + 1, width, dtype=torch.float32)
        sums.scatter_add_(1, slot.unsqueeze(-1).expand(-1, -1, width), hidden.float())
        counts = torch.zeros(batch, len(order) + 1, device=hidden.device, dtype=torch.float32)
        counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=torch.float32))
        sums, counts = sums[:, :-1], counts[:, :-1]
        means = (sums / counts.clamp_min(1.0).unsqueeze(-1)).to(hidden.dtype)
        seg_inputs = self.memory_inputs(means)
        _, new_state = delta_scan(
            seg_inputs.q, seg_inputs.k, seg_inputs.v, seg_inputs.keep, seg_inputs.erase, seg_inputs.write,
            mask=counts > 0, initial_state=state, impl=impl,
        )
        return new_state, seg_inputs

    # -- corrections --------------------------------------------------------------------------------
    def corrections(self, reads: Tensor) -> dict[str, Tensor]:
        """Turn reads ``[B, T, D]`` into per-head corrections ``[B, T, out]`` (one matmul)."""
        cfg = self.config
        weight = self._scaled_delta_weight()
        reads = reads if reads.dtype == weight.dtype else reads.to(weight.dtype)
        packed = F.linear(reads, weight)
        parts = torch.split(packed, list(self.out_features.values()), dim=-1)
        out: dict[str, Tensor] = {}
        for head, part in zip(self.heads, parts, strict=True):
            if self.delta_scale_raw is not None:
                part = part * self._scale(head)
            if head == "o" and self.delta_o_norm_weight is not None:
                part = F.rms_norm(part.float(), (part.shape[-1],), self.delta_o_norm_weight.float(), cfg.delta_o_rmsnorm_eps)
            out[head] = part
        return out

    def _scale(self, head: str) -> Tensor | float:
        if self.delta_scale_raw is None:
            return 1.0
        index = ALL_DELTA_HEADS.index(head) if self.delta_scale_raw.numel() > 1 else 0
        return torch.sigmoid(self.delta_scale_raw[index]) * self.config.delta_scale_max

    def new_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """An empty state ``[batch, H, r, r]`` (float32 or wider, like the scan)."""
        cfg = self.config
        dtype = torch.promote_types(self.memory_in_proj.dtype, torch.float32)
        return torch.zeros(batch_size, cfg.num_state_heads, cfg.rank, cfg.rank, device=device, dtype=dtype)
