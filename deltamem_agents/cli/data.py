"""`deltamem data generate`: write train/dev/test splits of generated conversations to a folder,
the layout `deltamem train --data` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltamem_agents.cli._common import console, fail, parse_ints, user_errors

data_app = typer.Typer(help="Generated conversations for training and evaluation.", no_args_is_help=True)


def _range(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    values = parse_ints(text)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise fail(f"{option} takes N or LOW,HIGH, got {text!r}")
    return values[0], values[1]


@data_app.command("generate")
@user_errors
def generate(
    out: Annotated[Path, typer.Option("--out", help="folder for train.jsonl, dev.jsonl, test.jsonl and manifest.json")],
    train: Annotated[int, typer.Option(help="training conversations")] = 2000,
    dev: Annotated[int, typer.Option(help="dev conversations")] = 24,
    test: Annotated[int, typer.Option(help="test conversations")] = 30,
    seed: int = 0,
    config: Annotated[Path | None, typer.Option(help="a GeneratorConfig as JSON (the options below override it)")] = None,
    sessions: Annotated[str | None, typer.Option(help="sessions per conversation: N or LOW,HIGH")] = None,
    filler: Annotated[str | None, typer.Option(help="small-talk exchanges per session: N or LOW,HIGH (0: only news)")] = None,
    tail: Annotated[int | None, typer.Option(help="small-talk exchanges after the last news")] = None,
    passing_share: Annotated[float | None, typer.Option(help="share of facts/preferences told inside small talk")] = None,
    vocabulary: Annotated[str | None, typer.Option(
        help="closed: the short value lists every split shares (as earlier adapters trained); open: large pools, "
             "each split its own, so no dev/test value occurs in training")] = None,
    dialogue_share: Annotated[float | None, typer.Option(
        min=0, max=1, help="share of LoCoMo-style two-speaker dialogues over dated sessions")] = None,
    force: Annotated[bool, typer.Option(help="overwrite existing split files")] = False,
) -> None:
    """Generate conversations (facts told in passing, preferences, instructions, a task that
    changes, then questions) as train/dev/test splits that never share a conversation."""
    from deltamem_agents.data import GeneratorConfig, SplitSizes, write_splits

    base = GeneratorConfig.model_validate_json(config.read_text()) if config else GeneratorConfig()
    overrides = {"sessions": _range(sessions, "--sessions"), "filler_per_session": _range(filler, "--filler"),
                 "tail_exchanges": tail, "passing_share": passing_share, "vocabulary": vocabulary,
                 "dialogue_share": dialogue_share}
    generator = GeneratorConfig.model_validate({**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    existing = [p.name for p in (out / f"{s}.jsonl" for s in ("train", "dev", "test")) if p.exists()]
    if existing and not force:
        raise fail(f"{out} already holds {', '.join(existing)}; pass --force to overwrite")
    manifest = write_splits(out, seed=seed, sizes=SplitSizes(train=train, dev=dev, test=test), config=generator)
    console.print(f"wrote {train} train, {dev} dev, {test} test conversations to {out} (seed {manifest.seed}; manifest.json)")
    if manifest.held_out_answers_disjoint is False:
        raise fail(f"dev/test answers overlap training: {', '.join(manifest.held_out_answers_overlapping[:10])}")
