"""`deltamem router calibrate | explain`: tuning the retrieval router and asking it why.

`calibrate` reads labelled turns (JSONL); a line that names a session instead of giving hits is
measured on that session first (log search + state probe), which loads the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

from deltamem_agents.cli._common import Device, console, err_console, fail, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ChromaOpt,
    DtypeOpt,
    HomeOpt,
    RouterOpt,
    SessionOpt,
    TextLogOpt,
    UserOpt,
    build_hybrid,
    build_runtime,
    open_store,
    require_session,
    session_key,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.memory.routing import CalibrationExample

router_app = typer.Typer(help="The retrieval router: calibrate its thresholds, explain its decisions.", no_args_is_help=True)


class LabelledQuery(BaseModel):
    """A calibration line that names a session instead of carrying hits and state confidence:
    those are measured on the session (log search + state probe) before calibrating."""

    model_config = ConfigDict(extra="forbid")

    query: str
    session_id: str
    user_id: str = "default"
    needs_retrieval: StrictBool
    id: str | None = None


def read_labelled_lines(path: Path) -> list[CalibrationExample | LabelledQuery]:
    """Each JSONL line is a `CalibrationExample` (hits given) or a `LabelledQuery` (session named)."""
    from deltamem_agents.memory.routing import CalibrationExample

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise fail(f"no such file: {path}") from None
    except UnicodeDecodeError as exc:
        raise fail(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    out: list[CalibrationExample | LabelledQuery] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            model = LabelledQuery if isinstance(data, dict) and "session_id" in data else CalibrationExample
            out.append(model.model_validate(data))
        except json.JSONDecodeError as exc:
            raise fail(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors(include_url=False))
            raise fail(f"{path}:{number}: {problems}") from None
    if not out:
        raise fail(f"{path}: no examples (one JSON object per line)")
    return out


@router_app.command("calibrate")
@user_errors
def calibrate_command(
    labels: Annotated[Path, typer.Argument(help="JSONL: {query, needs_retrieval, and hits [+ state_confidence] or session_id [+ user_id]}")],
    out: Annotated[Path, typer.Option("--out", help="where the calibrated router (JSON) goes")] = Path("router.json"),
    policies: Annotated[str, typer.Option(help="policies to tune, joined by '+'")] = "cues+retrieval+state",
    mode: Annotated[str, typer.Option(help="how votes combine: any, all, majority")] = "any",
    k: Annotated[int, typer.Option(min=1, help="most snippets placed in the context")] = 4,
    token_budget: Annotated[int, typer.Option(min=1, help="most snippet tokens placed in the context")] = 512,
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Tune the router's thresholds for the best F1 on labelled turns; writes a file that
    `--router FILE` (and `MemoryRouter.from_calibration`) reads back."""
    from deltamem_agents.memory.routing import CalibrationExample, calibrate

    if mode not in ("any", "all", "majority"):
        raise fail(f"--mode must be any, all or majority, got {mode!r}")
    lines = read_labelled_lines(labels)
    named = [line for line in lines if isinstance(line, LabelledQuery)]
    if named:
        store = open_store(home)
        for line in named:
            require_session(store, session_key(line.session_id, line.user_id))
        runtime = build_runtime(home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype)
        memory = build_hybrid(runtime, textlog=textlog, chroma_url=chroma_url)
        with err_console.status(f"measuring {len(named)} labelled queries on their sessions ..."):
            examples = [
                line if isinstance(line, CalibrationExample) else CalibrationExample(
                    **memory.router_input(line.query, session_id=line.session_id, user_id=line.user_id).model_dump(),
                    needs_retrieval=line.needs_retrieval, id=line.id,
                )
                for line in lines
            ]
    else:
        examples = list(lines)  # type: ignore[arg-type]
    result = calibrate(examples, policies=policies, mode=mode, k=k, token_budget=token_budget)  # type: ignore[arg-type]
    result.save(out)
    console.print(
        f"{result.n_examples} examples ({result.n_positive} need retrieval), {result.candidates_tried} settings tried",
        markup=False,
    )
    console.print(f"calibrated: {result.config.spec()}  F1 {result.f1:.3f} (defaults: {result.default_metrics.f1:.3f})", markup=False)
    console.print(f"wrote {out}; use it with --router {out}", markup=False)


@router_app.command("explain")
@user_errors
def explain_command(
    question: Annotated[str, typer.Argument(help="the user turn to route")],
    session: SessionOpt,
    router: RouterOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the decision as JSON")] = False,
    user: UserOpt = "default",
    home: HomeOpt = None,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
) -> None:
    """Show what the router would decide for QUESTION in a session, and why (nothing is written)."""
    key = session_key(session, user)
    require_session(open_store(home), key)
    runtime = build_runtime(home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, quiet=as_json)
    memory = build_hybrid(runtime, textlog=textlog, chroma_url=chroma_url, router=router)
    decision = memory.explain(question, session_id=key.session_id, user_id=key.user_id)
    if as_json:
        typer.echo(decision.model_dump_json(indent=2))
    else:
        console.print(decision.explain(), markup=False, highlight=False)
