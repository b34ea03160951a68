"""Framework-free pieces of δ-mem: configuration, the per-layer memory module, the state.

Nothing here imports Hugging Face; ``deltamem_agents.model`` attaches these to real models.
"""
