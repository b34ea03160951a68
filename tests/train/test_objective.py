import pytest
import torch
from transformers import DynamicCache

from deltamem_agents import DeltaMemConfig, attach_delta_mem
from deltamem_agents.train.episodes import EpisodeBuilder, ReadExample
from deltamem_agents.train.objective import (
    contrast_loss,
    preservation_loss,
    score_answers,
    token_chunks,
    write_history,
)
from tests.tiny_models import randomize_memory


def _episode(tokenizer, conversation, window=24, granularity="message"):
    builder = EpisodeBuilder(tokenizer, window_tokens=window, max_history_tokens=4096, max_read_tokens=256, granularity=granularity)
    return builder.build(conversation)


@pytest.mark.parametrize("strategy", ["tsw", "ssw", "msw"])
def test_the_state_path_rederives_exactly_the_state_inference_writes(chat_tokenizer, tiny_chat_model, small_conversations, strategy):
    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig(write_strategy=strategy))
    randomize_memory(handle)
    episode = _episode(chat_tokenizer, small_conversations[0][0])
    states = write_history(model, handle, episode.history_ids, episode.history_segments, prefill_chunk=50)
    # what a session computes: chunks of 50 on a KV cache, writing, no graph
    handle.reset_state()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        for start in range(0, len(episode.history_ids), 50):
            ids = torch.tensor([episode.history_ids[start : start + 50]])
            seg = torch.tensor([episode.history_segments[start : start + 50]]) if strategy == "ssw" else None
            with handle.segments(seg):
                model.model(input_ids=ids, past_key_values=cache, use_cache=True)
    expected = handle.get_state().layers
    handle.reset_state()
    assert set(states) == set(expected)
    for index in expected:
        assert states[index].requires_grad
        torch.testing.assert_close(states[index].detach(), expected[index], atol=1e-5, rtol=1e-5)


def test_probes_sharing_the_window_score_as_if_each_had_its_own(chat_tokenizer, tiny_chat_model, small_conversations):
    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    episode = _episode(chat_tokenizer, small_conversations[0][1])
    states = write_history(model, handle, episode.history_ids, episode.history_segments)
    scores = score_answers(model, handle, states, episode.window_ids, episode.reads, pad_id=0)
    shared, tokens = scores.mean(), scores.tokens
    total, count = 0.0, 0
    for read in episode.reads:
        alone = ReadExample(episode.window_ids + read.ids, [-100] * len(episode.window_ids) + read.labels, read.probe)
        scores = score_answers(model, handle, states, [], [alone], pad_id=0)
        loss, n = scores.mean(), scores.tokens
        total, count = total + float(loss.detach()) * n, count + n
    assert tokens == count == sum(sum(label != -100 for label in r.labels) for r in episode.reads)
    assert float(shared.detach()) == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("history_grad", ["state", "full"])
def test_gradients_reach_the_writes_and_never_the_backbone(chat_tokenizer, tiny_chat_model, small_conversations, history_grad):
    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig(delta_init="base_slice"))
    params = list(handle.parameters())
    for p in params:
        p.requires_grad_(True)
    episode = _episode(chat_tokenizer, small_conversations[0][2])
    states = write_history(model, handle, episode.history_ids, episode.history_segments, history_grad=history_grad)
    loss = score_answers(model, handle, states, episode.window_ids, episode.reads, pad_id=0).mean()
    loss.backward()
    d = handle.config.read_dim
    for layer in handle.layers.values():
        grad = layer.memory.memory_in_proj.grad
        assert grad is not None
        assert grad[d : 2 * d].abs().sum() > 0  # memory keys: only the writes use them here
        assert grad[2 * d : 3 * d].abs().sum() > 0  # memory values
        assert grad[3 * d :].abs().sum() > 0  # write gates
    ours = {id(p) for p in params}
    assert all(p.grad is None for p in model.parameters() if id(p) not in ours)


def test_an_empty_memory_scores_like_the_bare_backbone(chat_tokenizer, tiny_chat_model, small_conversations):
    model = tiny_chat_model
    episode = _episode(chat_tokenizer, small_conversations[0][3])
    handle = attach_delta_mem(model, DeltaMemConfig(delta_init="base_slice"))
    randomize_memory(handle)
    with torch.no_grad():
        with_adapter = score_answers(model, handle, None, episode.window_ids, episode.reads, pad_id=0).mean()
    handle.detach()
    read = episode.reads[0]
    ids = torch.tensor([episode.window_ids + read.ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(episode.window_ids) : -1]
    labels = torch.tensor(read.labels[1:])
    bare_first = torch.nn.functional.cross_entropy(logits[labels != -100], labels[labels != -100])
    with torch.no_grad():
        handle2 = attach_delta_mem(model, DeltaMemConfig(delta_init="base_slice"))
        randomize_memory(handle2)
        first = score_answers(model, handle2, None, episode.window_ids, [read], pad_id=0).mean()
    assert float(first) == pytest.approx(float(bare_first), rel=1e-5)
    assert torch.isfinite(with_adapter)


def test_an_empty_history_or_no_probe_is_refused(chat_tokenizer, tiny_chat_model):
    handle = attach_delta_mem(tiny_chat_model, DeltaMemConfig())
    with pytest.raises(ValueError, match="empty history"):
        write_history(tiny_chat_model, handle, [], [])
    with pytest.raises(ValueError, match="no read examples"):
        score_answers(tiny_chat_model, handle, None, [1, 2], [], pad_id=0)


def test_per_read_losses_are_each_probe_scored_alone(chat_tokenizer, tiny_chat_model, small_conversations):
    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig())
    randomize_memory(handle)
    episode = _episode(chat_tokenizer, small_conversations[0][1])
    with torch.no_grad():
        states = write_history(model, handle, episode.history_ids, episode.history_segments)
        each = score_answers(model, handle, states, episode.window_ids, episode.reads, pad_id=0).per_read()
        alone = [float(score_answers(model, handle, states, episode.window_ids, [r], pad_id=0).mean()) for r in episode.reads]
    assert len(episode.reads) > 1
    assert each.tolist() == pytest.approx(alone, rel=1e-5)


def test_the_contrast_hinge():
    own = torch.tensor([1.0, 1.0, 2.0])
    other = torch.tensor([1.0, 3.0, 2.5])  # gaps 0, 2, 0.5
    assert float(contrast_loss(own, other, margin=1.0)) == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert float(contrast_loss(own, own, margin=0.7)) == pytest.approx(0.7)  # a state-blind adapter pays the margin


def test_a_step_down_the_contrast_gradient_widens_the_gap_between_own_and_other_states(
        chat_tokenizer, tiny_chat_model, small_conversations):
    """The term reaches the writes of *both* conversations' states and moves the adapter towards
    answering better from its own state than from another's."""
    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig(delta_init="base_slice"))
    randomize_memory(handle)
    params = list(handle.parameters())
    for p in params:
        p.requires_grad_(True)
    a, b = (_episode(chat_tokenizer, c) for c in small_conversations[0][:2])

    def gap() -> torch.Tensor:
        states_a = write_history(model, handle, a.history_ids, a.history_segments)
        states_b = write_history(model, handle, b.history_ids, b.history_segments)
        own = score_answers(model, handle, states_a, a.window_ids, a.reads, pad_id=0).per_read()
        other = score_answers(model, handle, states_b, a.window_ids, a.reads, pad_id=0).per_read()
        return contrast_loss(own, other, margin=5.0)  # a margin no random adapter meets: the hinge is active

    before = gap()
    before.backward()
    before = float(before.detach())
    d = handle.config.read_dim
    for layer in handle.layers.values():
        assert layer.memory.memory_in_proj.grad[d : 2 * d].abs().sum() > 0  # memory keys: only the writes use them
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 1e-2 * p.grad / (p.grad.norm() + 1e-12)
    with torch.no_grad():
        after = float(gap())
    assert after < before


@pytest.mark.parametrize("strategy", ["tsw", "msw"])
def test_state_separation_tells_the_same_conversation_from_different_ones(chat_tokenizer, tiny_chat_model,
                                                                          small_conversations, strategy):
    from deltamem_agents.train.diagnostics import state_separation

    model = tiny_chat_model
    handle = attach_delta_mem(model, DeltaMemConfig(write_strategy=strategy))
    randomize_memory(handle)
    first, second = (_episode(chat_tokenizer, c) for c in small_conversations[0][:2])
    same = state_separation(model, handle, [first, first])
    different = state_separation(model, handle, [first, second])
    assert [layer.layer for layer in same.layers] == sorted(handle.layers)
    assert same.mean_state_difference == 0.0
    assert different.mean_state_difference > 0.01
    for layer in different.layers:
        assert 0 < layer.write_gate_mean <= layer.write_gate_max < 1
        assert -1 <= layer.key_cosine <= 1
    with pytest.raises(ValueError, match="at least two"):
        state_separation(model, handle, [first])


def _generic_chunk(tokenizer, tokens=48):
    text = "The library reads files, keeps a cache of what it has read and writes reports for the user. " * 8
    return token_chunks(tokenizer, [text], tokens)[0]


def test_token_chunks_are_exact_and_follow_the_text(chat_tokenizer):
    texts = ["one two three four five six seven eight nine ten", "eleven twelve thirteen fourteen"]
    stream = chat_tokenizer(texts[0], add_special_tokens=False).input_ids + [chat_tokenizer.eos_token_id]
    stream += chat_tokenizer(texts[1], add_special_tokens=False).input_ids + [chat_tokenizer.eos_token_id]
    chunks = token_chunks(chat_tokenizer, texts, 4)
    assert all(len(c) == 4 for c in chunks) and len(chunks) == len(stream) // 4
    assert [t for c in chunks for t in c] == stream[: 4 * len(chunks)]
    assert token_chunks(chat_tokenizer, texts, 10_000) == []


def test_preservation_is_zero_when_nothing_is_written(chat_tokenizer, tiny_chat_model):
    """Shut write gates leave the state empty, and an empty state reads zero: the bare backbone."""
    handle = attach_delta_mem(tiny_chat_model, DeltaMemConfig(delta_init="base_slice"))
    randomize_memory(handle)
    chunk = _generic_chunk(chat_tokenizer)
    with torch.no_grad():
        assert float(preservation_loss(tiny_chat_model, handle, chunk)) > 1e-4
    d = handle.config.read_dim
    with torch.no_grad():
        for layer in handle.layers.values():
            memory = layer.memory
            memory.memory_in_proj[3 * d :].zero_()
            memory.gate_bias.fill_(-200.0)  # beta = sigmoid(-200): no write (lambda rows unused in no_lambda)
        assert float(preservation_loss(tiny_chat_model, handle, chunk)) == pytest.approx(0.0, abs=1e-6)


def test_a_step_down_the_preservation_gradient_brings_the_adapter_closer_to_the_backbone(chat_tokenizer, tiny_chat_model):
    handle = attach_delta_mem(tiny_chat_model, DeltaMemConfig(delta_init="base_slice"))
    randomize_memory(handle)
    params = list(handle.parameters())
    for p in params:
        p.requires_grad_(True)
    chunk = _generic_chunk(chat_tokenizer)
    loss = preservation_loss(tiny_chat_model, handle, chunk)
    loss.backward()
    before = float(loss.detach())
    d = handle.config.read_dim
    for layer in handle.layers.values():
        assert layer.memory.memory_in_proj.grad[3 * d :].abs().sum() > 0  # the write gates learn to write less
    assert all(p.grad is None for p in tiny_chat_model.parameters() if all(p is not q for q in params))
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 1e-2 * p.grad / (p.grad.norm() + 1e-12)
        after = preservation_loss(tiny_chat_model, handle, chunk)
    assert float(after) < before
