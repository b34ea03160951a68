"""`TrainConfig`: everything a training run depends on, saved next to its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltamem_agents.core.config import (
    ALL_DELTA_HEADS,
    DeltaHead,
    DeltaMemConfig,
    UpdateMode,
    WriteStrategy,
)


class TrainConfig(BaseModel):
    """A training run: the adapter to fit, the data, the objective and the optimiser."""

    model_config = ConfigDict(extra="forbid")

    # -- the adapter ---------------------------------------------------------------------------
    backbone: str | None = Field(None, description="backbone name or path; None: the embedded SmolLM2")
    backbone_name: str | None = Field(None, description="name recorded in the adapter (default: the backbone's)")
    write_strategy: WriteStrategy = "tsw"
    rank: int = Field(8, ge=1, le=256)
    num_state_heads: int | None = Field(None, ge=1, description="MSW heads (default 4 for msw, else 1)")
    layers: tuple[int, ...] | None = Field(None, description="decoder layers to attach to; None: all")
    delta_heads: tuple[DeltaHead, ...] = ALL_DELTA_HEADS
    delta_init: Literal["zero", "base_slice"] = "base_slice"
    state_update_mode: UpdateMode = Field(
        "no_lambda", description="no_lambda keeps what is not overwritten (no global decay), which a short "
        "training run needs to remember hundreds of tokens back",
    )
    beta_bias_init: float = Field(-3.0, description="initial write-gate bias: sigmoid(-3) = 0.05 per token")

    # -- data -----------------------------------------------------------------------------------
    data_dir: Path | None = Field(None, description="folder with train.jsonl/dev.jsonl; None: generate them")
    train_conversations: int = Field(4000, ge=1, description="generated training conversations (no data_dir)")
    dev_conversations: int = Field(8, ge=0)
    data_seed: int = 0
    window_tokens: int = Field(64, ge=0, description="recent history tokens kept in context while answering")
    max_history_tokens: int = Field(1536, ge=16, description="history tokens written into the state (the most recent)")
    max_read_tokens: int = Field(256, ge=16, description="most tokens of note + question + answer")
    prefill_chunk: int = Field(512, ge=1, description="history tokens per forward, as a session ingests them")
    snippet_share: float = Field(
        0.25, ge=0.0, le=1.0, description="share of probes answered with retrieved notes in context, as the hybrid does"
    )

    # -- objective and optimiser ---------------------------------------------------------------------
    history_grad: Literal["state", "full"] = Field(
        "state",
        description="state: the history forward runs without a graph and the state is re-derived from its "
        "hidden states with gradients (the loss reaches the writes, not the history's hidden states; no "
        "history activations are kept). full: the history forward keeps its whole graph (exact, memory "
        "grows with the history)",
    )
    contrast_weight: float = Field(
        0.0, ge=0.0, description="weight of the contrastive term: on probes without notes, the answer loss with "
        "another conversation's state (from the same batch) must exceed the loss with the conversation's own state "
        "by contrast_margin; 0 turns it off. It stops the adapter from scoring by answer format alone",
    )
    contrast_margin: float = Field(1.0, gt=0.0, description="nats the other-state loss must exceed the own-state loss by")
    preserve_weight: float = Field(
        0.0, ge=0.0, description="weight of the preservation term: KL from the bare backbone to the backbone with the "
        "adapter writing from an empty state, on generic prose (the standard library's module docstrings, never the "
        "perplexity check's text); 0 turns it off. It keeps the adapter from hurting text that is not a conversation",
    )
    preserve_tokens: int = Field(384, ge=16, description="tokens of generic prose per preservation chunk (one per step)")
    init_adapter: Path | None = Field(
        None, description="start from this adapter's weights (same δ-mem configuration) instead of a fresh initialisation"
    )
    steps: int = Field(1000, ge=1)
    batch: int = Field(2, ge=1, description="conversations per optimiser step (all their probes are used)")
    learning_rate: float = Field(2e-3, gt=0)
    warmup_share: float = Field(0.05, ge=0, lt=1)
    min_lr_share: float = Field(0.1, ge=0, le=1, description="the cosine schedule ends at this share of the peak")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0

    # -- running ------------------------------------------------------------------------------------
    device: str | None = None
    dtype: str | None = Field(None, description="float32, bfloat16...; default: by device")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    save_every: int = Field(50, ge=1)
    eval_every: int = Field(250, ge=1)
    keep_checkpoints: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        self.delta_mem_config()  # fails early on an impossible adapter
        if self.contrast_weight > 0 and self.batch < 2:
            raise ValueError("contrast_weight needs batch >= 2: the other conversation's state comes from the same batch")
        return self

    def delta_mem_config(self) -> DeltaMemConfig:
        heads = self.num_state_heads or (4 if self.write_strategy == "msw" else 1)
        return DeltaMemConfig(
            rank=self.rank,
            write_strategy=self.write_strategy,
            num_state_heads=heads,
            delta_heads=self.delta_heads,
            target_layers=self.layers,
            delta_init=self.delta_init,
            state_update_mode=self.state_update_mode,
            beta_bias_init=self.beta_bias_init,
        )
