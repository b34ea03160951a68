"""`deltamem`: the command line, a thin face over the library.

One module per command group (`chat` and `ask`, `ingest`, `sessions` and `forget`, `router`,
...), their shared options and builders in `_runtime`, their progress bars in `_progress`;
errors the user can fix are printed as one line (no traceback) and exit with status 2 (see
`_common.user_errors`).
"""

from __future__ import annotations

import os

import typer

from deltamem_agents.cli._progress import command_progress
from deltamem_agents.cli.adapter import adapter_app
from deltamem_agents.cli.archive import export_command, import_command
from deltamem_agents.cli.bench import bench_app
from deltamem_agents.cli.chat import ask, chat
from deltamem_agents.cli.data import data_app
from deltamem_agents.cli.demo import demo
from deltamem_agents.cli.eval import evaluate
from deltamem_agents.cli.ingest import ingest
from deltamem_agents.cli.inspect import inspect_session
from deltamem_agents.cli.router import router_app
from deltamem_agents.cli.serve import serve, serve_loadtest
from deltamem_agents.cli.sessions import forget, sessions_app
from deltamem_agents.cli.train import train

app = typer.Typer(help="δ-mem agent memory: sessions, benchmarks and adapters.", no_args_is_help=True)


@app.callback()
def _draw_progress_with_rich(ctx: typer.Context) -> None:
    # Every command's progress=True (library code included) draws rich bars on stderr until it ends.
    ctx.with_resource(command_progress())


app.add_typer(bench_app, name="bench")
app.add_typer(adapter_app, name="adapter")
app.add_typer(data_app, name="data")
app.command("chat")(chat)
app.command("ingest")(ingest)
app.command("ask")(ask)
app.add_typer(sessions_app, name="sessions")
app.command("inspect")(inspect_session)
app.add_typer(router_app, name="router")
app.command("forget")(forget)
app.command("export")(export_command)
app.command("import")(import_command)
app.command("serve")(serve)
app.command("serve-loadtest")(serve_loadtest)
app.command("demo")(demo)
app.command("train")(train)
app.command("eval")(evaluate)
app.command("mcp")(__import__("deltamem_agents.cli.mcp", fromlist=["mcp"]).mcp)


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


__all__ = ["app", "main"]
