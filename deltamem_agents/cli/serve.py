"""`deltamem serve` and `deltamem serve-loadtest`: the OpenAI-compatible server from the shell.

The flags of `serve` are derived from `ServerSettings` (name, type, default and help), so the
settings model is the one place an option is defined; `--api-keys-file` or
``$DELTAMEM_API_KEYS`` give the keys (never a flag: flags show in ``ps``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from deltamem_agents.cli._common import console, err_console, fail, user_errors
from deltamem_agents.server.settings import ServerSettings


def _flag_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per settings field, annotated for typer."""
    params = []
    for name, field in ServerSettings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("flag") is False:
            continue
        annotation = field.annotation
        dashed = name.replace("_", "-")
        declared = f"--{dashed}/--no-{dashed}" if annotation is bool else f"--{dashed}"
        default = field.get_default(call_default_factory=True)
        option = typer.Option(declared, help=field.description, show_default=default not in (None, []))
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option])
        )
    return params


def _with_settings_flags(func: Any) -> Any:
    """Give ``func(**fields)`` the settings flags as its signature (typer reads it)."""
    params = _flag_parameters()
    func.__signature__ = inspect.Signature(params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


@_with_settings_flags
@user_errors
def serve(**fields: Any) -> None:
    """Serve the OpenAI chat API with δ-mem memory per session (X-Session-Id header or `user`)."""
    settings = ServerSettings.with_env_keys(**fields)
    import torch
    import uvicorn

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # process-wide, so here and not in create_app

    from deltamem_agents.server import create_app

    with err_console.status(f"loading {settings.backbone or 'the embedded backbone'} ...", spinner="dots"):
        app = create_app(settings)
    context = app.state.context
    where = f"http://{settings.host}:{settings.port}"
    console.print(
        f"serving model {settings.model_name!r} ({context.memory.runtime.backbone_name}) on {where}; "
        f"sessions in {context.store}; text log: {'off' if context.memory.textlog is None else 'on'}; "
        f"batching: {'on' if settings.batching else 'off'}; warm sessions: up to {settings.warm_sessions_mb} MiB; "
        f"API keys: {len(settings.api_keys) or 'none (loopback only)'}",
        markup=False, highlight=False, soft_wrap=True,
    )
    if context.memory.runtime.adapter_path is None:
        err_console.print(
            "note: no trained δ-mem adapter: the memory is written and saved but does not change answers yet",
            style="yellow", markup=False, highlight=False,
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=30)


@user_errors
def serve_loadtest(
    url: Annotated[str | None, typer.Option(help="a running server; default: start one on a free loopback port")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="DELTAMEM_API_KEY", help="bearer key for --url")] = None,
    clients: Annotated[int, typer.Option(min=1, help="concurrent clients")] = 32,
    turns: Annotated[int, typer.Option(min=1, help="turns per client")] = 20,
    sessions: Annotated[int, typer.Option(min=1, help="sessions the clients share (client i uses session i mod N)")] = 16,
    max_tokens: Annotated[int, typer.Option(min=1, help="tokens per answer (decoded to the end: ignore end of turn)")] = 16,
    stream_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of clients that stream")] = 0.5,
    deadline: Annotated[float, typer.Option(min=1.0, help="seconds before the remaining turns are abandoned")] = 1800.0,
    out: Annotated[Path, typer.Option("--out", help="folder for serve.json and serve.md")] = Path("docs/benchmarks"),
    backbone: Annotated[str | None, typer.Option(help="backbone of the started server (default: embedded SmolLM2)")] = None,
    batching: Annotated[bool, typer.Option("--batching/--no-batching", help="batching of the started server")] = True,
    state_only: Annotated[bool, typer.Option("--state-only/--textlog", help="started server without/with the text log")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads of the started server")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="weight dtype of the started server, e.g. bfloat16+int8 (default: by device)")
    ] = None,
    compare_serial: Annotated[
        bool, typer.Option(help="with a started server: also run once with batching off, for comparison")
    ] = False,
    baseline_turns: Annotated[
        int, typer.Option(min=0, help="first run 1 client for this many turns on the same server (0: no baseline)")
    ] = 6,
) -> None:
    """Load-test a server: N clients x T turns over S sessions, then check every session's log
    (lost or corrupted turns), latency percentiles and throughput -> serve.json + serve.md."""
    from deltamem_agents.server.loadtest import (
        LoadTestConfig,
        run_against_new_server,
        run_against_server,
        write_reports,
    )

    config = LoadTestConfig(
        clients=clients, turns=turns, sessions=sessions, max_tokens=max_tokens, stream_share=stream_share,
        deadline_s=deadline,
    )
    if url is not None:
        if compare_serial:
            raise fail("--compare-serial needs a started server (leave out --url)")
        if dtype is not None:
            raise fail("--dtype sets the started server's weights; a server at --url has its own (leave out --url)")
        reports = run_against_server(config.model_copy(update={"url": url, "api_key": api_key}), baseline_turns=baseline_turns)
    else:
        modes = [batching, False] if compare_serial and batching else [batching]
        reports = [
            report
            for mode in modes
            for report in run_against_new_server(
                config, backbone=backbone, batching=mode, state_only=state_only, threads=threads, dtype=dtype,
                baseline_turns=baseline_turns, log=err_console.print,
            )
        ]
    for report in reports:
        console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    json_path, md_path = write_reports(reports, out)
    console.print(f"wrote {json_path} and {md_path}")
    if any(r.results.lost or r.results.corrupted for r in reports):
        raise typer.Exit(1)


__all__ = ["serve", "serve_loadtest"]
