"""Does an adapter's state hold the conversation, or only a signal that some history was written?

The answer loss cannot tell (an adapter that learnt the answer format lowers it with any state),
so these numbers look at the writes themselves: how different two conversations' states are,
how selectively the write gates open, and how diverse the memory keys are. A state that is
mostly the same for every conversation (small relative difference), written by gates that are
the same small value on every token, with keys that all point one way, is a running average:
it can carry "answer briefly" but not "the sister moved to Porto".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from deltamem_agents.model.attach import DeltaMemHandle
from deltamem_agents.train.episodes import Episode
from deltamem_agents.train.objective import recording_inputs, write_history


class LayerSeparation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int
    state_difference: float  # ||S_a - S_b|| / ||S_a||, mean over consecutive pairs of conversations
    write_gate_mean: float  # mean write strength over the history tokens (and state rows)
    write_gate_max: float
    key_cosine: float  # mean cosine between the memory keys of two different tokens


class StateSeparation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversations: int
    layers: list[LayerSeparation]

    @property
    def mean_state_difference(self) -> float:
        return sum(layer.state_difference for layer in self.layers) / len(self.layers)


@torch.no_grad()
def state_separation(model: nn.Module, handle: DeltaMemHandle, episodes: Sequence[Episode], *,
                     prefill_chunk: int = 512) -> StateSeparation:
    """Write each episode's history into a fresh state (as a session does) and measure, per
    layer, how much the states differ between conversations and how the first one was written."""
    if len(episodes) < 2:
        raise ValueError("state separation compares conversations: give at least two episodes")

    def written(episode: Episode) -> dict[int, torch.Tensor]:
        return write_history(model, handle, episode.history_ids, episode.history_segments, prefill_chunk=prefill_chunk)

    with recording_inputs(handle) as recorded:  # the first conversation's writes, for the gate and key statistics
        states = [written(episodes[0])]
    states += [written(episode) for episode in episodes[1:]]
    layers = []
    for index, layer in handle.layers.items():
        pairs = [(states[i][index], states[i + 1][index]) for i in range(len(states) - 1)]
        difference = sum(float((a - b).norm() / a.norm().clamp(min=1e-12)) for a, b in pairs) / len(pairs)
        inputs = layer.memory.memory_inputs(torch.cat(recorded[index], dim=1))
        keys = torch.nn.functional.normalize(inputs.k[0].transpose(0, 1).flatten(1), dim=-1)  # [T, H * r]
        cosine = keys @ keys.T
        off_diagonal = cosine[~torch.eye(len(keys), dtype=torch.bool, device=keys.device)]
        layers.append(LayerSeparation(
            layer=index, state_difference=difference, write_gate_mean=float(inputs.write.mean()),
            write_gate_max=float(inputs.write.max()), key_cosine=float(off_diagonal.mean()) if off_diagonal.numel() else 1.0,
        ))
    return StateSeparation(conversations=len(episodes), layers=layers)
