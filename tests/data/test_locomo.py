import json
from pathlib import Path

import pytest

from deltamem_agents.data.locomo import LocomoFormatError, load_locomo

SAMPLE = {
    "sample_id": "conv-x",
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a cat called Miso."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Lovely! Here is mine.", "blip_caption": "a photo of a grey cat"},
        ],
        "session_2_date_time": "9:00 am on 9 May, 2023",
        "session_2": [{"speaker": "Ben", "dia_id": "D2:1", "text": "How is Miso?"}],
    },
    "qa": [
        {"question": "What is Ana's cat called?", "answer": "Miso", "evidence": ["D1:1"], "category": 4},
        {"question": "When did Ana adopt?", "answer": 2023, "evidence": ["D1:1"], "category": 2},
        {"question": "What did Ben adopt?", "evidence": ["D1:2"], "category": 5, "adversarial_answer": "a dog"},
    ],
}


def test_a_locomo_sample_becomes_a_conversation(tmp_path):
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([SAMPLE]))
    [conversation] = load_locomo(path)
    assert conversation.id == "locomo-conv-x"
    assert [t.role for t in conversation.turns] == ["user", "assistant", "assistant"]
    assert conversation.turns[0].content == "[1:56 pm on 8 May, 2023] Ana: I adopted a cat called Miso."
    assert "a photo of a grey cat" in conversation.turns[1].content
    assert conversation.turns[2].session == 2
    assert [(p.answer, p.evidence, p.category) for p in conversation.probes] == [("Miso", [0], "4"), ("2023", [0], "2")]
    with_adversarial = load_locomo(path, include_adversarial=True)[0]
    assert len(with_adversarial.probes) == 3


def test_a_file_that_is_not_locomo_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"qa": []}]))
    with pytest.raises(LocomoFormatError, match="sample_id"):
        load_locomo(path)
    path.write_text("{not json")
    with pytest.raises(LocomoFormatError, match="not JSON"):
        load_locomo(path)


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "locomo_dev5.json"


@pytest.mark.skipif(not SHARED.is_file(), reason="the shared LoCoMo sample is not next to this checkout")
def test_the_shared_locomo_sample_loads():
    conversations = load_locomo(SHARED)
    assert len(conversations) == 5
    for conversation in conversations:
        assert len(conversation.turns) > 100
        assert conversation.probes and all(p.category != "5" for p in conversation.probes)
        for probe in conversation.probes:
            assert all(0 <= i < len(conversation.turns) for i in probe.evidence)
