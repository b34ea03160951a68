"""`deltamem train`: fit a δ-mem adapter on a frozen backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltamem_agents.cli._common import Device, console, fail, parse_ints, user_errors
from deltamem_agents.cli._runtime import BackbonePathOpt, DtypeOpt, ThreadsOpt


@user_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="run folder: checkpoints, log, loss.png, adapter/, train_report.json")] = Path("runs/train"),
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 1000,
    batch: Annotated[int, typer.Option(help="conversations per step (all their probes are used)")] = 2,
    learning_rate: Annotated[float, typer.Option("--lr", help="peak learning rate (AdamW, warm-up + cosine)")] = 2e-3,
    strategy: Annotated[str, typer.Option(help="write strategy: tsw, ssw or msw")] = "tsw",
    rank: Annotated[int, typer.Option(help="state rank r")] = 8,
    heads: Annotated[str, typer.Option(help="projections that get corrections, e.g. q,k,v,o or q,o")] = "q,k,v,o",
    layers: Annotated[str | None, typer.Option(help="decoder layers, e.g. 8,9,10 (default: all)")] = None,
    update_mode: Annotated[str, typer.Option(help="standard, lambda_outside or no_lambda")] = "no_lambda",
    beta_bias: Annotated[float, typer.Option(help="initial write-gate bias")] = -3.0,
    window: Annotated[int, typer.Option(help="recent history tokens kept in context while answering")] = 64,
    max_history: Annotated[int, typer.Option(help="most history tokens written into the state")] = 1536,
    max_read: Annotated[int, typer.Option(help="most tokens of note + question + answer")] = 256,
    history_grad: Annotated[str, typer.Option(help="state (no history activations kept) or full (exact, more memory)")] = "state",
    snippet_share: Annotated[float, typer.Option(help="share of probes trained with retrieved notes in context")] = 0.25,
    contrast_weight: Annotated[float, typer.Option(help="weight of the contrastive term (own state must beat another conversation's); 0: off")] = 0.0,
    contrast_margin: Annotated[float, typer.Option(help="nats the other-state answer loss must exceed the own-state loss by")] = 1.0,
    preserve_weight: Annotated[float, typer.Option(help="weight of the preservation term (KL to the bare backbone on generic prose, adapter writing); 0: off")] = 0.0,
    preserve_tokens: Annotated[int, typer.Option(help="tokens of generic prose per step for the preservation term")] = 384,
    init_adapter: Annotated[Path | None, typer.Option(help="start from this adapter's weights (same δ-mem options)")] = None,
    data: Annotated[Path | None, typer.Option(help="folder with train.jsonl and dev.jsonl (default: generate)")] = None,
    train_conversations: Annotated[int, typer.Option(help="generated training conversations")] = 4000,
    dev_conversations: Annotated[int, typer.Option(help="generated dev conversations")] = 8,
    data_seed: int = 0,
    seed: Annotated[int, typer.Option(help="seed of the initialisation and the data order")] = 0,
    backbone: BackbonePathOpt = None,
    backbone_name: Annotated[str | None, typer.Option(help="name recorded in the adapter")] = None,
    device: Device = None,
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    save_every: int = 50,
    eval_every: int = 250,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = False,
    stop_after: Annotated[int | None, typer.Option(help="stop after this step (the schedule stays planned over --steps)")] = None,
    progress: bool = True,
) -> None:
    """Fit the δ-mem parameters of a frozen backbone: history written into the state, answers
    supervised with the history out of context (the paper's objective)."""
    from deltamem_agents.train import TrainConfig, TrainingError, train_adapter

    config = TrainConfig(
        backbone=backbone, backbone_name=backbone_name, write_strategy=strategy, rank=rank,  # type: ignore[arg-type]
        layers=parse_ints(layers) if layers else None, delta_heads=tuple(h.strip() for h in heads.split(",") if h.strip()),  # type: ignore[arg-type]
        state_update_mode=update_mode, beta_bias_init=beta_bias, data_dir=data,  # type: ignore[arg-type]
        train_conversations=train_conversations, dev_conversations=dev_conversations, data_seed=data_seed,
        window_tokens=window, max_history_tokens=max_history, max_read_tokens=max_read, snippet_share=snippet_share,
        history_grad=history_grad, contrast_weight=contrast_weight, contrast_margin=contrast_margin,
        preserve_weight=preserve_weight, preserve_tokens=preserve_tokens,
        init_adapter=init_adapter, steps=steps, batch=batch, learning_rate=learning_rate, seed=seed,  # type: ignore[arg-type]
        device=device, dtype=dtype, threads=threads, save_every=save_every, eval_every=eval_every,
    )
    try:
        report = train_adapter(config, out, resume=resume, progress=progress, stop_after=stop_after)
    except TrainingError as exc:
        raise fail(str(exc)) from None
    dev = report.dev[-1] if report.dev else None
    console.print(
        f"trained {report.steps} steps in {report.wall_time_s:.0f} s ({report.tokens_per_s:.0f} tok/s); final loss "
        f"{report.final_loss:.3f}" + (f"; dev answer loss {dev.with_state:.3f} with the state vs {dev.without_state:.3f} without" if dev else "")
    )
    console.print(f"adapter: {report.adapter}  loss curve: {out / 'loss.png'}")
