"""Peak memory of one phase of a benchmark (a turn), and how much memory a machine has left.

CPU: the process's peak resident set size (``VmHWM``). Linux lets a process reset it (writing
``5`` to ``/proc/self/clear_refs``), so one process can measure the peak of each phase; where
that is not possible the peak since the process started is reported and ``resettable`` says so.
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only).
"""

from __future__ import annotations

import gc
import os
import resource
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
MEMINFO = Path("/proc/meminfo")


def _status_kib(field: str) -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float:
    """Resident memory of this process now (MiB); the peak so far where /proc is missing."""
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def available_mib() -> float | None:
    """Memory the kernel could still give processes (``MemAvailable``), if known."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """``reset()`` before a phase, ``peak_mib()`` after it: the phase's peak memory in MiB."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.resettable = self.device.type == "cuda" or self._can_clear_refs()

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "peak CUDA memory allocated by tensors (torch.cuda.max_memory_allocated), reset before each turn"
        if self.resettable:
            return "peak resident set size of the process (VmHWM), reset before each turn via /proc/self/clear_refs"
        return "peak resident set size since the process started (ru_maxrss; this kernel cannot reset it)"

    @staticmethod
    def _can_clear_refs() -> bool:
        return os.access(CLEAR_REFS, os.W_OK) and _status_kib("VmHWM") is not None

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            CLEAR_REFS.write_text("5")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        kib = _status_kib("VmHWM") if self.resettable else None
        return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024

    def current_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return rss_mib()
