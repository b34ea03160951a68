"""The free-chat check: the repeated-n-gram share of a reply, and the ratio its goal is stated on."""

import pytest

from deltamem_agents.eval import FreeReply, repeated_ngram_share, summarize_free
from deltamem_agents.eval.repetition import RATIO_GOAL, free_chat_markdown


def test_a_reply_that_never_repeats_scores_zero():
    assert repeated_ngram_share(list(range(40)), 4) == 0.0
    assert repeated_ngram_share(["the", "cat", "sat", "on", "the", "mat", "and", "then", "it", "slept"], 4) == 0.0


def test_a_loop_scores_near_one():
    loop = [5, 6, 7] * 50  # 150 tokens: 147 4-grams, 3 distinct
    assert repeated_ngram_share(loop, 4) == pytest.approx(144 / 147)
    assert repeated_ngram_share(loop, 4) > 0.95
    assert repeated_ngram_share([9] * 30, 4) == pytest.approx(26 / 27)


def test_a_partial_repeat_counts_only_the_repeated_grams():
    # a b c d e f, then a b c d again: 10 tokens, 7 4-grams, the last one (a b c d) seen before
    tokens = list("abcdef") + list("abcd")
    assert repeated_ngram_share(tokens, 4) == pytest.approx(1 / 7)


def test_n_longer_than_the_reply_scores_zero():
    assert repeated_ngram_share([1, 1, 1], 4) == 0.0
    assert repeated_ngram_share([], 4) == 0.0
    assert repeated_ngram_share([1, 1, 1, 1], 4) == 0.0  # one 4-gram: nothing before it


@pytest.mark.parametrize("n", [0, -1])
def test_n_below_one_is_refused(n):
    with pytest.raises(ValueError, match="n must be at least 1"):
        repeated_ngram_share([1, 2, 3], n)


def _reply(memory: str, share: float, tokens: int = 100, prompt: str = "p") -> FreeReply:
    return FreeReply(conversation="c", prompt=prompt, memory=memory, reply="x", tokens=tokens, repeated_share=share,
                     finish_reason="length")


def test_the_ratio_is_adapter_over_bare_and_the_goal_is_1_2():
    result = summarize_free([_reply("adapter", 0.2), _reply("bare", 0.1), _reply("adapter", 0.4, 50),
                             _reply("bare", 0.3, 70)], free_tokens=256)
    assert result.prompts == 2 and result.free_tokens == 256 and result.n == 4
    assert result.adapter_share == pytest.approx(0.3) and result.bare_share == pytest.approx(0.2)
    assert result.ratio == pytest.approx(1.5) and not result.met
    assert result.adapter_tokens == 75 and result.bare_tokens == 85
    assert len(result.replies) == 4
    assert RATIO_GOAL == 1.2
    assert summarize_free([_reply("adapter", 0.24), _reply("bare", 0.2)], free_tokens=8).met  # exactly 1.2
    assert summarize_free([_reply("adapter", 0.1), _reply("bare", 0.2)], free_tokens=8).ratio == pytest.approx(0.5)


def test_neither_repeating_is_ratio_one_and_only_the_adapter_repeating_misses():
    neither = summarize_free([_reply("adapter", 0.0), _reply("bare", 0.0)], free_tokens=8)
    assert neither.ratio == 1.0 and neither.met
    only_adapter = summarize_free([_reply("adapter", 0.5), _reply("bare", 0.0)], free_tokens=8)
    assert only_adapter.ratio is None and not only_adapter.met


def test_the_section_gives_both_shares_and_the_verdict():
    text = "\n".join(free_chat_markdown(summarize_free([_reply("adapter", 0.5), _reply("bare", 0.25)], free_tokens=64)))
    assert "## Free chat" in text
    assert "| adapter's state | 50.0 | 100 |" in text and "| bare backbone | 25.0 | 100 |" in text
    assert "Ratio adapter / bare: 2.00 (goal <= 1.2: missed)" in text
