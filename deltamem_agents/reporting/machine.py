"""Where numbers were measured, written into every report that has numbers, so that reports
from different machines (or from one machine busy with other work) stay comparable."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["machine_info"]


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Platform, CPUs, torch and the device (its name and CUDA version on a GPU)."""
    import torch  # here, so that a report reader (the load-test client) need not import it

    device = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        # 1/5/15-minute load averages: a machine shared with other work shows it here
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
