"""The embedding model is loaded once per process, even when many threads ask at once."""

from __future__ import annotations

import threading

from deltamem_agents.memory import embeddings


def test_concurrent_first_loads_share_one_model():
    folder = str(embeddings.default_model_dir())
    embeddings._load_once.cache_clear()
    start = threading.Barrier(4)
    loaded: list[tuple] = []

    def load() -> None:
        start.wait()
        loaded.append(embeddings._load(folder, "cpu"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 4 and all(pair[1] is loaded[0][1] for pair in loaded)
    assert embeddings._load_once.cache_info().misses == 1
