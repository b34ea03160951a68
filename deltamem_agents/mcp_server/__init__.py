"""The memory over the Model Context Protocol (`deltamem mcp`): tools remember, recall, forget,
list_sessions, session_stats, the memory verbs (add_memory, get_memory, list_memories,
search_memories, update_memory, delete_memory, memory_history, reset_memories) and the session log
resource.

The top layer: it uses `deltamem_agents.memory` and `deltamem_agents.session`, and nothing below
imports it. The `mcp` SDK is an optional extra (``pip install 'deltamem-agents[mcp]'``), imported
only when a server is built.
"""

from deltamem_agents.mcp_server.app import INSTALL_HINT, build_mcp_server, require_mcp
from deltamem_agents.mcp_server.service import LOG_URI, MemoryService

__all__ = ["INSTALL_HINT", "LOG_URI", "MemoryService", "build_mcp_server", "require_mcp"]
