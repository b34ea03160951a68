import pytest

from deltamem_agents.data import vocab
from deltamem_agents.data.records import Rule
from deltamem_agents.data.synthetic import reference_reply
from deltamem_agents.eval.metrics import (
    answer_recall,
    check_rule,
    detect_language,
    exact_match,
    normalize,
    token_f1,
)


def test_answers_are_compared_after_normalisation():
    assert normalize("The  Green-Tea!") == "green tea"
    assert exact_match("green tea.", "Green tea") == 1.0
    assert token_f1("green tea", "green tea") == 1.0
    assert token_f1("I love green tea", "green tea") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("coffee", "green tea") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "tea") == 0.0
    assert answer_recall("It is Porto, I think", "Porto") == 1.0
    assert answer_recall("Lisbon", "Porto") == 0.0


@pytest.mark.parametrize("language", ["English", *vocab.LANGUAGES])
def test_every_canned_reply_is_recognised_in_its_language(language):
    for _, replies in vocab.REQUESTS:
        assert detect_language(replies[language]) == language, replies[language]


def test_rules():
    assert check_rule("Good morning, Captain!", Rule(kind="nickname", value="Captain"))
    assert not check_rule("Good morning, Captainship!", Rule(kind="nickname", value="Captain"))
    assert check_rule("Bonjour, bonne journée à toi !", Rule(kind="language", value="French"))
    assert not check_rule("Good morning to you!", Rule(kind="language", value="French"))
    assert check_rule("Short and sweet.", Rule(kind="max_words", value="10"))
    assert not check_rule("one two three four five six seven eight nine ten", Rule(kind="max_words", value="10"))
    assert not check_rule("", Rule(kind="max_words", value="10"))
    assert detect_language("12345") is None


def test_reference_replies_follow_every_rule_at_once():
    rules = [Rule(kind="nickname", value="Doc"), Rule(kind="language", value="Spanish"), Rule(kind="max_words", value="12")]
    for _, replies in vocab.REQUESTS:
        reply = reference_reply(replies, rules)
        assert all(check_rule(reply, rule) for rule in rules), reply
