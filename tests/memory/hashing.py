"""A real (if crude) Chroma embedding function for text-log tests that do not need meaning."""

from __future__ import annotations

import hashlib

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings


class HashingEmbedding(EmbeddingFunction[Documents]):
    """Hashed bag of words, 64 dims, unit length: fast and deterministic."""

    def __init__(self) -> None:
        pass

    @staticmethod
    def name() -> str:
        return "test-hashing-bow"

    def get_config(self) -> dict:
        return {}

    @staticmethod
    def build_from_config(config: dict) -> HashingEmbedding:
        return HashingEmbedding()

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's parameter name
        out = []
        for text in input:
            v = np.zeros(64, dtype=np.float32)
            for word in text.lower().split():
                v[int(hashlib.md5(word.strip(".,!?").encode()).hexdigest(), 16) % 64] += 1.0
            out.append(v / max(np.linalg.norm(v), 1e-9))
        return out
