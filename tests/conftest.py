import os
from pathlib import Path

import pytest
import torch

# Nothing may download from a model hub: every test runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One converted copy of the embedded backbone per checkout (gitignored), shared by the tests
# and the CLI processes they start, so the ~20 s GGUF conversion happens once.
os.environ.setdefault("DELTAMEM_CACHE", str(Path(__file__).resolve().parents[1] / ".test-cache"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded backbone and its tokenizer (converted once, then cached)."""
    from deltamem_agents.model.backbone import load_backbone

    return load_backbone(device="cpu", dtype=torch.float32, progress=False)


@pytest.fixture(scope="session")
def chat_tokenizer(smollm2):
    """The SmolLM2 tokenizer (ChatML template), for tiny models that need a real one."""
    return smollm2[1]
