"""Calibrating a router: grid-search the policies' thresholds for the best F1 on labelled turns.

Each threshold policy's feature is computed once per example; its vectorised vote
(:meth:`~deltamem_agents.memory.routing.policies.ThresholdPolicy.votes`) then scores every
candidate threshold at once, and the votes combine by the router's own rule
(:func:`~deltamem_agents.memory.routing.decision.combine_votes`). So the calibrated router,
replayed on the same examples, makes exactly the predictions the search scored.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from deltamem_agents.memory.routing.decision import Mode, RouterInput, combine_votes
from deltamem_agents.memory.routing.policies import (
    AGAINST,
    POLICIES,
    RETRIEVE,
    BasePolicy,
    ThresholdPolicy,
)
from deltamem_agents.memory.routing.router import (
    CalibrationDataError,
    CalibrationMetrics,
    CalibrationResult,
    RouterConfig,
    RouterError,
    router_from_spec,
)
from deltamem_agents.memory.textlog import LogHit

__all__ = ["GRID_KEYS", "CalibrationExample", "calibrate", "load_calibration_set"]

#: the thresholds :func:`calibrate` searches: one per threshold policy in the registry
GRID_KEYS: tuple[str, ...] = tuple(
    sorted(cls.threshold_field for cls in POLICIES.values() if issubclass(cls, ThresholdPolicy))
)


class CalibrationExample(BaseModel):
    """One labelled turn: the router's input, and whether retrieval was needed to answer it."""

    model_config = ConfigDict(extra="forbid")

    query: str
    hits: list[LogHit] = Field(default_factory=list)
    state_confidence: float | None = Field(None, ge=0.0, le=1.0)
    needs_retrieval: StrictBool
    id: str | None = Field(None, description="an optional label for the example")

    def router_input(self) -> RouterInput:
        return RouterInput(query=self.query, hits=self.hits, state_confidence=self.state_confidence)



def load_calibration_set(path: str | Path) -> list[CalibrationExample]:
    """Labelled examples from JSONL, one object a line (blank lines are skipped)::

        {"query": "...", "hits": [{"id": "a", "text": "...", "distance": 0.31}],
         "state_confidence": 0.2, "needs_retrieval": true}

    ``hits`` and ``state_confidence`` may be left out. Errors name the file and line.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise CalibrationDataError(f"{path}: no such calibration set") from exc
    except UnicodeDecodeError as exc:
        raise CalibrationDataError(f"{path}: not UTF-8 text ({exc})") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(data, dict):
            raise CalibrationDataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            examples.append(CalibrationExample.model_validate(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise CalibrationDataError(f"{where}: {problems}") from exc
    if not examples:
        raise CalibrationDataError(f"{path}: no examples (expected one JSON object per line)")
    return examples



def _validated_axis(policy: ThresholdPolicy, features: np.ndarray, grid: Mapping[str, Sequence[float]], cap: int) -> list[Any]:
    """The thresholds to try for ``policy``: ``grid``'s if it names them, else the policy's candidates."""
    key = policy.threshold_field
    values = list(grid[key]) if key in grid else policy.candidates(features, cap)
    if not values:
        raise RouterError(f"grid[{key!r}] is empty")
    try:  # validate each candidate through the policy itself
        return [getattr(type(policy)(**{key: v}), key) for v in values]
    except ValidationError as exc:
        raise RouterError(f"bad grid[{key!r}] value: {exc.errors()[0]['msg']}") from exc


def _counts(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Votes for and against retrieval as int16 counts, from an array of tri-state votes."""
    return (votes == RETRIEVE).astype(np.int16), (votes == AGAINST).astype(np.int16)


def _fixed_counts(policies: Sequence[BasePolicy], inputs: Sequence[RouterInput]) -> tuple[np.ndarray, np.ndarray]:
    """Votes for and against per example of the policies without a threshold (the baselines)."""
    yes = np.zeros(len(inputs), dtype=np.int16)
    no = np.zeros(len(inputs), dtype=np.int16)
    for policy in policies:
        wants = [policy.vote(inp).wants_retrieval for inp in inputs]
        yes += np.array([w is True for w in wants], dtype=np.int16)
        no += np.array([w is False for w in wants], dtype=np.int16)
    return yes, no


def calibrate(
    examples: Sequence[CalibrationExample],
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    policies: str = "cues+retrieval+state",
    mode: Mode = "any",
    k: int = 4,
    token_budget: int = 512,
    max_candidates: int = 64,
) -> CalibrationResult:
    """Grid-search the thresholds of ``policies`` for the best F1 of "retrieval wanted" vs the labels.

    Searched: ``max_distance`` (retrieval), ``min_confidence`` (state), ``min_cues`` (cues, 1 and
    2), for the policies present in ``policies`` (a :func:`router_from_spec` string, whose
    thresholds are the defaults compared against). By default the distance and confidence
    candidates are midpoints between the values seen in ``examples`` (at most
    ``max_candidates`` each), plus one beyond each end and the default; ``grid`` replaces the
    candidates of any of the keys. Ties go to higher accuracy, then to the earlier candidate.
    """
    examples = list(examples)
    if not examples:
        raise CalibrationDataError("calibrate needs at least one labelled example")
    bad = [i for i, e in enumerate(examples) if not isinstance(e, CalibrationExample)]
    if bad:
        raise CalibrationDataError(
            f"example {bad[0]} is not a CalibrationExample (load JSONL with load_calibration_set)"
        )
    labels = np.array([e.needs_retrieval for e in examples], dtype=bool)
    if not labels.any():
        raise CalibrationDataError(
            "no example has needs_retrieval = true: F1 of retrieval is undefined; label some turns that need the log"
        )
    grid = dict(grid or {})
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise RouterError(f"unknown grid keys {unknown}: use {', '.join(GRID_KEYS)}")
    base = router_from_spec(policies, mode=mode, k=k, token_budget=token_budget)
    built: list[BasePolicy] = list(base.policies)  # type: ignore[arg-type]
    inputs = [e.router_input() for e in examples]
    n = len(examples)

    # The searched policies in registry order (the order of the search, hence of its ties).
    present = {p.name: p for p in built}
    searched = [p for name in POLICIES if isinstance(p := present.get(name), ThresholdPolicy)]
    # Per example, what each vote depends on (the thresholds do not change these) ...
    features = [p.features(inputs) for p in searched]
    axes = [_validated_axis(p, f, grid, max_candidates) for p, f in zip(searched, features)]
    # ... then every policy's (yes, no) counts for each of its candidates at once: (candidates, n).
    tables = [
        _counts(p.votes(f[np.newaxis, :], np.asarray(axis, dtype=float)[:, np.newaxis]))
        for p, f, axis in zip(searched, features, axes)
    ]
    fixed_yes, fixed_no = _fixed_counts([p for p in built if not isinstance(p, ThresholdPolicy)], inputs)

    def metrics(pred: np.ndarray) -> CalibrationMetrics:
        tp = int(np.sum(pred & labels))
        fp = int(np.sum(pred & ~labels))
        fn = int(np.sum(~pred & labels))
        return CalibrationMetrics.from_counts(tp, fp, fn, n - tp - fp - fn)

    best_key: tuple[float, float] | None = None
    best_choice: tuple[int, ...] = ()
    best_metrics: CalibrationMetrics | None = None
    tried = 0
    for choice in itertools.product(*(range(len(axis)) for axis in axes)):
        tried += 1
        yes, no = fixed_yes.copy(), fixed_no.copy()
        for (table_yes, table_no), c in zip(tables, choice):
            yes += table_yes[c]
            no += table_no[c]
        m = metrics(combine_votes(yes, no, mode))
        key = (round(m.f1, 12), round(m.accuracy, 12))
        if best_key is None or key > best_key:
            best_key, best_choice, best_metrics = key, choice, m
    assert best_metrics is not None

    default_yes, default_no = fixed_yes.copy(), fixed_no.copy()
    for p, f in zip(searched, features):
        yes, no = _counts(p.votes(f, p.threshold))
        default_yes += yes
        default_no += no
    default_metrics = metrics(combine_votes(default_yes, default_no, mode))

    chosen = {p.name: axis[c] for p, axis, c in zip(searched, axes, best_choice)}
    tuned = [
        p.model_copy(update={p.threshold_field: chosen[p.name]}) if isinstance(p, ThresholdPolicy) else p
        for p in built
    ]
    return CalibrationResult(
        config=RouterConfig(policies=tuned, mode=mode, k=k, token_budget=token_budget),  # type: ignore[arg-type]
        metrics=best_metrics,
        default_metrics=default_metrics,
        n_examples=n,
        n_positive=int(labels.sum()),
        candidates_tried=tried,
    )
