"""`DeltaMemConfig`: every knob of the δ-mem engine, validated once.

Defaults follow the reference implementation (declare-lab/delta-Mem, ``HFDeltaMemConfig``):
rank 8, alpha 16, rank-wise gates, coupled lambda, ``standard`` update, zero-initialised delta
heads on q, k, v and o. The write strategy names the paper's three variants.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DeltaHead = Literal["q", "k", "v", "o"]
ALL_DELTA_HEADS: tuple[DeltaHead, ...] = ("q", "k", "v", "o")
WriteStrategy = Literal["tsw", "ssw", "msw"]
UpdateMode = Literal["standard", "lambda_outside", "no_lambda"]

#: number of state heads an MSW config gets when none is given (the reference scripts use 4)
DEFAULT_MSW_HEADS = 4


class DeltaMemConfig(BaseModel):
    """Configuration of a δ-mem adapter; immutable so a handle's config cannot drift."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(8, ge=1, le=256, description="r: each state is r x r")
    alpha: float = Field(16.0, gt=0, description="corrections are scaled by alpha / rank")
    write_strategy: WriteStrategy = Field(
        "tsw",
        description="tsw: every token writes; ssw: one write per segment (mean of its hidden "
        "states); msw: token writes into several state heads",
    )
    num_state_heads: int = Field(1, ge=1, le=64, description="H states per layer (MSW)")
    segment_granularity: Literal["message", "sentence"] = Field(
        "message", description="what one SSW write covers"
    )
    rankwise_gates: bool = Field(True, description="one gate per state row (else one scalar)")
    couple_lambda: bool = Field(True, description="lambda = 1 - beta (else its own gate)")
    state_update_mode: UpdateMode = "standard"
    beta_bias_init: float = -1.5
    normalize_qk: bool = Field(True, description="tanh + L2 normalisation of memory q and k")
    delta_heads: tuple[DeltaHead, ...] = Field(
        ALL_DELTA_HEADS, description="which attention projections receive corrections"
    )
    target_layers: tuple[int, ...] | None = Field(
        None, description="decoder layer indices to attach to; None attaches to all"
    )
    delta_init: Literal["zero", "base_slice"] = Field(
        "zero",
        description="zero leaves the backbone exactly unchanged; base_slice starts from the "
        "first r columns of the base weight (column-normalised, times base_slice_gain), as the "
        "reference training scripts do",
    )
    base_slice_gain: float = Field(0.05, gt=0)
    trainable_delta_scale: bool = Field(
        False, description="s = scale_max * sigmoid(raw) multiplies the corrections"
    )
    delta_scale_init: float = Field(1.0, gt=0)
    delta_scale_max: float = Field(2.0, gt=0)
    delta_scale_granularity: Literal["layer", "head"] = "layer"
    delta_o_rmsnorm: bool = False
    delta_o_rmsnorm_eps: float = Field(1e-6, gt=0)
    scan_impl: Literal["auto", "naive", "chunk"] = Field(
        "auto", description="which scan runs prefill; all give the same result"
    )

    @model_validator(mode="before")
    @classmethod
    def _msw_defaults_to_several_heads(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("write_strategy") == "msw":
            data = dict(data)
            data.setdefault("num_state_heads", DEFAULT_MSW_HEADS)
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> DeltaMemConfig:
        if self.write_strategy == "tsw" and self.num_state_heads != 1:
            raise ValueError(
                f"write_strategy='tsw' uses one state head, got num_state_heads="
                f"{self.num_state_heads}; use write_strategy='msw' for several heads"
            )
        if self.write_strategy == "msw" and self.num_state_heads < 2:
            raise ValueError("write_strategy='msw' needs num_state_heads >= 2")
        if not self.delta_heads:
            raise ValueError("delta_heads is empty: name at least one of 'q', 'k', 'v', 'o'")
        if len(set(self.delta_heads)) != len(self.delta_heads):
            raise ValueError(f"delta_heads has duplicates: {self.delta_heads}")
        if self.delta_scale_init >= self.delta_scale_max:
            raise ValueError("delta_scale_init must be smaller than delta_scale_max")
        if self.target_layers is not None and any(i < 0 for i in self.target_layers):
            raise ValueError(f"target_layers must be non-negative, got {self.target_layers}")
        return self

    @property
    def read_dim(self) -> int:
        """Width of one token's read: the H head reads concatenated."""
        return self.rank * self.num_state_heads

    @property
    def gates_per_head(self) -> int:
        return self.rank if self.rankwise_gates else 1

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def delta_scale_raw_init(self) -> float:
        """Inverse of ``scale_max * sigmoid(raw)`` at ``delta_scale_init``."""
        p = min(max(self.delta_scale_init / self.delta_scale_max, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))

    def ordered_delta_heads(self) -> tuple[DeltaHead, ...]:
        """Active heads in the canonical q, k, v, o order (packing order of the weights)."""
        return tuple(h for h in ALL_DELTA_HEADS if h in self.delta_heads)
