"""`DeltaMemState`: the online memory of every attached layer, for every batch row.

A state is plain data (one float32 tensor ``[batch, heads, rank, rank]`` per layer index) so it
can be saved, moved between devices, split per batch row or stacked into a batch without the
model. Files are safetensors with string metadata; nothing is pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from deltamem_agents.errors import UserError
from deltamem_agents.fileio import atomic_write_bytes

STATE_FORMAT = "deltamem-state"
STATE_FORMAT_VERSION = "1"


class StateFileError(UserError, ValueError):
    """A state file is missing, corrupt, or does not describe a δ-mem state."""



class DeltaMemState:
    """Per-layer OSAM states; shapes ``[batch, heads, rank, rank]``, one entry per layer."""

    def __init__(self, layers: Mapping[int, torch.Tensor], metadata: Mapping[str, str] | None = None):
        shapes = {tuple(t.shape) for t in layers.values()}
        if any(len(s) != 4 or s[-1] != s[-2] for s in shapes):
            raise ValueError(f"state tensors must be [batch, heads, rank, rank], got {sorted(shapes)}")
        if len(shapes) > 1:
            raise ValueError(f"all layers of a state must share one shape, got {sorted(shapes)}")
        self.layers: dict[int, torch.Tensor] = {int(i): t for i, t in sorted(layers.items())}
        self.metadata: dict[str, str] = dict(metadata or {})

    # -- shape -----------------------------------------------------------------------------
    @property
    def _shape(self) -> tuple[int, ...]:
        if not self.layers:
            raise ValueError("the state is empty (no layer has been written yet)")
        return tuple(next(iter(self.layers.values())).shape)

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def num_heads(self) -> int:
        return self._shape[1]

    @property
    def rank(self) -> int:
        return self._shape[2]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        if not self.layers:
            return "DeltaMemState(empty)"
        return (
            f"DeltaMemState(layers={len(self.layers)}, batch={self.batch_size}, "
            f"heads={self.num_heads}, rank={self.rank})"
        )

    # -- functional helpers ------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DeltaMemState:
        return DeltaMemState({i: t.to(device=device, dtype=dtype) for i, t in self.layers.items()}, self.metadata)

    def clone(self) -> DeltaMemState:
        """A detached copy: later writes or backward passes never touch it."""
        return DeltaMemState({i: t.detach().clone() for i, t in self.layers.items()}, self.metadata)

    def select(self, rows: int | Iterable[int]) -> DeltaMemState:
        """Keep some batch rows (e.g. one session out of a batch)."""
        index = [rows] if isinstance(rows, int) else list(rows)
        return DeltaMemState({i: t[index] for i, t in self.layers.items()}, self.metadata)

    @classmethod
    def concat(cls, states: Iterable[DeltaMemState]) -> DeltaMemState:
        """Stack several states along the batch axis (one row per session)."""
        states = list(states)
        if not states:
            raise ValueError("concat needs at least one state")
        keys = [tuple(s.layers) for s in states]
        if any(k != keys[0] for k in keys):
            raise ValueError("states to concatenate must cover the same layers")
        return cls({i: torch.cat([s.layers[i] for s in states]) for i in keys[0]}, states[0].metadata)

    def norms(self) -> dict[int, float]:
        """Frobenius norm per layer, summed over rows and heads: a quick 'is anything stored'."""
        return {i: float(t.detach().float().norm()) for i, t in self.layers.items()}

    def equal(self, other: DeltaMemState) -> bool:
        return self.layers.keys() == other.layers.keys() and all(
            torch.equal(t, other.layers[i]) for i, t in self.layers.items()
        )

    # -- files -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return save(self._tensors(), metadata=self._file_metadata())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically as safetensors; returns the path written."""
        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> DeltaMemState:
        path = Path(path)
        if not path.is_file():
            raise StateFileError(f"no state file at {path}")
        try:
            tensors = load_file(str(path), device=str(device))
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise StateFileError(f"{path} is not a readable safetensors state file: {exc}") from exc
        return cls._from_tensors(tensors, metadata, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device | str = "cpu") -> DeltaMemState:
        from safetensors.torch import load

        try:
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        except (SafetensorError, ValueError) as exc:
            raise StateFileError(f"bytes are not a safetensors state: {exc}") from exc
        return cls._from_tensors({k: v.to(device) for k, v in tensors.items()}, metadata, source="bytes")

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"layer.{i}": t.detach().to("cpu").contiguous() for i, t in self.layers.items()}

    def _file_metadata(self) -> dict[str, str]:
        meta = {k: str(v) for k, v in self.metadata.items()}
        meta.update(format=STATE_FORMAT, format_version=STATE_FORMAT_VERSION)
        return meta

    @classmethod
    def _from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *, source: str) -> DeltaMemState:
        if metadata.get("format") != STATE_FORMAT:
            raise StateFileError(f"{source} is not a δ-mem state (format={metadata.get('format')!r})")
        if metadata.get("format_version") != STATE_FORMAT_VERSION:
            raise StateFileError(
                f"{source} has state format version {metadata.get('format_version')!r}; "
                f"this version reads {STATE_FORMAT_VERSION!r}"
            )
        layers: dict[int, torch.Tensor] = {}
        for key, tensor in tensors.items():
            prefix, _, index = key.partition(".")
            if prefix != "layer" or not index.isdigit():
                raise StateFileError(f"{source} has an unexpected tensor {key!r}")
            layers[int(index)] = tensor
        user_meta = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
        try:
            return cls(layers, user_meta)
        except ValueError as exc:
            raise StateFileError(f"{source}: {exc}") from exc
