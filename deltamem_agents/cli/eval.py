"""`deltamem eval`: the six memory conditions side by side, on generated or LoCoMo conversations;
optionally the free-chat check (does the state make long replies loop?)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltamem_agents.cli._common import Device, console, print_rows, user_errors
from deltamem_agents.cli._runtime import BackbonePathOpt, DtypeOpt, ThreadsOpt
from deltamem_agents.data.prompts import FREE_PROMPTS

if TYPE_CHECKING:
    from deltamem_agents.data.records import Conversation


def choose_conversations(*, locomo: Path | None, data: Path | None, split: str, conversations: int,
                         data_seed: int) -> tuple[list[Conversation], str, str]:
    """The conversations to evaluate, how the report names them, and its default file name.

    A `--data` folder lets an adapter trained on `deltamem data generate` output with other generator
    settings be judged on the test split made with those same settings."""
    from deltamem_agents.data import SPLITS, make_split, read_jsonl
    from deltamem_agents.data.locomo import load_locomo

    if locomo is not None and data is not None:
        raise typer.BadParameter("give --locomo or --data, not both")
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be {', '.join(SPLITS[:-1])} or {SPLITS[-1]}, not {split!r}")
    if locomo is not None:
        return load_locomo(locomo)[:conversations], f"LoCoMo file {locomo.name}", "locomo"
    if data is not None:
        file = data / f"{split}.jsonl"
        if not file.is_file():
            raise typer.BadParameter(f"{file} does not exist; make it with `deltamem data generate --out {data}`")
        chosen = read_jsonl(file)[:conversations]
        if not chosen:
            raise typer.BadParameter(f"{file} holds no conversations")
        return chosen, f"generated {split} split from {data.name}/", f"{data.name}-{split}"
    generated = make_split(split, conversations, seed=data_seed)  # type: ignore[arg-type]
    return generated, f"generated {split} split (seed {data_seed})", f"synthetic-{split}"


@user_errors
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="folder for <name>.json, <name>.md and <name>.png")] = Path("docs/eval"),
    name: Annotated[str | None, typer.Option(help="report file name (default: synthetic-<split> or locomo)")] = None,
    locomo: Annotated[Path | None, typer.Option(help="a LoCoMo-format JSON file (default: generated conversations)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="folder from `deltamem data generate` (default: generate the split here)")] = None,
    split: Annotated[str, typer.Option(help="generated split: train, dev or test")] = "test",
    conversations: Annotated[int, typer.Option(help="conversations to evaluate")] = 30,
    max_probes: Annotated[int | None, typer.Option(help="at most this many probes per conversation")] = None,
    data_seed: Annotated[int, typer.Option(help="seed of the generated conversations")] = 0,
    conditions: Annotated[str, typer.Option(help="comma-separated: no_memory, recent_window, full_history, rag, state, hybrid; controls state_other, hybrid_other")] = "no_memory,recent_window,full_history,rag,state,hybrid",
    adapter: Annotated[str, typer.Option(help="adapter folder, 'auto' (the shipped one) or 'none'")] = "auto",
    backbone: BackbonePathOpt = None,
    window: Annotated[int, typer.Option(help="recent history tokens kept in context")] = 64,
    rag_k: Annotated[int, typer.Option(help="log messages placed by RAG")] = 3,
    router: Annotated[str, typer.Option(help="hybrid router policies, e.g. retrieval=0.75 or cues+retrieval+state")] = "retrieval=0.75",
    router_k: Annotated[int, typer.Option(help="most log messages the hybrid places")] = 3,
    perplexity: Annotated[bool, typer.Option(help="also check perplexity on generic text, bare vs adapter")] = True,
    ppl_passages: Annotated[int, typer.Option(help="generic-text passages for the perplexity check")] = 8,
    ppl_tokens: Annotated[int, typer.Option(help="tokens per passage")] = 384,
    free_prompts: Annotated[int, typer.Option(
        min=0, max=len(FREE_PROMPTS),
        help="free-chat check: this many open prompts, each answered with the state and bare; the repeated-4-gram "
             "share of the replies (0: off)")] = 0,
    free_tokens: Annotated[int, typer.Option(min=1, help="most new tokens of a free-chat reply")] = 256,
    device: Device = None,
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    progress: bool = True,
) -> None:
    """Same backbone, same questions: no memory, recent window, full history, RAG, δ-mem state,
    hybrid. Token F1 / exact match / answer recall, rule checks, prompt tokens and latency per answer;
    the state's content against another conversation's state when the controls run; per category
    on LoCoMo; with --free-prompts, how much long free replies repeat themselves, state vs bare."""
    import torch

    from deltamem_agents.eval.conditions import CONDITIONS, LABELS, EvalConfig
    from deltamem_agents.eval.perplexity import perplexity_check
    from deltamem_agents.eval.report import write_report
    from deltamem_agents.eval.runner import run_eval
    from deltamem_agents.model.adapters import load_adapter
    from deltamem_agents.model.attach import attach_delta_mem
    from deltamem_agents.model.backbone import DEFAULT_BACKBONE, load_backbone
    from deltamem_agents.runtime import find_shipped_adapter
    from deltamem_agents.train.trainer import hardware

    if threads:
        torch.set_num_threads(threads)
    chosen = tuple(c.strip() for c in conditions.split(",") if c.strip())
    unknown = [c for c in chosen if c not in LABELS]
    if unknown:
        raise typer.BadParameter(f"unknown conditions {unknown}; choose from {', '.join(LABELS)}")
    config = EvalConfig(conditions=chosen or CONDITIONS, window_tokens=window, rag_k=rag_k, router=router, router_k=router_k,
                        free_prompts=free_prompts, free_tokens=free_tokens)  # type: ignore[arg-type]
    chosen_data, dataset, default_name = choose_conversations(locomo=locomo, data=data, split=split,
                                                             conversations=conversations, data_seed=data_seed)
    controls = [c for c in config.conditions if c in ("state_other", "hybrid_other")]
    if controls and len(chosen_data) < 2:
        raise typer.BadParameter(f"the controls {', '.join(controls)} answer with another conversation's state: "
                                 f"give at least 2 conversations, not {len(chosen_data)}")
    model, tokenizer = load_backbone(backbone, device=device, dtype=dtype)
    backbone_name = backbone or DEFAULT_BACKBONE
    path = find_shipped_adapter(backbone_name) if adapter == "auto" else None if adapter == "none" else Path(adapter)
    handle = load_adapter(model, path) if path is not None else attach_delta_mem(model)
    ppl = perplexity_check(model, tokenizer, handle, passages=ppl_passages, tokens=ppl_tokens) if perplexity else None
    report = run_eval(model, tokenizer, handle, chosen_data, dataset=dataset, backbone=backbone_name,
                      adapter=str(path) if path else None, config=config, max_probes=max_probes, perplexity=ppl,
                      hardware=hardware(next(model.parameters()).device), progress=progress)
    files = write_report(report, out, name or default_name)
    print_rows([{"condition": s.label, "F1": s.f1, "recall": s.recall, "F1 pref+instr+task": s.f1_memory_kinds,
                 "recall pref+instr+task": s.recall_memory_kinds, "rules": s.rules_followed,
                 "prompt tokens": s.prompt_tokens, "latency ms": s.latency_ms} for s in report.summaries], dataset)
    for goal in report.goals:
        console.print(f"goal {'met' if goal.met else 'missed'}: {goal.name}: {goal.detail}")
    console.print("wrote " + ", ".join(str(f) for f in files))
