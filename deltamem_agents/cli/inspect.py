"""`deltamem inspect`: what a session's δ-mem state holds, per layer (optionally as heatmaps)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deltamem_agents.cli._common import Device, console, fail, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ContextOpt,
    DtypeOpt,
    HomeOpt,
    SessionOpt,
    UserOpt,
    build_runtime,
    open_store,
    require_session,
    session_key,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.core.state import DeltaMemState
    from deltamem_agents.session import SessionKey

PLOT_HINT = "pip install matplotlib"
GATE_EXTRA_KEY = "gate_stats"  # optional {layer: mean write gate} in a session's metadata extra


def _pyplot():
    from deltamem_agents.reporting.plotting import pyplot

    try:
        return pyplot()
    except ImportError:
        raise fail(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None


def plot_state(state: DeltaMemState, path: Path, title: str) -> Path:
    """One heatmap per layer (first batch row, heads side by side), titled with its norm."""
    import torch

    from deltamem_agents.reporting.plotting import save_figure

    plt = _pyplot()
    layers = list(state.layers.items())
    columns = min(6, len(layers))
    rows = math.ceil(len(layers) / columns)
    heads = state.num_heads
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.4 * columns * max(1, heads) ** 0.5, 2.4 * rows + 0.6), squeeze=False
    )
    norms = state.norms()
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (index, tensor) in zip(axes.flat, layers, strict=False):
        row = tensor[0].detach().float().cpu()  # [heads, r, r]
        image = torch.cat(list(row), dim=1).numpy()  # heads side by side: [r, heads * r]
        limit = float(abs(image).max()) or 1.0
        ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        for head in range(1, heads):
            ax.axvline(head * state.rank - 0.5, color="black", linewidth=0.6)
        ax.set_title(f"layer {index}  ‖S‖={norms[index]:.3g}", fontsize=8)
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def probe_gates(key: SessionKey, text: str, runtime_options: dict) -> dict[int, float]:
    """Mean write gate (β) of each layer while reading ``text`` after the session's history.

    The probe is fed as a user message with writing on (the engine computes the gates only when
    it writes), in this process only: nothing is saved, the store is untouched.
    """
    runtime = build_runtime(**runtime_options)
    handle = runtime.handle
    with runtime.store.lock(key):
        current = runtime.session(key.session_id, user_id=key.user_id)
        for layer in handle.layers.values():
            layer.last_beta_mean = None
        with handle.recording_stats():
            current.ingest(text)  # the last forward is the probe's; its writes are never saved
        runtime.close(key.session_id, user_id=key.user_id)
        return {i: layer.last_beta_mean for i, layer in handle.layers.items() if layer.last_beta_mean is not None}


@user_errors
def inspect_session(
    session: SessionOpt,
    plot: Annotated[Path | None, typer.Option("--plot", help="write the per-layer state heatmaps to this PNG")] = None,
    probe: Annotated[
        str | None, typer.Option("--probe", help="load the model and report each layer's write gate on this text (not saved)")
    ] = None,
    user: UserOpt = "default",
    home: HomeOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    context_window: ContextOpt = None,
) -> None:
    """Per-layer state norms and largest values of a session (and gate statistics with --probe)."""
    key = session_key(session, user)
    store = open_store(home)
    require_session(store, key)
    if plot is not None:
        _pyplot()  # a missing matplotlib fails before any work
    if probe is not None and not probe.strip():
        raise fail("--probe needs some text")
    record = store.load(key)
    assert record is not None
    state = record.state
    meta = record.metadata
    if (state is None or not len(state)) and plot is not None:
        raise fail(f"session {key} has no δ-mem state yet (nothing written): nothing to plot")
    console.print(
        f"{key} in {store.where(key)}: turn {meta.turn_count}, {meta.message_count} messages, "
        f"{meta.tokens_written:,} tokens written",
        markup=False, highlight=False,
    )
    if state is None or not len(state):
        console.print("no δ-mem state yet (nothing written)")
        return

    gates: dict[int, float] = {}
    gate_source = ""
    stored = meta.extra.get(GATE_EXTRA_KEY)
    if isinstance(stored, dict):
        gates = {int(i): float(v) for i, v in stored.items()}
        gate_source = "saved with the session"
    if probe is not None:
        gates = probe_gates(key, probe, dict(
            home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, context_window=context_window,
        ))
        gate_source = f"probe of {len(probe)} characters, not saved"

    norms = state.norms()
    total = math.sqrt(sum(v * v for v in norms.values()))
    table = Table(
        title=f"δ-mem state: {len(state)} layers x {state.num_heads} head(s), rank {state.rank}, "
        f"batch {state.batch_size}; total norm {total:.4g}"
    )
    table.add_column("layer", justify="right")
    table.add_column("‖S‖ (Frobenius)", justify="right")
    table.add_column("max |S|", justify="right")
    if gates:
        table.add_column("write gate β (mean)", justify="right")
    for index, tensor in state.layers.items():
        cells = [str(index), f"{norms[index]:.4g}", f"{float(tensor.detach().abs().max()):.4g}"]
        if gates:
            cells.append(f"{gates[index]:.4f}" if index in gates else "-")
        table.add_row(*cells)
    console.print(table)
    if gate_source:
        console.print(f"write gates: {gate_source}", style="dim", markup=False)
    if plot is not None:
        written = plot_state(state, plot, f"{key}: turn {meta.turn_count}, {meta.tokens_written:,} tokens written")
        console.print(f"wrote {written}", markup=False, highlight=False)
