"""A second process for test_store: opens a `DeltaMemStore` on a session folder and an on-disk
Chroma log, on the same seeded tiny model the test process builds, and writes or reads an item.

    python -m tests.integrations.langchain.store_process ROOT put NAMESPACE_JSON KEY VALUE_JSON
    python -m tests.integrations.langchain.store_process ROOT get NAMESPACE_JSON KEY   (prints the value's JSON)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from langchain_deltamem.store import DeltaMemStore
from tests.tiny_models import tiny_runtime


def open_store(root: Path, tokenizer: Any) -> DeltaMemStore:
    """The store on ``root/sessions`` and ``root/textlog``: the same tiny model (seeded) in every
    process, so the sessions' fingerprints match."""
    runtime = tiny_runtime(tokenizer, root / "sessions")
    log = TextLog(TextLogConfig(path=root / "textlog"))
    return DeltaMemStore(HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()])))


def main(argv: list[str]) -> None:
    import torch

    from deltamem_agents.model.backbone import load_backbone

    root, action, namespace, key = Path(argv[0]), argv[1], tuple(json.loads(argv[2])), argv[3]
    tokenizer = load_backbone(device="cpu", dtype=torch.float32, progress=False)[1]
    store = open_store(root, tokenizer)
    if action == "put":
        store.put(namespace, key, json.loads(argv[4]))
        print("stored")
    else:
        item = store.get(namespace, key)
        print(json.dumps(None if item is None else item.value))
    store.textlog.close()


if __name__ == "__main__":
    main(sys.argv[1:])
