"""The retrieval router: per user turn, answer from δ-mem's state, from the text log, or both.

δ-mem's state is lossy working memory; the text log (:class:`~deltamem_agents.memory.TextLog`)
keeps what was said word for word. For each incoming user turn the router looks at the query,
the log hits already searched for it (best first) and, when known, how confidently the state
answers the query (``state_confidence`` in [0, 1], computed elsewhere from δ-mem read energy),
and returns a :class:`RouteDecision`:

- ``"state"``: rely on the state only, place no snippet;
- ``"both"``: keep the state and place the selected log snippets in the context;
- ``"retrieve"``: retrieval is wanted *and* the state is known to be weak (the state policy voted
  for retrieval), so the snippets carry the answer.

Deciding is a pure function of its input (:meth:`MemoryRouter.decide`);
:meth:`MemoryRouter.route` also logs the decision (logger ``deltamem_agents.router``, INFO) and
calls the callbacks. Policies vote, a mode combines the votes::

    router = router_from_spec("cues+retrieval+state")          # mode "any", k 4, 512 tokens
    decision = router.route(RouterInput(query=q, hits=log.search(q, user_id="ada", k=8),
                                        state_confidence=0.12))
    decision.route, decision.reason, decision.retrieved_ids, decision.skipped

A calibrated router is saved as a :class:`CalibrationResult` (its :class:`RouterConfig` and
metrics), which :meth:`MemoryRouter.from_calibration` reads back; the search that produces it is
in :mod:`deltamem_agents.memory.routing.calibration`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deltamem_agents.errors import UserError
from deltamem_agents.memory.routing.decision import (
    MODES,
    Mode,
    PolicyVote,
    Route,
    RouteDecision,
    RouterInput,
    SkippedHit,
    combine_votes,
)
from deltamem_agents.memory.routing.policies import (
    POLICIES,
    POLICY_NAMES,
    BasePolicy,
    BuiltinPolicy,
    RetrievalConfidencePolicy,
    RoutingPolicy,
    StateConfidencePolicy,
    ThresholdPolicy,
    VerbatimCuePolicy,
)
from deltamem_agents.memory.textlog import LogHit

if TYPE_CHECKING:
    from deltamem_agents.memory.textlog import TextLog

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "CalibrationDataError",
    "CalibrationMetrics",
    "CalibrationResult",
    "MemoryRouter",
    "RouterConfig",
    "RouterError",
    "default_count_tokens",
    "parse_spec",
    "router_from_spec",
]

logger = logging.getLogger("deltamem_agents.router")
CALIBRATION_FORMAT = "deltamem-router-calibration"
CALIBRATION_VERSION = 1


class RouterError(UserError, ValueError):
    """Bad router configuration or spec (the message says the fix)."""


def default_count_tokens(text: str) -> int:
    """A tokenizer-free estimate: whitespace-separated words × 1.3, rounded up."""
    return math.ceil(len(text.split()) * 1.3)


class RouterConfig(BaseModel):
    """A router's settings as plain data (what a calibration file stores)."""

    model_config = ConfigDict(extra="forbid")

    policies: list[BuiltinPolicy] = Field(min_length=1)
    mode: Mode = "any"
    k: int = Field(4, ge=1, description="most snippets placed in the context")
    token_budget: int = Field(512, ge=1, description="most snippet tokens placed in the context")

    def spec(self) -> str:
        """The policies as a :func:`router_from_spec` string with their thresholds, e.g. ``cues=1+retrieval=0.6``."""
        parts = []
        for p in self.policies:
            field = p.threshold_field
            parts.append(p.name if field is None else f"{p.name}={getattr(p, field)!r}")
        return "+".join(parts)


# -- the router --------------------------------------------------------------------------------------
class MemoryRouter:
    """Combines policy votes into a :class:`RouteDecision` and picks the snippets.

    ``mode``: retrieval is wanted if ``any`` / ``all`` / a strict ``majority`` of the votes that
    do not abstain want it (no vote at all: not wanted). ``k`` and ``token_budget`` bound the
    snippets (counted by ``count_tokens``, default :func:`default_count_tokens`); a hit that does
    not fit is skipped and the skip recorded. ``callbacks`` receive every decision made by
    :meth:`route`. Default policies: cues + retrieval + state.
    """

    def __init__(
        self,
        policies: Sequence[RoutingPolicy] | None = None,
        *,
        mode: Mode = "any",
        k: int = 4,
        token_budget: int = 512,
        count_tokens: Callable[[str], int] | None = None,
        callbacks: Sequence[Callable[[RouteDecision], None]] = (),
    ) -> None:
        if policies is None:
            policies = [VerbatimCuePolicy(), RetrievalConfidencePolicy(), StateConfidencePolicy()]
        policies = list(policies)
        if not policies:
            raise RouterError("a router needs at least one policy, e.g. router_from_spec('cues+retrieval+state')")
        for p in policies:
            if not isinstance(getattr(p, "name", None), str) or not callable(getattr(p, "vote", None)):
                raise RouterError(f"a policy needs a str `name` and a `vote(inp) -> PolicyVote` method, got {p!r}")
        if mode not in MODES:
            raise RouterError(f"mode must be 'any', 'all' or 'majority', got {mode!r}")
        for what, value in (("k", k), ("token_budget", token_budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RouterError(f"{what} must be an int >= 1, got {value!r}")
        if count_tokens is not None and not callable(count_tokens):
            raise RouterError(f"count_tokens must be a function str -> int, got {count_tokens!r}")
        callbacks = list(callbacks)
        bad = [c for c in callbacks if not callable(c)]
        if bad:
            raise RouterError(f"callbacks must be functions taking a RouteDecision, got {bad[0]!r}")
        self.policies: list[RoutingPolicy] = policies
        self.mode: Mode = mode
        self.k = k
        self.token_budget = token_budget
        self.count_tokens: Callable[[str], int] = count_tokens or default_count_tokens
        self.callbacks: list[Callable[[RouteDecision], None]] = callbacks

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: RouterConfig | Mapping[str, Any], **kwargs: Any) -> MemoryRouter:
        """A router from a :class:`RouterConfig` or a plain dict; ``kwargs``: count_tokens, callbacks."""
        if not isinstance(config, RouterConfig):
            try:
                config = RouterConfig.model_validate(config)
            except ValidationError as exc:
                raise RouterError(f"invalid router config: {exc}") from exc
        return cls(config.policies, mode=config.mode, k=config.k, token_budget=config.token_budget, **kwargs)

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> MemoryRouter:
        """Same as :func:`router_from_spec`."""
        return router_from_spec(spec, **kwargs)

    @classmethod
    def from_calibration(cls, path: str | Path, **kwargs: Any) -> MemoryRouter:
        """The router saved by :meth:`CalibrationResult.save`; ``kwargs``: count_tokens, callbacks."""
        return CalibrationResult.load(path).router(**kwargs)

    def config(self) -> RouterConfig:
        """The settings as data; only routers made of the built-in policies have one."""
        custom = [p for p in self.policies if not isinstance(p, tuple(POLICIES.values()))]
        if custom:
            raise RouterError(f"policy {custom[0].name!r} is not a built-in policy: it cannot be saved as config")
        policies: list[Any] = list(self.policies)
        return RouterConfig(policies=policies, mode=self.mode, k=self.k, token_budget=self.token_budget)

    def __repr__(self) -> str:
        names = "+".join(p.name for p in self.policies)
        return f"MemoryRouter({names!r}, mode={self.mode!r}, k={self.k}, token_budget={self.token_budget})"

    # -- deciding -------------------------------------------------------------------------------
    def votes(self, inp: RouterInput) -> list[PolicyVote]:
        return [p.vote(inp) for p in self.policies]

    def wants_retrieval(self, votes: Sequence[PolicyVote]) -> bool:
        yes = sum(v.wants_retrieval is True for v in votes)
        no = sum(v.wants_retrieval is False for v in votes)
        return bool(combine_votes(yes, no, self.mode))

    def decide(self, inp: RouterInput | Mapping[str, Any]) -> RouteDecision:
        """The decision for one turn: a pure function of ``inp`` (no logging, no callbacks)."""
        started = time.perf_counter()
        if not isinstance(inp, RouterInput):
            inp = RouterInput.model_validate(inp)
        votes = self.votes(inp)
        wanted = self.wants_retrieval(votes)
        state_weak = any(
            getattr(p, "speaks_for_state", False) and v.wants_retrieval is True for p, v in zip(self.policies, votes)
        )
        if wanted:
            snippets, skipped, tokens = self._select(inp.hits)
        else:
            snippets, tokens = [], 0
            skipped = [SkippedHit(id=h.id, why="not wanted", distance=h.distance) for h in inp.hits]
        if not wanted:
            route: Route = "state"
        elif not snippets:
            route = "state"
        else:
            route = "retrieve" if state_weak else "both"
        reason = self._reason(route, wanted, votes, snippets, skipped, bool(inp.hits))
        return RouteDecision(
            route=route,
            retrieval_wanted=wanted,
            reason=reason,
            votes=votes,
            mode=self.mode,
            retrieved_ids=[h.id for h in snippets],
            skipped=skipped,
            snippets=snippets,
            tokens_used=tokens,
            token_budget=self.token_budget,
            k=self.k,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    def route(self, inp: RouterInput | Mapping[str, Any]) -> RouteDecision:
        """:meth:`decide`, then log the decision at INFO and call each callback with it."""
        decision = self.decide(inp)
        logger.info(
            "route=%s wanted=%s retrieved=%s skipped=%d tokens=%d/%d %.2fms: %s",
            decision.route,
            decision.retrieval_wanted,
            decision.retrieved_ids,
            len(decision.skipped),
            decision.tokens_used,
            decision.token_budget,
            decision.elapsed_ms,
            decision.reason,
            extra={"route_decision": decision},
        )
        for callback in self.callbacks:
            callback(decision)
        return decision

    def search_and_route(
        self,
        log: TextLog,
        query: str,
        *,
        user_id: str,
        session_id: str | None = None,
        state_confidence: float | None = None,
        fetch_k: int | None = None,
    ) -> RouteDecision:
        """Search ``log`` for ``query`` (``fetch_k`` hits, default ``2 * k`` to leave spares), then :meth:`route`."""
        hits = log.search(query, user_id=user_id, session_id=session_id, k=fetch_k or 2 * self.k)
        return self.route(RouterInput(query=query, hits=hits, state_confidence=state_confidence))

    def _max_distance(self) -> float | None:
        return next((p.max_distance for p in self.policies if isinstance(p, RetrievalConfidencePolicy)), None)

    def _select(self, hits: Sequence[LogHit]) -> tuple[list[LogHit], list[SkippedHit], int]:
        max_distance = self._max_distance()
        chosen: list[LogHit] = []
        skipped: list[SkippedHit] = []
        seen: set[str] = set()
        used = 0
        for hit in hits:
            if hit.id in seen:
                skipped.append(SkippedHit(id=hit.id, why="duplicate", distance=hit.distance))
                continue
            seen.add(hit.id)
            if max_distance is not None and hit.distance is not None and hit.distance > max_distance:
                skipped.append(SkippedHit(id=hit.id, why="too far", distance=hit.distance))
                continue
            if len(chosen) >= self.k:
                skipped.append(SkippedHit(id=hit.id, why="over k", distance=hit.distance))
                continue
            tokens = int(self.count_tokens(hit.text))
            if used + tokens > self.token_budget:
                skipped.append(SkippedHit(id=hit.id, why="over budget", distance=hit.distance, tokens=tokens))
                continue
            chosen.append(hit)
            used += tokens
        return chosen, skipped, used

    def _reason(
        self,
        route: Route,
        wanted: bool,
        votes: Sequence[PolicyVote],
        snippets: Sequence[LogHit],
        skipped: Sequence[SkippedHit],
        had_hits: bool,
    ) -> str:
        active = [v for v in votes if v.wants_retrieval is not None]
        if not active:
            return "state only: every policy abstained, so no retrieval."
        deciding = [v for v in active if v.wants_retrieval == wanted]
        if not deciding:  # defensive: every mode has a deciding side once someone votes
            deciding = active
        rule = {"any": "any vote", "all": "all votes", "majority": "a majority of votes"}[self.mode]
        because = "; ".join(f"{v.policy}: {v.reason}" for v in deciding)
        if not wanted:
            against = {"any": "no vote wants retrieval", "all": "not every vote wants retrieval",
                       "majority": "no majority wants retrieval"}[self.mode]  # fmt: skip
            return f"state only: {against} ({because})."
        if not snippets:
            why = "no hits" if not had_hits else _skip_summary(skipped)
            return f"state only: retrieval wanted by {rule} ({because}), but no snippet to place ({why})."
        what = "retrieve (working memory is weak)" if route == "retrieve" else "both state and retrieval"
        placed = f"placed {len(snippets)} snippet{'s' if len(snippets) != 1 else ''}"
        if skipped:
            placed += f", skipped {_skip_summary(skipped)}"
        return f"{what}: retrieval wanted by {rule} ({because}); {placed}."


def _skip_summary(skipped: Sequence[SkippedHit]) -> str:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.why] = counts.get(s.why, 0) + 1
    return ", ".join(f"{n} {why}" for why, n in counts.items())


def parse_spec(spec: str) -> list[BasePolicy]:
    """The policies a :func:`router_from_spec` string names, each with its threshold if given."""
    if not isinstance(spec, str) or not spec.strip():
        raise RouterError(f"empty router spec {spec!r}: use policy names joined by '+', e.g. 'cues+retrieval+state'")
    if any(sep in spec for sep in ",|&"):
        raise RouterError(
            f"router spec {spec!r}: join policy names with '+' (e.g. 'cues+retrieval'); "
            "choose how votes combine with mode='any'|'all'|'majority'"
        )
    policies: list[BasePolicy] = []
    seen: set[str] = set()

    for part in spec.split("+"):
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in POLICIES:
            raise RouterError(
                f"unknown router policy {name!r} in {spec!r}: known policies are {', '.join(POLICY_NAMES)}"
            )
        if name in seen:
            raise RouterError(f"policy {name!r} appears twice in router spec {spec!r}")
        seen.add(name)
        kwargs: dict[str, Any] = {}
        if "=" in part:
            field = POLICIES[name].threshold_field
            if field is None:
                raise RouterError(f"policy {name!r} takes no threshold, got {part.strip()!r} in {spec!r}")
            kwargs[field] = value
        try:
            policies.append(POLICIES[name](**kwargs))
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors())
            raise RouterError(f"bad threshold in {part.strip()!r} of router spec {spec!r}: {problem}") from exc
    return policies


def router_from_spec(
    spec: str = "cues+retrieval+state",
    *,
    mode: Mode = "any",
    k: int = 4,
    token_budget: int = 512,
    count_tokens: Callable[[str], int] | None = None,
    callbacks: Sequence[Callable[[RouteDecision], None]] = (),
) -> MemoryRouter:
    """A router from policy names joined by ``+``, each optionally with its threshold.

    Names: ``cues`` (``=min_cues``), ``retrieval`` (``=max_distance``), ``state``
    (``=min_confidence``), ``always``, ``never``. Examples: ``"cues+retrieval+state"``,
    ``"retrieval=0.45+state=0.2"``, ``"always"``, ``"never"``. ``mode`` says how votes combine.
    """
    return MemoryRouter(
        parse_spec(spec), mode=mode, k=k, token_budget=token_budget, count_tokens=count_tokens, callbacks=callbacks
    )


# -- the saved router: what calibration writes and from_calibration reads --------------------------
# (here, beside MemoryRouter, because each of the two names the other)
class CalibrationDataError(RouterError):
    """A calibration set or calibration file that cannot be used (names the file and line)."""


class CalibrationMetrics(BaseModel):
    """How well "retrieval wanted" matches ``needs_retrieval`` (retrieval is the positive class)."""

    model_config = ConfigDict(frozen=True)

    f1: float
    precision: float
    recall: float
    accuracy: float
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, tn: int) -> CalibrationMetrics:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        total = tp + fp + fn + tn
        return cls(f1=f1, precision=precision, recall=recall, accuracy=(tp + tn) / total if total else 0.0,
                   tp=tp, fp=fp, fn=fn, tn=tn)  # fmt: skip


class CalibrationResult(BaseModel):
    """The best thresholds found by :func:`calibrate`, their metrics, and those of the defaults."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["deltamem-router-calibration"] = CALIBRATION_FORMAT
    version: int = CALIBRATION_VERSION
    config: RouterConfig
    metrics: CalibrationMetrics
    default_metrics: CalibrationMetrics
    n_examples: int
    n_positive: int
    candidates_tried: int

    def _threshold(self, cls: type[ThresholdPolicy]) -> Any:
        return next((getattr(p, cls.threshold_field) for p in self.config.policies if isinstance(p, cls)), None)

    @property
    def max_distance(self) -> float | None:
        return self._threshold(RetrievalConfidencePolicy)

    @property
    def min_confidence(self) -> float | None:
        return self._threshold(StateConfidencePolicy)

    @property
    def min_cues(self) -> int | None:
        return self._threshold(VerbatimCuePolicy)

    @property
    def f1(self) -> float:
        return self.metrics.f1

    @property
    def precision(self) -> float:
        return self.metrics.precision

    @property
    def recall(self) -> float:
        return self.metrics.recall

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy

    def router(self, **kwargs: Any) -> MemoryRouter:
        """A router with the calibrated thresholds; ``kwargs``: count_tokens, callbacks."""
        return MemoryRouter.from_config(self.config, **kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically: a temp file, then rename); returns the path."""
        from deltamem_agents.fileio import atomic_write_text

        path = Path(path).expanduser()
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationResult:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CalibrationDataError(
                f"{path}: no such calibration file (write one with CalibrationResult.save)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise CalibrationDataError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationDataError(
                f"{path}: not a router calibration file (no \"format\": \"{CALIBRATION_FORMAT}\")"
            )
        if data.get("version") != CALIBRATION_VERSION:
            raise CalibrationDataError(
                f"{path}: calibration format version {data.get('version')!r}, this version reads {CALIBRATION_VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CalibrationDataError(f"{path}: invalid calibration file: {exc}") from exc
