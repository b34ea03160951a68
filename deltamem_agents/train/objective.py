"""The training objective: write the history into the state, then answer without it.

As in the paper, the history is only *written* (its KV cache is not kept); the answer is then
supervised with the history absent from attention except a short recent window, so the only way
the history can help is through the δ-mem state. Cross-entropy is taken on the answer tokens.

Two ways to get gradients to the writes (``history_grad``):

* ``"state"`` (default): the history forward runs without a graph, exactly as at inference, and
  records each layer's attention input. Each layer's state is then re-derived from those inputs
  with gradients (the small r x r scan). The loss reaches every write parameter through the
  state; what it does not see is how earlier layers' reads changed later layers' inputs during
  the history. No history activation is kept, so memory does not grow with the history: this
  is what gradient checkpointing would buy, without re-running the backbone.
* ``"full"``: the history forward keeps its graph (exact gradients; memory grows with the history).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.train.episodes import ReadExample

IGNORE = -100


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (the history forward needs no logits)."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if not isinstance(decoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no get_decoder(); δ-mem training needs a decoder-only causal LM")
    return decoder


@contextmanager
def recording_inputs(handle: DeltaMemHandle) -> Iterator[dict[int, list[Tensor]]]:
    """Record every attention input (detached) per attached layer, in call order."""
    inputs: dict[int, list[Tensor]] = {i: [] for i in handle.layers}
    hooks = []
    for index, layer in handle.layers.items():
        def hook(module: nn.Module, args: tuple, kwargs: dict, index: int = index) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            inputs[index].append(hidden.detach())
        hooks.append(layer.matched.module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield inputs
    finally:
        for h in hooks:
            h.remove()


def _chunks(ids: Sequence[int], segments: Sequence[int], size: int) -> Iterator[tuple[list[int], list[int]]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size]), list(segments[start : start + size])


def write_history(
    model: nn.Module,
    handle: DeltaMemHandle,
    ids: Sequence[int],
    segments: Sequence[int],
    *,
    prefill_chunk: int = 512,
    history_grad: Literal["state", "full"] = "state",
) -> dict[int, Tensor]:
    """Write ``ids`` into a fresh state, ``prefill_chunk`` tokens per forward as a session does;
    returns the final state per layer, ``[1, H, r, r]``, carrying gradients to the write parameters."""
    if not ids:
        raise ValueError("an empty history cannot be written")
    device = next(model.parameters()).device
    decoder = decoder_of(model)
    ssw = handle.config.write_strategy == "ssw"
    handle.reset_state()
    cache = DynamicCache(config=model.config)
    chunks = list(_chunks(ids, segments, prefill_chunk))

    def run(chunk: list[int], seg: list[int]) -> None:
        input_ids = torch.tensor([chunk], device=device)
        seg_ids = torch.tensor([seg], device=device) if ssw else None
        with handle.segments(seg_ids), handle.writing(True):
            decoder(input_ids=input_ids, past_key_values=cache, use_cache=True)

    if history_grad == "full":
        for chunk, seg in chunks:
            run(chunk, seg)
        states = dict(handle.get_state().layers)
        handle.reset_state()
        return states
    with torch.no_grad(), recording_inputs(handle) as recorded:
        for chunk, seg in chunks:
            run(chunk, seg)
    handle.reset_state()
    states: dict[int, Tensor] = {}
    for index, layer in handle.layers.items():
        memory = layer.memory
        state = memory.new_state(1, device)
        for hidden, (_, seg) in zip(recorded[index], chunks, strict=True):
            seg_ids = torch.tensor([seg], device=device) if ssw else None
            _, state, _ = memory.read_write(hidden, state, segment_ids=seg_ids, write=True)
        states[index] = state
    return states


def pad_reads(reads: Sequence[ReadExample], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` ``[B, T]``."""
    width = max(len(r.ids) for r in reads)
    ids = torch.full((len(reads), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(reads), width), dtype=torch.long)
    labels = torch.full((len(reads), width), IGNORE, dtype=torch.long)
    for row, read in enumerate(reads):
        n = len(read.ids)
        ids[row, :n] = torch.tensor(read.ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(read.labels)
    return ids.to(device), mask.to(device), labels.to(device)


@dataclass
class AnswerScores:
    """Cross-entropy of every answer token, and which read each belongs to."""

    losses: Tensor  # [answer tokens]
    rows: Tensor  # [answer tokens], index into the scored reads
    reads: int

    @property
    def tokens(self) -> int:
        return self.losses.numel()

    def mean(self) -> Tensor:
        """Mean over all answer tokens (the training loss)."""
        return self.losses.mean()

    def per_read(self) -> Tensor:
        """Mean answer-token loss of each read, ``[reads]`` (a read without answer tokens scores 0)."""
        total = self.losses.new_zeros(self.reads).index_add(0, self.rows, self.losses)
        count = self.losses.new_zeros(self.reads).index_add(0, self.rows, torch.ones_like(self.losses))
        return total / count.clamp(min=1)


def score_answers(
    model: nn.Module,
    handle: DeltaMemHandle,
    states: dict[int, Tensor] | None,
    window: Sequence[int],
    reads: Sequence[ReadExample],
    *,
    pad_id: int,
) -> AnswerScores:
    """Cross-entropy of the answer tokens of ``reads``, each read after the shared recent
    ``window``, with ``states`` read (None: an empty memory, i.e. the bare backbone) and nothing
    written. As in a session, the window is one forward whose KV cache the probes then extend
    (here all probes at once, the cache repeated per probe)."""
    if not reads:
        raise ValueError("no read examples to score")
    device = next(model.parameters()).device
    decoder = decoder_of(model)
    input_ids, attention_mask, labels = pad_reads(reads, pad_id, device)
    batch = input_ids.shape[0]
    cache = DynamicCache(config=model.config) if window else None

    def install(rows: int) -> None:
        handle.reset_state()
        if states is not None:
            handle.set_state(DeltaMemState({i: s.expand(rows, -1, -1, -1) for i, s in states.items()}))

    try:
        with handle.writing(False):
            if window:
                install(1)
                decoder(input_ids=torch.tensor([list(window)], device=device), past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(batch)
                attention_mask = torch.cat([attention_mask.new_ones(batch, len(window)), attention_mask], dim=1)
            install(batch)
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                             use_cache=cache is not None).last_hidden_state
    finally:
        handle.reset_state()
    targets = labels[:, 1:]
    supervised = targets != IGNORE
    picked = hidden[:, :-1][supervised]  # only the answer positions go through the LM head
    logits = model.get_output_embeddings()(picked).float()
    rows = torch.arange(batch, device=device)[:, None].expand_as(supervised)[supervised]
    return AnswerScores(F.cross_entropy(logits, targets[supervised], reduction="none"), rows, batch)


def contrast_loss(own: Tensor, other: Tensor, margin: float) -> Tensor:
    """Hinge on the gap: each read's answer loss with another conversation's state must exceed
    its loss with its own state by ``margin`` nats. An adapter that answers as well with any
    state (it learnt the answer format, not the conversation) pays the full margin; the only way
    to lower it without raising the own-state loss is to answer from what the state holds."""
    return F.relu(margin - (other - own)).mean()


def token_chunks(tokenizer: object, texts: Sequence[str], tokens: int) -> list[list[int]]:
    """``texts`` tokenized end to end (each followed by the end-of-text token, where there is one)
    and cut into chunks of exactly ``tokens`` (the ragged tail is dropped)."""
    end = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False).input_ids  # type: ignore[operator]
        if end is not None:
            stream.append(end)
    return [stream[i : i + tokens] for i in range(0, len(stream) - tokens + 1, tokens)]


def preservation_loss(model: nn.Module, handle: DeltaMemHandle, ids: Sequence[int]) -> Tensor:
    """KL(bare backbone || backbone with the adapter writing from an empty state), per token, on
    generic text. This is what the empty-memory perplexity check measures the result of: text
    that is not a conversation is still written into the state and read back, and the answer
    objective alone never asks those reads to leave the backbone's predictions alone."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(ids)], device=device)
    handle.reset_state()
    try:
        with torch.no_grad(), handle.writing(False):
            bare = F.log_softmax(model(input_ids=input_ids, use_cache=False).logits[0].float(), dim=-1)
        handle.reset_state()
        with handle.writing(True):
            adapted = F.log_softmax(model(input_ids=input_ids, use_cache=False).logits[0].float(), dim=-1)
    finally:
        handle.reset_state()
    return F.kl_div(adapted, bare, log_target=True, reduction="batchmean")
