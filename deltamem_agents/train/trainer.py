"""`train_adapter`: fit the δ-mem parameters of a frozen backbone on conversations.

One step takes ``batch`` conversations; for each, the history is written into a fresh state and
all its probes are answered from that state plus the recent window (`objective`). Only δ-mem
parameters are given to the optimiser (AdamW, warm-up then cosine). Everything random is drawn
from generators seeded by ``seed`` and the step, so a run, and a resumed run, are reproducible.
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from deltamem_agents.data.generic_text import stdlib_docstring_text
from deltamem_agents.data.records import Conversation, read_jsonl
from deltamem_agents.data.splits import make_split
from deltamem_agents.errors import UserError
from deltamem_agents.fileio import atomic_write_text
from deltamem_agents.progress import ProgressLike, tracked
from deltamem_agents.train.checkpoints import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from deltamem_agents.train.config import TrainConfig
from deltamem_agents.train.episodes import Episode, EpisodeBuilder
from deltamem_agents.train.objective import (
    contrast_loss,
    preservation_loss,
    score_answers,
    token_chunks,
    write_history,
)
from deltamem_agents.train.plot import plot_loss, smooth

LOG_FILE = "log.jsonl"
CONFIG_FILE = "train_config.json"
REPORT_FILE = "train_report.json"


class DevLoss(BaseModel):
    step: int
    with_state: float
    without_state: float
    other_state: float | None = None  # each dev conversation answered with the next one's state (the control)


class TrainReport(BaseModel):
    """What a finished run did; the model card is written from it."""

    model_config = ConfigDict(extra="forbid")

    config: TrainConfig
    steps: int
    wall_time_s: float
    tokens: int
    tokens_per_s: float
    final_loss: float
    dev: list[DevLoss]
    adapter: str
    parameters: int
    hardware: dict[str, Any]
    command: str


class TrainingError(UserError, ValueError):
    """A run that cannot start or resume as asked (the message says why)."""


def hardware(device: torch.device) -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine down to ``min_lr_share`` of the peak."""
    warmup = max(1, int(config.warmup_share * config.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.min_lr_share + (1 - config.min_lr_share) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_order(count: int, step: int, batch: int, seed: int) -> list[int]:
    """Which conversations step ``step`` uses: epochs of seeded permutations, laid end to end."""
    picks = []
    for position in range(step * batch, (step + 1) * batch):
        epoch, offset = divmod(position, count)
        permutation = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        picks.append(int(permutation[offset]))
    return picks


def load_data(config: TrainConfig) -> tuple[list[Conversation], list[Conversation]]:
    if config.data_dir is not None:
        train_file, dev_file = config.data_dir / "train.jsonl", config.data_dir / "dev.jsonl"
        if not train_file.is_file():
            raise TrainingError(f"{train_file} does not exist; make it with `deltamem data generate --out {config.data_dir}`")
        return read_jsonl(train_file), read_jsonl(dev_file) if dev_file.is_file() else []
    return (make_split("train", config.train_conversations, seed=config.data_seed),
            make_split("dev", config.dev_conversations, seed=config.data_seed))


class Trainer:
    """Holds the model, the adapter, the data and the optimiser of one run."""

    def __init__(self, config: TrainConfig, out: Path, *, model: Any = None, tokenizer: Any = None,
                 train: Sequence[Conversation] | None = None, dev: Sequence[Conversation] | None = None) -> None:
        from deltamem_agents.model.attach import attach_delta_mem
        from deltamem_agents.model.backbone import DEFAULT_BACKBONE, load_backbone

        self.config, self.out = config, Path(out)
        if config.threads:
            torch.set_num_threads(config.threads)
        loaded_default = model is None and config.backbone is None
        if model is None:
            model, tokenizer = load_backbone(config.backbone, device=config.device, dtype=config.dtype)
        elif tokenizer is None:
            raise TrainingError("a model given to the trainer needs its tokenizer too")
        self.model, self.tokenizer = model, tokenizer
        self.generic_chunks: list[list[int]] = []  # generic prose for the preservation term
        if config.preserve_weight > 0:
            self.generic_chunks = token_chunks(tokenizer, stdlib_docstring_text(), config.preserve_tokens)
            if not self.generic_chunks:
                raise TrainingError(f"the standard library's docstrings give no chunk of {config.preserve_tokens} tokens "
                                    "for the preservation term; lower --preserve-tokens")
        self.model.eval()  # no dropout: the backbone is frozen and the objective deterministic
        self.backbone_name = config.backbone_name or config.backbone or (DEFAULT_BACKBONE if loaded_default else None)
        torch.manual_seed(config.seed)
        self.handle = attach_delta_mem(self.model, config.delta_mem_config())
        if config.init_adapter is not None and not list_checkpoints(self.out):  # with checkpoints, --resume loads them
            try:
                self._load_initial(config.init_adapter)
            except Exception:
                self.handle.detach()  # the caller's model is left as it was given
                raise
        self.device = next(self.model.parameters()).device
        if train is None:
            train, dev = load_data(config)
        self.train_data, self.dev_data = list(train), list(dev or [])
        if not self.train_data:
            raise TrainingError("no training conversations")
        self.builder = EpisodeBuilder(
            tokenizer, window_tokens=config.window_tokens, max_history_tokens=config.max_history_tokens,
            max_read_tokens=config.max_read_tokens, granularity=self.handle.config.segment_granularity,
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.builder.end_id
        params = list(self.handle.parameters())
        for p in params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.step, self.elapsed, self.tokens = 0, 0.0, 0
        self.history: list[dict[str, Any]] = []
        self.dev: list[DevLoss] = []

    def _load_initial(self, path: Path) -> None:
        """Start from an adapter's weights; its δ-mem configuration must be the run's."""
        from deltamem_agents.model.adapters import (
            AdapterError,
            check_backbone,
            load_weights,
            read_adapter,
        )

        try:
            meta, tensors = read_adapter(path)
            check_backbone(meta.backbone, self.model)
            ours = self.handle.config.model_dump(exclude={"target_layers"})
            theirs = meta.config.model_dump(exclude={"target_layers"})
            changed = sorted(k for k in ours if ours[k] != theirs.get(k))
            if changed:
                raise TrainingError(f"--init-adapter {path} has another δ-mem configuration than this run "
                                    f"(differs in {', '.join(changed)}); pass the options it was trained with")
            load_weights(self.handle, tensors, source=str(path))
        except AdapterError as exc:
            raise TrainingError(str(exc)) from None

    # -- one step -------------------------------------------------------------------------------
    def episode(self, conversation: Conversation, step: int) -> Episode:
        rng = random.Random(f"{self.config.seed}:{step}:{conversation.id}")
        return self.builder.build(conversation, snippet_share=self.config.snippet_share, rng=rng)

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step; returns its log fields: ``loss`` (mean answer loss), ``tokens``,
        with the contrastive term ``state_gap`` (mean other-minus-own answer loss on probes
        without notes), with the preservation term ``preserve_kl`` (nats per token)."""
        picks = batch_order(len(self.train_data), step, self.config.batch, self.config.seed)
        episodes = [e for e in (self.episode(self.train_data[i], step) for i in picks) if e.reads]
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * lr_factor(step, self.config)
        self.optimizer.zero_grad(set_to_none=True)
        contrast = self.config.contrast_weight > 0 and len(episodes) > 1
        total, tokens, gaps = 0.0, 0, []

        def written(episode: Episode) -> dict[int, torch.Tensor]:
            return write_history(self.model, self.handle, episode.history_ids, episode.history_segments,
                                 prefill_chunk=self.config.prefill_chunk, history_grad=self.config.history_grad)

        if not contrast:  # one backward per conversation frees its graph before the next is built
            for episode in episodes:
                loss = score_answers(self.model, self.handle, written(episode), episode.window_ids, episode.reads,
                                     pad_id=self.pad_id).mean()
                (loss / len(episodes)).backward()
                total += float(loss.detach()) / len(episodes)
                tokens += episode.tokens
        else:  # every state is also read by another conversation's probes: one backward at the end
            states = [written(episode) for episode in episodes]
            objective = torch.zeros((), device=self.device)
            for i, episode in enumerate(episodes):
                scores = score_answers(self.model, self.handle, states[i], episode.window_ids, episode.reads, pad_id=self.pad_id)
                loss = answer = scores.mean()
                plain = [k for k, read in enumerate(episode.reads) if not read.noted]
                if plain:
                    own = scores.per_read()[plain]
                    other = score_answers(self.model, self.handle, states[(i + 1) % len(episodes)], episode.window_ids,
                                          [episode.reads[k] for k in plain], pad_id=self.pad_id).per_read()
                    loss = loss + self.config.contrast_weight * contrast_loss(own, other, self.config.contrast_margin)
                    gaps.append(float((other - own).detach().mean()))
                objective = objective + loss / len(episodes)
                total += float(answer.detach()) / len(episodes)
                tokens += episode.tokens
            objective.backward()
        row: dict[str, float] = {"loss": total}
        if gaps:
            row["state_gap"] = sum(gaps) / len(gaps)
        if self.generic_chunks:  # its own backward: the generic text's graph is freed before the step
            chunk = self.generic_chunks[batch_order(len(self.generic_chunks), step, 1, self.config.seed)[0]]
            kl = preservation_loss(self.model, self.handle, chunk)
            (self.config.preserve_weight * kl).backward()
            row["preserve_kl"] = float(kl.detach())
            tokens += len(chunk)
        row["tokens"] = tokens
        torch.nn.utils.clip_grad_norm_(list(self.handle.parameters()), self.config.grad_clip)
        self.optimizer.step()
        return row

    @torch.no_grad()
    def dev_loss(self) -> DevLoss | None:
        """Answer loss on the dev conversations with the state, with an empty one (the bare
        backbone with the same window), and with the next dev conversation's state: with vs
        without is what the adapter contributes, own vs other what the memory's content does."""
        if not self.dev_data:
            return None
        episodes = [e for e in (self.builder.build(c) for c in self.dev_data) if e.reads]
        if not episodes:
            return None
        states = [write_history(self.model, self.handle, e.history_ids, e.history_segments,
                                prefill_chunk=self.config.prefill_chunk) for e in episodes]

        def mean_loss(pick: Callable[[int], dict | None]) -> float:
            return sum(float(score_answers(self.model, self.handle, pick(i), e.window_ids, e.reads, pad_id=self.pad_id).mean())
                       for i, e in enumerate(episodes)) / len(episodes)

        return DevLoss(step=self.step, with_state=mean_loss(lambda i: states[i]), without_state=mean_loss(lambda i: None),
                       other_state=mean_loss(lambda i: states[(i + 1) % len(states)]) if len(states) > 1 else None)

    # -- persistence --------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``out``, if any; its config must match."""
        checkpoints = list_checkpoints(self.out)
        if not checkpoints:
            return False
        saved = TrainConfig.model_validate_json((self.out / CONFIG_FILE).read_text())
        ignore = {"steps", "save_every", "eval_every", "keep_checkpoints", "threads", "device"}
        if saved.model_dump(exclude=ignore) != self.config.model_dump(exclude=ignore):
            changed = sorted(k for k, v in saved.model_dump(exclude=ignore).items() if self.config.model_dump()[k] != v)
            raise TrainingError(f"{self.out} holds a run with another configuration (differs in {', '.join(changed)}); "
                                "use another --out, or the same options")
        state = load_checkpoint(checkpoints[-1], self.handle, self.optimizer)
        self.step, self.elapsed, self.tokens = state.step, state.elapsed_s, state.tokens
        log = self.out / LOG_FILE
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        self.history = [r for r in rows if r.get("kind") == "step" and r["step"] < self.step]
        self.dev = [DevLoss.model_validate(r["dev"]) for r in rows if r.get("kind") == "dev" and r["dev"]["step"] <= self.step]
        return True

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.out / LOG_FILE, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def _rewrite_log(self) -> None:
        rows = [dict(r, kind="step") for r in self.history] + [{"kind": "dev", "dev": d.model_dump()} for d in self.dev]
        (self.out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def checkpoint(self) -> Path:
        return save_checkpoint(self.out, self.handle, self.optimizer,
                               TrainerState(step=self.step, elapsed_s=self.elapsed, tokens=self.tokens),
                               backbone_name=self.backbone_name, keep=self.config.keep_checkpoints)

    # -- the run ------------------------------------------------------------------------------------------
    def run(self, *, resume: bool = True, progress: ProgressLike = True, on_step: Callable[[int, float], None] | None = None,
            stop_after: int | None = None) -> TrainReport:
        """Train to ``config.steps`` (or stop after step ``stop_after``, the schedule still planned
        over ``config.steps``), checkpointing as configured; returns the report. ``progress``
        reports the steps, the smoothed loss and the throughput (see deltamem_agents/progress.py)."""
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = resume and self.resume()
        if not resumed:
            if list_checkpoints(self.out):
                raise TrainingError(f"{self.out} already holds checkpoints; pass --resume or use another --out")
            (self.out / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2) + "\n")
            (self.out / LOG_FILE).write_text("")
            first = self.dev_loss()
            if first is not None:
                self.dev.append(first)
                self._log({"kind": "dev", "dev": first.model_dump()})
        else:
            self._rewrite_log()
        with tracked(progress, "training δ-mem", total=self.config.steps, completed=self.step) as bar:
            bar.set_status("loss - · - tok/s")
            last = self.config.steps if stop_after is None else min(stop_after, self.config.steps)
            while self.step < last:
                started = time.perf_counter()
                fields = self.train_step(self.step)
                seconds = time.perf_counter() - started
                self.elapsed += seconds
                loss, tokens = fields["loss"], int(fields["tokens"])
                self.tokens += tokens
                row = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, **fields, "tokens": tokens}
                self.history.append(row)
                self._log(dict(row, kind="step"))
                self.step += 1
                recent = smooth([r["loss"] for r in self.history])[-1]
                bar.set_status(f"loss {recent:.3f} · {self.tokens / max(self.elapsed, 1e-9):.0f} tok/s")
                bar.advance()
                if on_step is not None:
                    on_step(self.step, loss)
                if self.step % self.config.eval_every == 0 or self.step == last:
                    dev = self.dev_loss()
                    if dev is not None:
                        self.dev.append(dev)
                        self._log({"kind": "dev", "dev": dev.model_dump()})
                if self.step % self.config.save_every == 0 or self.step == last:
                    self.checkpoint()
                    self.plot()
        if self.dev_data and (not self.dev or self.dev[-1].step != self.step):
            final = self.dev_loss()  # e.g. a run resumed only to be finished
            if final is not None:
                self.dev.append(final)
                self._log({"kind": "dev", "dev": final.model_dump()})
        return self.finish()

    def plot(self) -> Path:
        return plot_loss([r["step"] for r in self.history], [r["loss"] for r in self.history], self.out / "loss.png",
                         dev=[(d.step, d.with_state, d.without_state, d.other_state) for d in self.dev])

    def finish(self) -> TrainReport:
        from deltamem_agents.model.adapters import save_adapter

        adapter = self.out / "adapter"
        save_adapter(self.handle, adapter, backbone_name=self.backbone_name)
        self.plot()
        tail = [r["loss"] for r in self.history[-50:]]
        report = TrainReport(
            config=self.config, steps=self.step, wall_time_s=round(self.elapsed, 1), tokens=self.tokens,
            tokens_per_s=round(self.tokens / max(self.elapsed, 1e-9), 1), final_loss=sum(tail) / max(len(tail), 1),
            dev=self.dev, adapter=str(adapter), parameters=self.handle.num_parameters, hardware=hardware(self.device),
            command=" ".join(["deltamem", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("deltamem") else " ".join(sys.argv),
        )
        atomic_write_text(self.out / REPORT_FILE, report.model_dump_json(indent=2) + "\n")
        return report


def train_adapter(config: TrainConfig, out: str | Path, *, resume: bool = True, progress: ProgressLike = True,
                  stop_after: int | None = None, **kwargs: Any) -> TrainReport:
    """Train (or continue training) an adapter into ``out``; returns the report."""
    return Trainer(config, Path(out), **kwargs).run(resume=resume, progress=progress, stop_after=stop_after)
