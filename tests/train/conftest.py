import pytest

from deltamem_agents.data import GeneratorConfig, generate_conversations
from tests.tiny_models import tiny_model

SMALL = GeneratorConfig(sessions=(2, 2), facts=(1, 1), preferences=(1, 1), instructions=(1, 1), task_updates=(1, 1),
                        filler_per_session=(1, 1), tail_exchanges=2, fact_probes=1, preference_probes=1)


@pytest.fixture
def small_conversations():
    return generate_conversations("train", 4, config=SMALL), generate_conversations("dev", 1, config=SMALL)


@pytest.fixture
def tiny_chat_model(chat_tokenizer):
    return tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=2048)
