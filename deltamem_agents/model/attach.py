"""`attach_delta_mem`: give a frozen Hugging Face causal LM an online associative memory.

Per attention layer we add a `DeltaMemoryLayer` (registered as ``<attention>.delta_memory``,
so ``model.to()`` moves it and optimisers find it), wrap the q/k/v/o projections that receive
corrections in `DeltaLinear`, and register two hooks: one on the decoder stack that remembers
which tokens of this forward are padding, and one on each attention module that reads and
writes the memory from the attention input and hands the corrections to the wrappers. The
attention forward itself is never copied, so any architecture in
``deltamem_agents.model.targets`` works, with ``generate()`` and the KV cache.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from deltamem_agents.core.config import DeltaMemConfig
from deltamem_agents.core.layer import DeltaMemoryLayer
from deltamem_agents.core.plan import DecodePlan, StepKind
from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.model.compat import activation_checkpointing
from deltamem_agents.model.targets import MatchedAttention, find_attention_modules
from deltamem_agents.model.wrappers import DeltaLinear

MEMORY_ATTR = "delta_memory"


@dataclass
class AttachedLayer:
    """Everything attach changed in one attention module, so detach can undo it."""

    matched: MatchedAttention
    memory: DeltaMemoryLayer
    wrappers: dict[str, DeltaLinear]
    last_beta_mean: float | None = None
    #: mean over tokens of |S q| / |S|_F: how much of this layer's state the queries read out
    #: (0 for an empty state, at most 1); a "does working memory answer this" signal
    last_read_ratio: float | None = None


@dataclass
class _ForwardContext:
    """What the decoder-level hook learned about the current forward."""

    attention_mask: Tensor | None = None
    active: bool = False
    #: the per-token mask derived for one (batch, steps): every layer of a forward needs the same
    token_mask: tuple[tuple[int, int], Tensor | None] | None = None
    #: the forward's plan, chosen at its first attention layer (`DeltaMemHandle._plan`)
    plan: DecodePlan | None = None


@dataclass
class _Settings:
    write: bool = True
    segment_ids: Tensor | None = None
    record_stats: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DeltaMemHandle:
    """The attached memory: its parameters, its state, and how to undo the attachment."""

    def __init__(self, model: nn.Module, config: DeltaMemConfig, layers: dict[int, AttachedLayer]) -> None:
        self.model = model
        self.config = config
        self.layers = layers
        self._states: dict[int, Tensor | None] = dict.fromkeys(layers)
        self._settings = _Settings()
        self._context = _ForwardContext()
        self._fused_calls: dict[int, tuple[Any, dict[str, Any], list[dict[str, Any]]]] | None = None
        self._hooks: list[RemovableHandle] = []
        self._requires_grad_before: dict[str, bool] = {}
        self._attached = True

    # -- what was attached -----------------------------------------------------------------------
    @property
    def matched_modules(self) -> list[str]:
        return [layer.matched.name for layer in self.layers.values()]

    def parameters(self) -> Iterator[nn.Parameter]:
        """The trainable δ-mem parameters (the backbone stays frozen)."""
        for layer in self.layers.values():
            yield from layer.memory.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for index, layer in self.layers.items():
            for name, param in layer.memory.named_parameters():
                yield f"layers.{index}.{name}", param

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def backbone_parameters(self) -> int:
        ours = {id(p) for p in self.parameters()}
        return sum(p.numel() for p in self.model.parameters() if id(p) not in ours)

    @property
    def parameter_share(self) -> float:
        """δ-mem parameters as a fraction of the backbone's."""
        return self.num_parameters / max(self.backbone_parameters, 1)

    def summary(self) -> str:
        return (
            f"δ-mem {self.config.write_strategy.upper()} rank {self.config.rank} x "
            f"{self.config.num_state_heads} head(s) on {len(self.layers)} layers, heads "
            f"{'/'.join(self.config.ordered_delta_heads())}: {self.num_parameters:,} parameters "
            f"({100 * self.parameter_share:.3f}% of the backbone)"
        )

    def __repr__(self) -> str:
        return f"DeltaMemHandle({self.summary()})"

    # -- state ----------------------------------------------------------------------------------------
    def get_state(self) -> DeltaMemState:
        """The current state of every layer. Tensors are shared, not copied: the engine never
        writes in place, so the object stays a snapshot; use ``.clone()`` to cut the autograd
        graph during training."""
        layers = {i: s for i, s in self._states.items() if s is not None}
        return DeltaMemState(layers, {"rank": str(self.config.rank), "heads": str(self.config.num_state_heads)})

    def set_state(self, state: DeltaMemState) -> None:
        """Replace the state (e.g. one loaded from disk); shapes are checked against the config."""
        expected = set(self.layers)
        if set(state.layers) != expected:
            raise ValueError(
                f"state covers layers {sorted(state.layers)} but δ-mem is attached to {sorted(expected)}"
            )
        if state.num_heads != self.config.num_state_heads or state.rank != self.config.rank:
            raise ValueError(
                f"state has {state.num_heads} head(s) of rank {state.rank}; this adapter uses "
                f"{self.config.num_state_heads} head(s) of rank {self.config.rank}"
            )
        for index, tensor in state.layers.items():
            memory = self.layers[index].memory
            dtype = torch.promote_types(memory.memory_in_proj.dtype, torch.float32)
            self._states[index] = tensor.to(device=memory.memory_in_proj.device, dtype=dtype)

    def reset_state(self) -> None:
        """Forget everything: the next forward starts from zero states of its batch size."""
        self._states = dict.fromkeys(self.layers)

    @contextlib.contextmanager
    def writing(self, enabled: bool) -> Iterator[None]:
        """``with handle.writing(False):`` reads use the current state and nothing is written
        (e.g. a probe that must not change memory); the previous setting is restored after."""
        previous = self._settings.write
        self._settings.write = bool(enabled)
        try:
            yield
        finally:
            self._settings.write = previous

    @contextlib.contextmanager
    def segments(self, segment_ids: Tensor | None) -> Iterator[None]:
        """SSW segment ids ``[batch, seq]`` (-1 = not written) for forwards of that shape.

        One-token forwards (decode steps) fall back to token writes, as in the reference."""
        previous = self._settings.segment_ids
        self._settings.segment_ids = segment_ids
        try:
            yield
        finally:
            self._settings.segment_ids = previous

    def read_ratio(self) -> float | None:
        """Mean over layers of ``last_read_ratio`` (recorded inside `recording_stats`)."""
        ratios = [layer.last_read_ratio for layer in self.layers.values() if layer.last_read_ratio is not None]
        return sum(ratios) / len(ratios) if ratios else None

    @contextlib.contextmanager
    def recording_stats(self) -> Iterator[None]:
        """Record per layer the mean write gate (``last_beta_mean``) and the read ratio
        ``|S q| / |S|_F`` (``last_read_ratio``) of each forward; costs a few reductions."""
        previous = self._settings.record_stats
        self._set_record_stats(True)
        try:
            yield
        finally:
            self._set_record_stats(previous)

    def _set_record_stats(self, enabled: bool) -> None:
        self._settings.record_stats = enabled
        for layer in self.layers.values():
            layer.memory._record_inputs = enabled

    # -- hooks ------------------------------------------------------------------------------------------
    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], Tensor):
            mask = args[1]
        self._context = _ForwardContext(attention_mask=mask, active=True)

    def _release_mask(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._context = _ForwardContext()

    def _token_mask(self, batch: int, steps: int) -> Tensor | None:
        """``[B, steps]`` bool, True for real tokens, or ``None`` where there is no mask; derived
        once per forward (all layers see the same tokens) and kept in the forward's context."""
        context = self._context
        cached = context.token_mask
        if cached is not None and cached[0] == (batch, steps):
            return cached[1]
        mask = self._derive_token_mask(context.attention_mask, batch, steps)
        if context.active:
            context.token_mask = ((batch, steps), mask)
        return mask

    @staticmethod
    def _derive_token_mask(mask: Tensor | None, batch: int, steps: int) -> Tensor | None:
        if mask is None:
            return None
        if mask.dim() == 2:
            if mask.shape[0] != batch or mask.shape[1] < steps:
                raise ValueError(
                    f"attention_mask of shape {tuple(mask.shape)} does not cover a forward of "
                    f"{batch} x {steps} tokens"
                )
            return mask[:, -steps:].bool()
        if mask.dim() == 4:  # a prepared mask: a token is real if it may attend to itself
            diagonal = mask[:, 0, -steps:, -steps:].diagonal(dim1=-2, dim2=-1)
            return diagonal if diagonal.dtype == torch.bool else diagonal == 0
        raise ValueError(f"unsupported attention_mask shape {tuple(mask.shape)} for δ-mem")

    def _plan(self, index: int, hidden: Tensor) -> DecodePlan:
        """Choose this forward's `DecodePlan` at its first attention layer (from that layer's
        weights and state, the handle's settings and the grad mode) and keep it in the forward's
        context, so every later layer follows it; outside a decoder forward, per call."""
        context = self._context
        batch, steps, _ = hidden.shape
        plan = self.layers[index].memory.plan(
            hidden, self._states[index], write=self._settings.write, segment_ids=self._segment_ids(batch, steps)
        )
        if context.active:
            context.plan = plan
        return plan

    def _segment_ids(self, batch: int, steps: int) -> Tensor | None:
        """The SSW segment ids that cover this forward; one-token forwards (decode steps) get
        none, as in the reference, and ids of another shape are refused."""
        segment_ids = self._settings.segment_ids
        if segment_ids is not None and tuple(segment_ids.shape) != (batch, steps):
            if steps > 1:
                raise ValueError(
                    f"segment_ids of shape {tuple(segment_ids.shape)} do not match this forward "
                    f"({batch} x {steps} tokens)"
                )
            return None
        return segment_ids

    def _fused_calls_by_layer(self) -> dict[int, tuple[Any, dict[str, Any], list[dict[str, Any]]]]:
        """Per layer, what the fast path of a FUSED forward calls: the compiled step, the
        memory's parameter dict (read at call time, so always the current weights) and the
        wrappers' ``__dict__`` in head order. Built at the first FUSED forward; it decides
        nothing (the plan did)."""
        calls = self._fused_calls
        if calls is None:
            calls = {}
            for index, layer in self.layers.items():
                kernel = layer.memory.fused_kernel()
                if kernel is not None:
                    slots = [layer.wrappers[head].__dict__ for head in layer.memory.heads]
                    calls[index] = (kernel, layer.memory._parameters, slots)
            self._fused_calls = calls
        return calls

    def _before_attention(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if not isinstance(hidden, Tensor) or hidden.dim() != 3:
            raise RuntimeError(f"δ-mem expected [batch, seq, hidden] attention input in layer {index}")
        plan = self._context.plan  # chosen at this forward's first layer (`_plan`)
        if plan is None or plan.tokens != hidden.shape[1]:
            plan = self._plan(index, hidden)
        if plan.kind is StepKind.FUSED:
            # Decoding's fast path, written out here: it runs per layer per generated token,
            # right after the backbone's weights have flushed the CPU caches, so every Python
            # call it avoids counts. One call into the fused step; its corrections go straight
            # into the wrappers. A fresh state or a wrong batch size takes the general path.
            entry = (self._fused_calls or self._fused_calls_by_layer()).get(index)
            state = self._states[index]
            if entry is not None and state is not None and state.shape[0] == hidden.shape[0]:
                kernel, params, slots = entry
                mask = self._token_mask(hidden.shape[0], 1)
                out = kernel(params["memory_in_proj"], params["gate_bias"], params["delta_out_proj"], hidden, state, mask)
                if out is not None:  # None: not all CPU float32 here; the general path runs eager
                    self._states[index] = out[1]
                    for slot, correction in zip(slots, out[2:]):
                        slot["pending"] = correction
                    return
        layer = self.layers[index]
        if torch.is_grad_enabled() and activation_checkpointing(self.model):
            # Recomputation in backward would re-run this hook against the state after the
            # forward, giving silently wrong gradients.
            raise RuntimeError(
                "gradient checkpointing re-runs attention in the backward pass, which δ-mem's "
                "stateful hooks do not support yet; call model.gradient_checkpointing_disable()"
            )
        batch, steps, _ = hidden.shape
        state = self._states[index]
        if state is None:
            state = layer.memory.new_state(batch, hidden.device)
        elif state.shape[0] != batch:
            raise ValueError(
                f"the δ-mem state holds {state.shape[0]} batch row(s) but this forward has {batch}; "
                "call reset_state() or set_state() with a state of the right batch size"
            )
        step = layer.memory.step(
            hidden,
            state,
            token_mask=self._token_mask(batch, steps),
            segment_ids=self._segment_ids(batch, steps),
            write=self._settings.write,
            plan=plan,
        )
        self._states[index] = step.new_state
        if self._settings.record_stats:
            if step.inputs is not None:
                layer.last_beta_mean = float(step.inputs.beta.detach().float().mean())
            state_norm = float(state.detach().norm(dim=(-2, -1)).pow(2).sum(-1).sqrt().mean())
            read_norm = float(step.reads.detach().norm(dim=-1).mean())
            layer.last_read_ratio = read_norm / state_norm if state_norm > 0 else 0.0
        for head, correction in step.corrections.items():
            layer.wrappers[head].set_pending(correction)

    # -- undo ----------------------------------------------------------------------------------------------
    def detach(self) -> nn.Module:
        """Remove every hook, wrapper and δ-mem parameter; the bare model is restored exactly."""
        if not self._attached:
            return self.model
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for layer in self.layers.values():
            attention = layer.matched.module
            for head, wrapper in layer.wrappers.items():
                setattr(attention, _attr_name(layer.matched, head), wrapper.base_layer)
            delattr(attention, MEMORY_ATTR)
        for name, param in self.model.named_parameters():
            if name in self._requires_grad_before:
                param.requires_grad_(self._requires_grad_before[name])
        self._attached = False
        self._states = dict.fromkeys(self.layers)
        return self.model


def _attr_name(matched: MatchedAttention, head: str) -> str:
    for name, module in matched.module.named_children():
        if module is matched.projections[head] or (
            isinstance(module, DeltaLinear) and module.base_layer is matched.projections[head]
        ):
            return name
    raise RuntimeError(f"lost track of the {head} projection of {matched.name}")


def _decoder_stack(model: nn.Module) -> nn.Module:
    """The module that receives the 2D attention mask before the layers (e.g. LlamaModel)."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        decoder = get_decoder()
        if isinstance(decoder, nn.Module):
            return decoder
    return model


def attach_delta_mem(model: nn.Module, config: DeltaMemConfig | None = None) -> DeltaMemHandle:
    """Attach δ-mem to ``model`` in place and return its handle.

    The backbone is frozen (``requires_grad=False``); only δ-mem parameters train. Works on any
    architecture listed in ``deltamem_agents.model.targets`` (and any other whose attention has
    q/k/v/o ``nn.Linear`` projections), on the model's own device, meta device included.
    """
    config = config or DeltaMemConfig()
    if any(isinstance(m, DeltaMemoryLayer) for m in model.modules()):
        raise ValueError("δ-mem is already attached to this model; detach() the old handle first")
    matched = find_attention_modules(model)
    if config.target_layers is not None:
        wanted = set(config.target_layers)
        unknown = wanted - {m.layer_index for m in matched}
        if unknown:
            raise ValueError(
                f"target_layers {sorted(unknown)} do not exist; this model has layers "
                f"0..{max(m.layer_index for m in matched)}"
            )
        matched = [m for m in matched if m.layer_index in wanted]

    requires_grad_before = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    layers: dict[int, AttachedLayer] = {}
    for match in matched:
        q_proj = match.projections["q"]
        device = q_proj.weight.device
        memory = DeltaMemoryLayer(
            config,
            q_proj.in_features,
            {head: proj.out_features for head, proj in match.projections.items()},
            device=device,
            base_weights={h: p.weight for h, p in match.projections.items()},
        )
        match.module.add_module(MEMORY_ATTR, memory)
        wrappers: dict[str, DeltaLinear] = {}
        for head in config.ordered_delta_heads():
            wrapper = DeltaLinear(match.projections[head], head)
            setattr(match.module, _attr_name(match, head), wrapper)
            wrappers[head] = wrapper
        layers[match.layer_index] = AttachedLayer(match, memory, wrappers)

    handle = DeltaMemHandle(model, config, layers)
    handle._requires_grad_before = requires_grad_before
    decoder = _decoder_stack(model)
    handle._hooks.append(decoder.register_forward_pre_hook(handle._capture_mask, with_kwargs=True))
    handle._hooks.append(
        decoder.register_forward_hook(handle._release_mask, with_kwargs=True, always_call=True)
    )
    for index, layer in layers.items():
        attention = layer.matched.module
        handle._hooks.append(
            # partial, not a closure: a C-level call, once per layer per token
            attention.register_forward_pre_hook(functools.partial(handle._before_attention, index), with_kwargs=True)
        )
    return handle
