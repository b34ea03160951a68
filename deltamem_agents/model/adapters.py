"""Adapter files: ours (safetensors + validated JSON) and the reference's release format.

Ours is a folder with ``deltamem_config.json`` (the `DeltaMemConfig`, the library version and
a `BackboneSignature` of the model it was trained on) and ``adapter.safetensors`` (adapter
weights only, keys ``layers.<i>.<param>``). The reference (declare-lab/delta-Mem) releases a
folder with ``delta_mem_config.json`` and ``delta_mem_adapter.pt``, a state dict keyed
``model.layers.<i>.self_attn.<param>``; it is read with ``weights_only=True`` and converted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from deltamem_agents._version import __version__
from deltamem_agents.core.config import ALL_DELTA_HEADS, DeltaMemConfig
from deltamem_agents.errors import UserError
from deltamem_agents.fileio import atomic_write_bytes
from deltamem_agents.model.attach import DeltaMemHandle, attach_delta_mem
from deltamem_agents.model.targets import find_attention_modules

CONFIG_FILE = "deltamem_config.json"
WEIGHTS_FILE = "adapter.safetensors"
REFERENCE_CONFIG_FILE = "delta_mem_config.json"
REFERENCE_WEIGHTS_FILE = "delta_mem_adapter.pt"
ADAPTER_FORMAT_VERSION = 1


class AdapterError(UserError, ValueError):
    """An adapter folder is unreadable, inconsistent, or made for another backbone."""


class BackboneSignature(BaseModel):
    """What an adapter needs of its backbone: enough to refuse the wrong one by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    model_type: str | None = None
    hidden_size: int
    num_layers: int
    #: per attached layer: output width of the q, k, v and o projections
    projection_out: dict[int, dict[str, int]]

    def describe(self) -> str:
        return f"{self.name or 'an unnamed model'} ({self.model_type}, hidden {self.hidden_size}, {self.num_layers} layers)"

    @classmethod
    def of(cls, model: nn.Module, layers: list[int] | None = None, name: str | None = None) -> BackboneSignature:
        matched = find_attention_modules(model)
        if layers is not None:
            matched = [m for m in matched if m.layer_index in set(layers)]
        config = getattr(model, "config", None)
        return cls(
            name=name or _model_name(model),
            model_type=getattr(config, "model_type", None),
            hidden_size=matched[0].projections["q"].in_features,
            num_layers=len(find_attention_modules(model)),
            projection_out={m.layer_index: {h: p.out_features for h, p in m.projections.items()} for m in matched},
        )


class AdapterFile(BaseModel):
    """The JSON that sits next to the weights."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = ADAPTER_FORMAT_VERSION
    deltamem_version: str
    config: DeltaMemConfig
    backbone: BackboneSignature


def _model_name(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None) or None


def adapter_fingerprint(path: str | Path) -> str:
    """sha256 of an adapter's weights: sessions record it so a state is never loaded onto
    an adapter it was not written by."""
    folder = Path(path)
    weights = folder / WEIGHTS_FILE if (folder / WEIGHTS_FILE).exists() else folder / REFERENCE_WEIGHTS_FILE
    return hashlib.sha256(weights.read_bytes()).hexdigest()


# -- our format ----------------------------------------------------------------------------------
def save_adapter(handle: DeltaMemHandle, path: str | Path, *, backbone_name: str | None = None) -> Path:
    folder = Path(path)
    signature = BackboneSignature.of(handle.model, list(handle.layers), name=backbone_name)
    meta = AdapterFile(deltamem_version=__version__, config=handle.config, backbone=signature)
    tensors = {name: p.detach().to("cpu") for name, p in handle.named_parameters()}
    return write_adapter_folder(meta, tensors, folder)


def read_adapter(path: str | Path) -> tuple[AdapterFile, dict[str, Tensor]]:
    """Read and validate an adapter folder of either format, without a model."""
    folder = Path(path)
    if (folder / CONFIG_FILE).is_file():
        try:
            meta = AdapterFile.model_validate_json((folder / CONFIG_FILE).read_text())
        except ValidationError as exc:
            raise AdapterError(f"{folder / CONFIG_FILE} is not a valid δ-mem adapter config:\n{exc}") from exc
        if not (folder / WEIGHTS_FILE).is_file():
            raise AdapterError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
        try:
            return meta, load_file(str(folder / WEIGHTS_FILE))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise AdapterError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {exc}") from exc
    if (folder / REFERENCE_CONFIG_FILE).is_file():
        return convert_reference_adapter(folder)
    raise AdapterError(
        f"{folder} is not an adapter folder: expected {CONFIG_FILE} + {WEIGHTS_FILE} (ours) or "
        f"{REFERENCE_CONFIG_FILE} + {REFERENCE_WEIGHTS_FILE} (the reference's release format)"
    )


def check_backbone(expected: BackboneSignature, model: nn.Module) -> None:
    """Refuse an adapter made for a backbone of other shapes, naming both."""
    actual = BackboneSignature.of(model, list(expected.projection_out))
    problems = []
    if actual.hidden_size != expected.hidden_size:
        problems.append(f"hidden size {expected.hidden_size} vs {actual.hidden_size}")
    missing = set(expected.projection_out) - set(actual.projection_out)
    if missing:
        problems.append(f"layers {sorted(missing)} do not exist")
    for index, widths in expected.projection_out.items():
        if index in actual.projection_out and actual.projection_out[index] != widths:
            problems.append(f"layer {index} projections {widths} vs {actual.projection_out[index]}")
            break
    if problems:
        raise AdapterError(
            f"this adapter was made for {expected.describe()} and does not fit "
            f"{actual.describe()}: " + "; ".join(problems)
        )


def load_adapter(model: nn.Module, path: str | Path) -> DeltaMemHandle:
    """Attach δ-mem to ``model`` with the weights of the adapter at ``path`` (either format)."""
    meta, tensors = read_adapter(path)
    check_backbone(meta.backbone, model)
    config = meta.config.model_copy(update={"target_layers": tuple(sorted(meta.backbone.projection_out))})
    handle = attach_delta_mem(model, config)
    try:
        load_weights(handle, tensors, source=str(path))
    except Exception:
        handle.detach()
        raise
    return handle


def load_weights(handle: DeltaMemHandle, tensors: Mapping[str, Tensor], *, source: str = "adapter") -> None:
    params = dict(handle.named_parameters())
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise AdapterError(
            f"{source} does not match this δ-mem configuration: missing {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}"
        )
    with torch.no_grad():
        for name, param in params.items():
            tensor = tensors[name]
            if tensor.shape != param.shape:
                raise AdapterError(f"{source}: {name} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}")
            param.copy_(tensor.to(device=param.device, dtype=param.dtype))


# -- the reference's release format ---------------------------------------------------------------------
_REFERENCE_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.self_attn\.([a-z_]+)$")
_SUPPORTED_REFERENCE_DEFAULTS: dict[str, Any] = {
    "num_memory_partitions": 1,
    "memory_readout_mode": "delta",
    "memory_write_source": "learned_hidden",
    "latent_memory_layers": [],
    "memory_reader_layers": [],
    "delta_scale_parameterization": "alpha_over_rank",
}


def config_from_reference(raw: Mapping[str, Any]) -> DeltaMemConfig:
    """Map the reference's ``HFDeltaMemConfig`` JSON onto ours, refusing features we lack."""
    for key, default in _SUPPORTED_REFERENCE_DEFAULTS.items():
        value = raw.get(key, default)
        if isinstance(default, list):
            value = list(value or [])
        if value != default:
            raise AdapterError(f"reference adapter uses {key}={value!r}, which δ-mem-agents does not implement")
    heads = int(raw.get("num_state_heads", 1))
    granularity = raw.get("memory_write_granularity", "token")
    if granularity == "token":
        strategy, segment = ("msw" if heads > 1 else "tsw"), "message"
    elif granularity in ("message_mean", "sentence_mean"):
        strategy, segment = "ssw", granularity.split("_")[0]
    else:
        raise AdapterError(f"reference adapter uses memory_write_granularity={granularity!r}, not supported")
    output_init = raw.get("output_init", "zero")
    target_layers = tuple(raw.get("target_layers") or ()) or None
    try:
        return DeltaMemConfig(
            rank=int(raw.get("rank", 8)),
            alpha=float(raw.get("alpha", 16.0)),
            write_strategy=strategy,
            num_state_heads=heads,
            segment_granularity=segment,
            rankwise_gates=bool(raw.get("rankwise_gates", True)),
            couple_lambda=bool(raw.get("couple_lambda", True)),
            state_update_mode=raw.get("state_update_mode", "standard"),
            beta_bias_init=float(raw.get("beta_bias_init", -1.5)),
            normalize_qk=bool(raw.get("normalize_qk", True)),
            delta_heads=tuple(raw.get("delta_heads", ALL_DELTA_HEADS)),
            target_layers=target_layers,
            delta_init="base_slice" if str(output_init).startswith("base_slice") else "zero",
            base_slice_gain=float(raw.get("online_gain", 0.05)),
            trainable_delta_scale=bool(raw.get("trainable_delta_scale", False)),
            delta_scale_init=float(raw.get("delta_scale_init", 1.0)),
            delta_scale_max=float(raw.get("delta_scale_max", 2.0)),
            delta_scale_granularity=raw.get("delta_scale_granularity", "layer"),
            delta_o_rmsnorm=bool(raw.get("delta_o_rmsnorm", False)),
            delta_o_rmsnorm_eps=float(raw.get("delta_o_rmsnorm_eps", 1e-6)),
        )
    except ValidationError as exc:
        raise AdapterError(f"reference adapter config cannot be mapped:\n{exc}") from exc


def convert_reference_adapter(path: str | Path, backbone_name: str | None = None) -> tuple[AdapterFile, dict[str, Tensor]]:
    """Read a reference release folder into our (config, tensors), packing its weights."""
    folder = Path(path)
    try:
        raw = json.loads((folder / REFERENCE_CONFIG_FILE).read_text())
        state_dict = torch.load(folder / REFERENCE_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise AdapterError(f"{folder} lacks {Path(exc.filename).name}") from exc
    except (json.JSONDecodeError, RuntimeError, OSError) as exc:
        raise AdapterError(f"{folder} is not a readable reference adapter: {exc}") from exc
    config = config_from_reference(raw)
    per_layer: dict[int, dict[str, Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _REFERENCE_KEY.match(key)
        if match is None:
            raise AdapterError(f"unexpected key {key!r} in {folder / REFERENCE_WEIGHTS_FILE}")
        per_layer.setdefault(int(match.group(1)), {})[match.group(2)] = tensor.float()
    if not per_layer:
        raise AdapterError(f"{folder / REFERENCE_WEIGHTS_FILE} holds no δ-mem weights")
    tensors: dict[str, Tensor] = {}
    projection_out: dict[int, dict[str, int]] = {}
    hidden_size = 0
    for index, params in sorted(per_layer.items()):
        try:
            packed, widths = _pack_reference_layer(config, params)
        except KeyError as exc:
            raise AdapterError(f"layer {index} of the reference adapter lacks {exc.args[0]}") from exc
        tensors.update({f"layers.{index}.{name}": t for name, t in packed.items()})
        projection_out[index] = widths
        hidden_size = params["memory_q_proj"].shape[1]
    # Layers the reference did not list in target_layers are absent from its file too.
    config = config.model_copy(update={"target_layers": tuple(sorted(per_layer))})
    signature = BackboneSignature(
        name=backbone_name, model_type=None, hidden_size=hidden_size,
        num_layers=max(per_layer) + 1, projection_out=projection_out,
    )
    return AdapterFile(deltamem_version=__version__, config=config, backbone=signature), tensors


def _pack_reference_layer(config: DeltaMemConfig, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, int]]:
    rows = [params["memory_q_proj"], params["memory_k_proj"], params["memory_v_proj"], params["beta_proj"]]
    bias = [params["beta_bias"]]
    if not config.couple_lambda:
        rows.append(params["lambda_proj"])
        bias.append(params["lambda_bias"])
    widths = {h: params[f"delta_{h}_proj"].shape[0] for h in ALL_DELTA_HEADS}
    packed = {
        "memory_in_proj": torch.cat(rows),
        "gate_bias": torch.cat(bias),
        "delta_out_proj": torch.cat([params[f"delta_{h}_proj"] for h in config.ordered_delta_heads()]),
    }
    if config.trainable_delta_scale:
        packed["delta_scale_raw"] = params["delta_scale_raw"]
    if config.delta_o_rmsnorm and "o" in config.delta_heads:
        packed["delta_o_norm_weight"] = params["delta_o_rmsnorm_weight"]
    return packed, widths


def write_adapter_folder(meta: AdapterFile, tensors: Mapping[str, Tensor], path: str | Path) -> Path:
    """Write (config, tensors) as our format: the conversion command's last step."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "deltamem-adapter"}))
    atomic_write_bytes(folder / CONFIG_FILE, (meta.model_dump_json(indent=2) + "\n").encode())
    return folder
