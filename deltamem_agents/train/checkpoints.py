"""Resumable checkpoints: adapter weights, optimiser state and where the run stood.

A checkpoint is a folder ``checkpoints/step-000050/`` holding the adapter (our adapter format),
``optimizer.pt`` (tensors and numbers only, read back with ``weights_only=True``) and
``trainer.json``. It is written to a temporary folder and renamed, so a run killed while saving
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from deltamem_agents.model.adapters import read_adapter, save_adapter

OPTIMIZER_FILE = "optimizer.pt"
TRAINER_FILE = "trainer.json"


class TrainerState(BaseModel):
    """Where a run stood at a checkpoint."""

    model_config = ConfigDict(extra="forbid")

    step: int
    elapsed_s: float
    tokens: int


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}"


def save_checkpoint(out: Path, handle: Any, optimizer: torch.optim.Optimizer, state: TrainerState, *,
                    backbone_name: str | None, keep: int) -> Path:
    final = checkpoint_dir(out, state.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(handle, tmp, backbone_name=backbone_name)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / TRAINER_FILE).write_text(state.model_dump_json(indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_FILE).is_file())


def load_checkpoint(path: Path, handle: Any, optimizer: torch.optim.Optimizer) -> TrainerState:
    """Put a checkpoint's weights and optimiser state back; returns where the run stood."""
    from deltamem_agents.model.adapters import load_weights

    _, tensors = read_adapter(path)
    load_weights(handle, tensors, source=str(path))
    optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    return TrainerState.model_validate_json((path / TRAINER_FILE).read_text())
