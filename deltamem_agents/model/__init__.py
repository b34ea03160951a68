"""Attaching δ-mem to Hugging Face causal LMs (wrappers, hooks, handle, adapter files)."""
