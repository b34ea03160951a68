"""The fused CPU decode step (``csrc/decode_step.cpp``): built on first use, else eager.

Decoding calls δ-mem once per layer for every generated token, and in eager PyTorch that
costs ~30 operator dispatches on vectors of rank-many numbers: on a CPU, more time than the
arithmetic by far. The C++ step does the same math in one loop per batch row. It is
compiled with the machine's C++ compiler the first time it is needed (torch's JIT extension
builder, cached under ``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).

``$DELTAMEM_FUSED_DECODE`` chooses: ``auto`` (default: use it when it builds, else eager
PyTorch with one warning), ``off`` (always eager), ``require`` (a failed build is an error).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "FUSED_DECODE_ENV",
    "FUSED_MAX_READ_DIM",
    "fused_decode_mode",
    "fused_decode_plan",
    "fused_decode_status",
    "fused_decode_unavailable",
    "load_fused_decode",
]

logger = logging.getLogger(__name__)

FUSED_DECODE_ENV = "DELTAMEM_FUSED_DECODE"
#: the widest read (heads x rank) the C++ step takes: its scratch buffer
FUSED_MAX_READ_DIM = 512
_MODES = ("auto", "off", "require")
_SOURCE = Path(__file__).with_name("csrc") / "decode_step.cpp"

_lock = threading.Lock()
_module: ModuleType | None = None
_failure: str | None = None
_parsed_modes: dict[str | None, str] = {}
_plans: dict[tuple, Any] = {}  # one compiled-step object per layer configuration


def fused_decode_mode() -> str:
    """The mode ``$DELTAMEM_FUSED_DECODE`` asks for (read on every call, so it can be changed
    at run time; the parsed value is memoised per raw string, as decoding asks per layer)."""
    raw = os.environ.get(FUSED_DECODE_ENV)
    mode = _parsed_modes.get(raw)
    if mode is None:
        mode = (raw or "").strip().lower() or "auto"
        if mode not in _MODES:
            raise ValueError(f"{FUSED_DECODE_ENV}={mode!r} is not one of {', '.join(_MODES)}")
        _parsed_modes[raw] = mode
    return mode


def load_fused_decode() -> ModuleType | None:
    """The compiled extension, or ``None`` where it is switched off or cannot be built."""
    mode = fused_decode_mode()
    if mode == "off":
        return None
    if _module is not None:
        return _module
    if _failure is not None and mode == "auto":
        return None
    return _build(mode)


def fused_decode_plan(config: tuple) -> Any | None:
    """The fused step for one layer configuration ``(heads, rank, gates_per_head, normalize_qk,
    couple_lambda, update_mode_code, eps, scaling, split_sizes)``, or ``None`` (use eager).

    Calling it with ``(memory_in_proj, gate_bias, delta_out_proj, hidden, state, token_mask)``
    returns ``(reads, new_state, *corrections)``, or ``None`` where the tensors are not all CPU
    float32. Plans live here, not on the layer: they are not picklable, layers must stay so.
    """
    module = load_fused_decode()
    if module is None:
        return None
    plan = _plans.get(config)
    if plan is None or plan[0] is not module:
        heads, rank, gates, normalize, coupled, mode, eps, scaling, split_sizes = config
        plan = _plans[config] = (
            module, module.DecodeStep(heads, rank, gates, normalize, coupled, mode, eps, scaling, list(split_sizes))
        )
    return plan[1]


def fused_decode_unavailable() -> str | None:
    """Why the fused step cannot run right now (switched off, did not build), or ``None`` where
    it can. Builds it on first use; under ``require`` a failed build raises."""
    if fused_decode_mode() == "off":
        return f"{FUSED_DECODE_ENV}=off"
    if load_fused_decode() is None:
        return f"the fused step did not build: {_failure}"
    return None


def fused_decode_status() -> str:
    """``fused`` or ``eager (why)``: what decoding on a CPU in float32 uses right now."""
    why = fused_decode_unavailable()
    return "fused" if why is None else f"eager ({why})"


def _build(mode: str) -> ModuleType | None:
    global _module, _failure
    with _lock:
        if _module is not None:
            return _module
        source = _SOURCE.read_bytes()
        # the source's hash in the name: an edited kernel never loads a stale build
        name = "deltamem_decode_" + hashlib.sha256(source).hexdigest()[:12]
        logger.info("building δ-mem's fused CPU decode step (once per machine, ~30 s)")
        try:
            from torch.utils.cpp_extension import load

            _module = load(name=name, sources=[str(_SOURCE)], extra_cflags=["-O3"], verbose=False)
            _failure = None
        except Exception as exc:  # no compiler, no Python headers, ...: decode stays eager
            _failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}"
            if mode == "require":
                raise RuntimeError(
                    f"{FUSED_DECODE_ENV}=require, but the fused decode step did not build: {_failure}"
                ) from exc
            logger.warning(
                "δ-mem decodes with eager PyTorch (slower on CPU): the fused decode step did not "
                "build (%s). Set %s=off to skip the attempt.", _failure, FUSED_DECODE_ENV,
            )
        return _module
