"""The model card of a shipped adapter, written from the training and evaluation reports so
that no number in it is typed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltamem_agents.train.trainer import TrainReport


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def model_card(train: TrainReport, evaluation: Any | None = None, *, title: str, notes: str = "", command: str | None = None) -> str:
    """Markdown: data, steps, seed, wall time, hardware, metrics, and the commands that reproduce it."""
    c = train.config
    hw = train.hardware
    dev = train.dev
    lines = [
        f"# {title}",
        "",
        f"A δ-mem adapter ({c.write_strategy.upper()}, rank {c.rank}, heads {'/'.join(c.delta_heads)}, "
        f"{'all layers' if c.layers is None else f'layers {list(c.layers)}'}, update mode `{c.state_update_mode}`) "
        f"for the frozen backbone `{train.config.backbone or 'smollm2-135m-instruct'}`: {train.parameters:,} parameters.",
        "",
        "## Training",
        "",
        f"- data: {c.train_conversations} generated multi-session conversations (`deltamem_agents.data`, split `train`, "
        f"data seed {c.data_seed}; facts told in passing, preferences, instructions, a task that changes; 6-7 probes each "
        f"asked after the history left a {c.window_tokens}-token window); {c.snippet_share:.0%} of the probes with "
        "retrieved notes in context as the hybrid places them",
        f"- objective: history written into the state (512 tokens per forward), answers supervised with only the last "
        f"{c.window_tokens} history tokens in context; gradient through the state (`--history-grad {c.history_grad}`)"
        + (f"; contrastive term weight {c.contrast_weight}, margin {c.contrast_margin} nats (probes without notes: the answer "
           "loss with another conversation's state must exceed the loss with the conversation's own state)"
           if c.contrast_weight > 0 else ""),
        f"- steps: {train.steps} of {c.steps} planned, batch {c.batch} conversations, AdamW peak lr {c.learning_rate}, "
        f"warm-up {c.warmup_share:.0%}, cosine; seed {c.seed}",
        *([f"- initialised from the adapter `{c.init_adapter}` (see the notes for how it was trained)"] if c.init_adapter else []),
        f"- tokens processed: {train.tokens:,}; wall time of the training steps {train.wall_time_s / 60:.1f} min "
        f"(dev checks and loading excluded); {train.tokens_per_s:.0f} tokens/s",
        f"- hardware: {hw.get('platform')}, {hw.get('cpu_count')} CPUs ({hw.get('threads')} torch threads), "
        f"torch {hw.get('torch')}, device {hw.get('device')}",
        f"- final training loss (mean of the last 50 steps): {train.final_loss:.3f}",
    ]
    if dev:
        lines.append("- dev answer loss, with the state vs an empty state (vs another dev conversation's state): " + "; ".join(
            f"step {d.step}: {d.with_state:.3f} vs {d.without_state:.3f}"
            + (f" (vs {d.other_state:.3f})" if d.other_state is not None else "") for d in dev))
    lines += ["", "Reproduce:", "", "```bash", command or train.command, "```"]
    if evaluation is not None:
        summaries = {s.condition: s for s in evaluation.summaries}
        lines += ["", "## Evaluation", "", f"{evaluation.dataset}: {evaluation.conversations} conversations, "
                  f"{evaluation.probes} probes (`{evaluation.command}`). Scores in %.", "",
                  "| condition | F1 | F1 pref+instr+task | F1 fact | rules followed | prompt tokens | latency ms |",
                  "|---|---|---|---|---|---|---|"]
        for s in summaries.values():
            lines.append(f"| {s.label} | {_pct(s.f1)} | {_pct(s.f1_memory_kinds)} | {_pct(s.f1_by_kind.get('fact'))} | "
                         f"{_pct(s.rules_followed)} | {s.prompt_tokens:.0f} | {s.latency_ms:.0f} |")
        if evaluation.goals:
            lines += ["", "Goals:", ""] + [f"- {'met' if g.met else 'missed'}: {g.name} ({g.detail})" for g in evaluation.goals]
        if evaluation.perplexity:
            p = evaluation.perplexity
            lines += ["", f"Empty-memory check: perplexity on {p['source']} ({p['tokens']} tokens) {p['bare']:.3f} bare, "
                      f"{p['adapter']:.3f} with the adapter writing from empty: ratio {p['ratio']:.4f} (goal: within 2%)."]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def write_model_card(train_report: str | Path, eval_report: str | Path | None, path: str | Path, *, title: str,
                     notes: str = "", command: str | None = None) -> Path:
    from deltamem_agents.eval.report import EvalReport

    train = TrainReport.model_validate_json(Path(train_report).read_text())
    evaluation = EvalReport.model_validate_json(Path(eval_report).read_text()) if eval_report else None
    path = Path(path)
    path.write_text(model_card(train, evaluation, title=title, notes=notes, command=command))
    return path
