"""`deltamem adapter ...`: convert the reference format, inspect adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltamem_agents.cli._common import console, user_errors

adapter_app = typer.Typer(help="Adapter files: convert the reference format, inspect.", no_args_is_help=True)


@adapter_app.command("convert")
@user_errors
def adapter_convert(
    source: Annotated[Path, typer.Argument(help="reference release folder (delta_mem_config.json + delta_mem_adapter.pt)")],
    destination: Annotated[Path, typer.Argument(help="output folder in our format")],
    backbone_name: Annotated[str | None, typer.Option(help="backbone the adapter belongs to, recorded in the config")] = None,
) -> None:
    """Convert a reference-format adapter into ours (safetensors + validated JSON)."""
    from deltamem_agents.model.adapters import (
        convert_reference_adapter,
        write_adapter_folder,
    )

    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder")
    meta, tensors = convert_reference_adapter(source, backbone_name=backbone_name)
    write_adapter_folder(meta, tensors, destination)
    console.print(
        f"converted {source} -> {destination}: {meta.config.write_strategy.upper()} rank {meta.config.rank}, "
        f"{len(meta.backbone.projection_out)} layers, {sum(t.numel() for t in tensors.values()):,} parameters"
    )


@adapter_app.command("info")
@user_errors
def adapter_info(path: Annotated[Path, typer.Argument(help="adapter folder (either format)")]) -> None:
    """Show an adapter's configuration and size."""
    from deltamem_agents.model.adapters import read_adapter

    meta, tensors = read_adapter(path)
    console.print_json(meta.model_dump_json())
    console.print(f"{sum(t.numel() for t in tensors.values()):,} parameters in {len(tensors)} tensors")
