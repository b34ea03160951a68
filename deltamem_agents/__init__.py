"""deltamem-agents: δ-mem online associative memory for frozen Hugging Face LLMs."""

from deltamem_agents._version import __version__
from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.core.state import DeltaMemState, StateFileError
from deltamem_agents.model.adapters import AdapterError, load_adapter
from deltamem_agents.model.attach import DeltaMemHandle, attach_delta_mem

__all__ = [
    "AdapterError",
    "DeltaMemConfig",
    "DeltaMemHandle",
    "DeltaMemState",
    "StateFileError",
    "__version__",
    "attach_delta_mem",
    "load_adapter",
]
