"""`write_gates`: the delta rule's gates from the gate logits, defined once.

Both Python paths call it: `DeltaMemoryLayer.memory_inputs` (scans: prefill, SSW segments,
recorded statistics) and `DeltaMemoryLayer._decode_step` (the eager per-token step). The fused
C++ step (``deltamem_agents/ops/csrc/decode_step.cpp``, ``decode_row``) mirrors it, and
``tests/ops/test_fused_decode.py`` checks that all three agree.

Per state row ``i``, with ``beta = sigmoid(beta logit + bias)`` (the write gate)::

    standard        keep = lambda   erase = beta            write = beta
    lambda_outside  keep = lambda   erase = lambda * beta   write = beta
    no_lambda       keep = 1        erase = beta            write = beta

where ``lambda = 1 - beta`` (coupled) or ``sigmoid(lambda logit + bias)`` (uncoupled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deltamem_agents.core.config import DeltaMemConfig

__all__ = ["Gates", "write_gates"]


@dataclass(frozen=True)
class Gates:
    """One forward's gates, per head ``[..., H, gates_per_head]`` (1 or r gates per head)."""

    beta: Tensor  # the write gate, also the write coefficient
    keep: Tensor | None  # lambda; None for ``no_lambda`` (keep everything, no multiply by ones)
    erase: Tensor  # ``beta`` itself (the same object) where erase and write are equal


def write_gates(
    logits: Tensor, config: DeltaMemConfig, *, bias: Tensor | None = None, one: Tensor | float = 1.0
) -> Gates:
    """Gates from ``logits [..., G]`` (beta) or ``[..., 2G]`` (beta, then lambda when uncoupled).

    ``bias`` (``gate_bias``) is added first, unless it already rode along in the projection's
    matmul. ``one`` is the ``1`` of ``1 - beta``: the per-token step passes a cached 0-dim
    tensor, as a Python float costs a scalar conversion per call.
    """
    if bias is not None:
        logits = logits + bias
    gates = torch.sigmoid(logits)
    gates = gates.reshape(*gates.shape[:-1], -1, config.num_state_heads, config.gates_per_head)
    beta = gates.select(-3, 0)
    if config.state_update_mode == "no_lambda":
        return Gates(beta, None, beta)
    lam = torch.rsub(beta, one) if config.couple_lambda else gates.select(-3, 1)
    erase = lam * beta if config.state_update_mode == "lambda_outside" else beta
    return Gates(beta, lam, erase)
