"""What the growth benchmark measures: its conditions, the worker that measures each, the
settings (`GrowthConfig`) and one measured turn (`TurnMeasure`), shared by the parent and the
worker processes (the config crosses the process boundary as JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CONDITIONS", "SESSION", "USER", "WORKERS", "Condition", "GrowthConfig", "Status", "TurnMeasure"]

Condition = Literal["full", "full-cached", "delta-mem", "hybrid", "rag"]
CONDITIONS: tuple[Condition, ...] = ("full", "full-cached", "delta-mem", "hybrid", "rag")
#: which child process measures which conditions, in the order they run (the slow one last)
WORKERS: dict[str, tuple[Condition, ...]] = {
    "delta-mem": ("delta-mem",),
    "hybrid": ("hybrid",),
    "rag": ("rag",),
    "full": ("full", "full-cached"),
}
Status = Literal["ok", "does not fit", "out of memory", "failed"]
USER, SESSION = "bench", "growth"


class GrowthConfig(BaseModel):
    """What `run_growth_bench` measures."""

    model_config = ConfigDict(extra="forbid")

    backbone: str | None = Field(None, description="backbone name or path; None: the embedded SmolLM2")
    adapter: str | None = Field(None, description="δ-mem adapter folder; None: an untrained (seeded) δ-mem")
    sizes: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    conditions: tuple[Condition, ...] = CONDITIONS
    window: int = Field(1024, ge=16, description="recent-context window of delta-mem, hybrid and rag (tokens)")
    decode_tokens: int = Field(64, ge=1)
    turns: int = Field(3, ge=1, description="measured turns per size (median latency, max peak) for windowed conditions")
    full_turns: int = Field(1, ge=1, description="measured turns per size for full replay (each re-prefills everything)")
    device: str | None = None
    dtype: str | None = None
    isolate: bool = Field(True, description="one child process per worker (clean peak memory)")
    reopen: bool = Field(
        True, description="measure the windowed conditions in a fresh process that opens the grown memory from disk "
        "(needs isolate)",
    )
    memory_limit_mib: float | None = Field(
        None, description="most memory a turn may add to the loaded model; None: 90% of what the machine has free"
    )
    seed: int = 0

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be positive token counts, got {sizes}")
        return tuple(sorted(set(sizes)))

    def workers(self) -> list[str]:
        return [w for w, conds in WORKERS.items() if any(c in self.conditions for c in conds)]


class TurnMeasure(BaseModel):
    turn_ms: float
    prefill_ms: float
    decode_ms: float
    decode_tokens: int
    context_tokens: int
    prefill_tokens: int
    peak_mem_mib: float
    note: str = ""
