"""Differences between the transformers releases we support (4.56 and later, 5.x included).

transformers 5.x renamed the KV-cache argument and output field ``past_key_values`` to
``cache``, and ``is_gradient_checkpointing`` to ``is_activation_checkpointing``, and warns on
the old names. The rest of the package calls through these helpers so
that it stays silent and works on both.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

from torch import nn


@lru_cache(maxsize=None)
def _cache_argument(forward_owner: type) -> str:
    parameters = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword that hands a KV cache to ``model``'s forward, for this transformers release."""
    return {_cache_argument(type(model)): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache`` on 5.x, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def activation_checkpointing(model: nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is on; 5.x renamed the flag and warns on the old one."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))
