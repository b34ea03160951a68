"""The model card of a shipped adapter, written from the training and evaluation reports so
that no number in it is typed by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltamem_agents.reporting.tables import markdown_header, markdown_row, percent
from deltamem_agents.train.trainer import TrainReport

#: the columns of an evaluation's table in the card (the evaluation's own report has more)
EVAL_COLUMNS = ("condition", "F1", "F1 pref+instr+task", "F1 fact", "rules followed", "prompt tokens", "latency ms")


def _data_line(train: TrainReport) -> str:
    """Where the training conversations came from: generated in the run, or a `deltamem data generate` folder
    (whose manifest says with which generator settings, when it is still there)."""
    from deltamem_agents.data import SplitManifest

    c = train.config
    if c.data_dir is None:
        source = (f"{c.train_conversations} generated multi-session conversations (`deltamem_agents.data`, split `train`, "
                  f"data seed {c.data_seed}; facts told in passing, preferences, instructions, a task that changes)")
    else:
        source = f"the `train.jsonl` of the `deltamem data generate` folder `{c.data_dir.name}`"
        manifest = c.data_dir / "manifest.json"
        if manifest.is_file():
            made = SplitManifest.model_validate_json(manifest.read_text())
            low, high = made.generator.filler_per_session
            source += (f" ({made.sizes.train} conversations, data seed {made.seed}; small talk per session {low}-{high}, "
                       f"closing exchanges {made.generator.tail_exchanges}, share of facts told in passing "
                       f"{made.generator.passing_share})")
    return f"- data: {source}; 6-7 probes each asked after the history left a {c.window_tokens}-token window"


def _stage_lines(train: TrainReport, previous: int | None) -> list[str]:
    """One training run: data, objective, schedule, cost, hardware, losses. ``previous`` is the
    number of the stage it started from, if it did."""
    c = train.config
    hw = train.hardware
    lines = [
        _data_line(train) + f"; {c.snippet_share:.0%} of the probes with retrieved notes in context as the hybrid places them",
        f"- objective: history written into the state (512 tokens per forward), answers supervised with only the last "
        f"{c.window_tokens} history tokens in context; gradient through the state (`--history-grad {c.history_grad}`)"
        + (f"; contrastive term weight {c.contrast_weight}, margin {c.contrast_margin} nats (probes without notes: the answer "
           "loss with another conversation's state must exceed the loss with the conversation's own state)"
           if c.contrast_weight > 0 else "")
        + (f"; preservation term weight {c.preserve_weight} (KL from the bare backbone to the adapter writing from an "
           f"empty state, {c.preserve_tokens}-token chunks of the standard library's module docstrings)"
           if c.preserve_weight > 0 else ""),
        f"- steps: {train.steps} of {c.steps} planned, batch {c.batch} conversations, AdamW peak lr {c.learning_rate}, "
        f"warm-up {c.warmup_share:.0%}, cosine; seed {c.seed}",
    ]
    if c.init_adapter is not None:
        origin = f"the adapter of stage {previous}" if previous else "the adapter"
        lines.append(f"- initialised from {origin} (`{c.init_adapter.name}`), fresh optimiser and schedule")
    lines += [
        f"- tokens processed: {train.tokens:,}; wall time of the training steps {train.wall_time_s / 60:.1f} min "
        f"(dev checks and loading excluded); {train.tokens_per_s:.0f} tokens/s",
        f"- hardware: {hw.get('platform')}, {hw.get('cpu_count')} CPUs ({hw.get('threads')} torch threads), "
        f"torch {hw.get('torch')}, device {hw.get('device')}",
        f"- final training loss (mean of the last 50 steps): {train.final_loss:.3f}",
    ]
    if train.dev:
        lines.append("- dev answer loss, with the state vs an empty state (vs another dev conversation's state): " + "; ".join(
            f"step {d.step}: {d.with_state:.3f} vs {d.without_state:.3f}"
            + (f" (vs {d.other_state:.3f})" if d.other_state is not None else "") for d in train.dev))
    return lines


def model_card(stages: TrainReport | Sequence[TrainReport], evaluations: Sequence[Any] = (), *, title: str,
               notes: str = "", command: str | None = None) -> str:
    """Markdown: data, steps, seed, wall time, hardware, metrics (one section per evaluation), and the commands
    that reproduce it. ``stages``: the training run, or the runs in order when each started from the
    previous one's adapter (``--init-adapter``); the adapter is the last one's."""
    stages = [stages] if isinstance(stages, TrainReport) else list(stages)
    if not stages:
        raise ValueError("a model card needs at least one training report")
    train = stages[-1]
    c = train.config
    lines = [
        f"# {title}",
        "",
        f"A δ-mem adapter ({c.write_strategy.upper()}, rank {c.rank}, heads {'/'.join(c.delta_heads)}, "
        f"{'all layers' if c.layers is None else f'layers {list(c.layers)}'}, update mode `{c.state_update_mode}`) "
        f"for the frozen backbone `{train.config.backbone or 'smollm2-135m-instruct'}`: {train.parameters:,} parameters.",
        "",
        "## Training",
        "",
    ]
    if len(stages) == 1:
        lines += _stage_lines(train, None)
    else:
        total = sum(s.wall_time_s for s in stages) / 60
        lines.append(f"{len(stages)} stages, each starting from the previous one's adapter; "
                     f"{sum(s.steps for s in stages)} steps and {total:.1f} min of training steps in all.")
        for number, stage in enumerate(stages, start=1):
            lines += ["", f"### Stage {number}", "", *_stage_lines(stage, number - 1 if number > 1 else None)]
    lines += ["", "Reproduce:", "", "```bash", command or train.command, "```"]
    for number, evaluation in enumerate(evaluations):
        summaries = {s.condition: s for s in evaluation.summaries}
        heading = "## Evaluation" if len(evaluations) == 1 else f"## Evaluation {number + 1}: {evaluation.dataset}"
        lines += ["", heading, "", f"{evaluation.dataset}: {evaluation.conversations} conversations, "
                  f"{evaluation.probes} probes (`{evaluation.command}`). Scores in %.", "",
                  *markdown_header(EVAL_COLUMNS)]
        for s in summaries.values():
            lines.append(markdown_row([s.label, percent(s.f1), percent(s.f1_memory_kinds), percent(s.f1_by_kind.get("fact")),
                                       percent(s.rules_followed), f"{s.prompt_tokens:.0f}", f"{s.latency_ms:.0f}"]))
        if evaluation.goals:
            lines += ["", "Goals:", ""] + [f"- {'met' if g.met else 'missed'}: {g.name} ({g.detail})" for g in evaluation.goals]
        if evaluation.perplexity:
            p = evaluation.perplexity
            lines += ["", f"Empty-memory check: perplexity on {p['source']} ({p['tokens']} tokens) {p['bare']:.3f} bare, "
                      f"{p['adapter']:.3f} with the adapter writing from empty: ratio {p['ratio']:.4f} (goal: within 2%)."]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def write_model_card(train_reports: str | Path | Sequence[str | Path], eval_reports: str | Path | Sequence[str | Path] | None,
                     path: str | Path, *, title: str, notes: str = "", command: str | None = None) -> Path:
    """Write the card (atomically: a shipped card is never left half written) from report files."""
    from deltamem_agents.eval.report import EvalReport
    from deltamem_agents.fileio import atomic_write_bytes

    if isinstance(train_reports, (str, Path)):
        train_reports = [train_reports]
    stages = [TrainReport.model_validate_json(Path(r).read_text()) for r in train_reports]
    if eval_reports is None:
        eval_reports = []
    elif isinstance(eval_reports, (str, Path)):
        eval_reports = [eval_reports]
    evaluations = [EvalReport.model_validate_json(Path(r).read_text()) for r in eval_reports]
    path = Path(path)
    atomic_write_bytes(path, model_card(stages, evaluations, title=title, notes=notes, command=command).encode())
    return path
