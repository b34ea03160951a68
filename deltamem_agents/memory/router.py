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

Thresholds are calibrated on a labelled JSONL set with :func:`load_calibration_set` and
:func:`calibrate`; :meth:`CalibrationResult.save` writes JSON that
:meth:`MemoryRouter.from_calibration` reads back.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from deltamem_agents.memory.textlog import LogHit

if TYPE_CHECKING:
    from deltamem_agents.memory.textlog import TextLog

__all__ = [
    "AlwaysRetrieve",
    "CUE_KINDS",
    "CalibrationDataError",
    "CalibrationExample",
    "CalibrationMetrics",
    "CalibrationResult",
    "MemoryRouter",
    "NeverRetrieve",
    "POLICY_NAMES",
    "PolicyVote",
    "RetrievalConfidencePolicy",
    "Route",
    "RouteDecision",
    "RouterConfig",
    "RouterError",
    "RouterInput",
    "RoutingPolicy",
    "SkippedHit",
    "StateConfidencePolicy",
    "VerbatimCuePolicy",
    "calibrate",
    "default_count_tokens",
    "find_cues",
    "load_calibration_set",
    "router_from_spec",
]

logger = logging.getLogger("deltamem_agents.router")

Route = Literal["state", "retrieve", "both"]
Mode = Literal["any", "all", "majority"]
SkipReason = Literal["duplicate", "too far", "over k", "over budget", "not wanted"]
CueKind = Literal["number", "date", "name", "quote", "exact", "recall", "question"]
CUE_KINDS: tuple[str, ...] = ("number", "date", "name", "quote", "exact", "recall", "question")
CALIBRATION_FORMAT = "deltamem-router-calibration"
CALIBRATION_VERSION = 1


class RouterError(ValueError):
    """Bad router configuration or spec (the message says the fix)."""


class CalibrationDataError(RouterError):
    """A calibration set or calibration file that cannot be used (names the file and line)."""


# -- inputs and outputs ------------------------------------------------------------------------------
class RouterInput(BaseModel):
    """What the router sees for one user turn.

    ``hits``: log hits already searched for ``query``, best first. ``state_confidence``: how
    strongly δ-mem's state answers the query, in [0, 1]; ``None`` when unknown.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str
    hits: list[LogHit] = Field(default_factory=list)
    state_confidence: float | None = Field(None, ge=0.0, le=1.0)


class PolicyVote(BaseModel):
    """One policy's vote: ``wants_retrieval`` True/False, or None to abstain."""

    model_config = ConfigDict(frozen=True)

    policy: str
    wants_retrieval: bool | None
    score: float
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)


class SkippedHit(BaseModel):
    """A hit that was not placed in the context, and why."""

    model_config = ConfigDict(frozen=True)

    id: str
    why: SkipReason
    distance: float | None = None
    tokens: int | None = None


class RouteDecision(BaseModel):
    """The router's decision for one turn, with everything needed to see why.

    ``retrieval_wanted`` is the combined verdict of the votes; ``route`` is what is done: it is
    ``"state"`` when retrieval was wanted but no snippet survived selection (the reason says so).
    ``skipped`` lists every hit not placed, with why; ``tokens_used`` counts snippet text only.
    """

    model_config = ConfigDict(frozen=True)

    route: Route
    retrieval_wanted: bool
    reason: str
    votes: list[PolicyVote]
    mode: Mode
    retrieved_ids: list[str]
    skipped: list[SkippedHit]
    snippets: list[LogHit]
    tokens_used: int
    token_budget: int
    k: int
    elapsed_ms: float

    @property
    def skipped_ids(self) -> list[str]:
        return [s.id for s in self.skipped]

    @property
    def uses_state(self) -> bool:
        return self.route in ("state", "both")

    @property
    def uses_retrieval(self) -> bool:
        return self.route in ("retrieve", "both")

    def vote(self, policy: str) -> PolicyVote | None:
        """The vote of the policy named ``policy`` (the first, if several share the name)."""
        return next((v for v in self.votes if v.policy == policy), None)

    def explain(self) -> str:
        """A few lines for a person: the route, each vote, each snippet used or skipped."""
        lines = [f"route {self.route}: {self.reason}"]
        for v in self.votes:
            verdict = {True: "retrieve", False: "no retrieval", None: "abstains"}[v.wants_retrieval]
            lines.append(f"  vote {v.policy}: {verdict}, score {v.score:.3g}: {v.reason}")
        for hit in self.snippets:
            dist = "" if hit.distance is None else f" at distance {hit.distance:.3f}"
            lines.append(f"  used {hit.id}{dist}")
        for s in self.skipped:
            dist = "" if s.distance is None else f" at distance {s.distance:.3f}"
            lines.append(f"  skipped {s.id}{dist}: {s.why}")
        lines.append(f"  {self.tokens_used}/{self.token_budget} tokens, {self.elapsed_ms:.2f} ms")
        return "\n".join(lines)


# -- policies ----------------------------------------------------------------------------------------
@runtime_checkable
class RoutingPolicy(Protocol):
    """Anything with a ``name`` and ``vote(inp) -> PolicyVote`` can vote in a router.

    A policy that judges the state itself sets ``speaks_for_state = True``: its vote for
    retrieval turns a wanted retrieval into route ``"retrieve"`` instead of ``"both"``.
    """

    name: str

    def vote(self, inp: RouterInput) -> PolicyVote: ...


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    speaks_for_state: ClassVar[bool] = False

    def _vote(self, wants: bool | None, score: float, reason: str, **details: Any) -> PolicyVote:
        name: str = self.name  # type: ignore[attr-defined]
        return PolicyVote(policy=name, wants_retrieval=wants, score=score, reason=reason, details=details)


def _ci(*patterns: str) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


_NUM_WORD = r"(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a few|few|several|a couple of)"
_DATE_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b"),  # 2024-05-01
    re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"),  # 01/05/2024, 1.5.24
    *_ci(
        r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\b\.?)?",  # 14:30, 9:05 pm
        r"\b\d{1,2}\s*[ap]\.?m\b\.?",  # 9am, 9 p.m.
        r"\b(?:noon|midnight)\b",
        r"\b(?:january|february|april|june|july|august|september|october|november|december)\b",
        r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b",
        r"\b(?:yesterday|tomorrow|tonight|last night|the day before|the other day)\b",
        r"\b(?:last|next|this past)\s+"
        r"(?:week(?:end)?|month|year|summer|winter|spring|autumn|fall|morning|evening|night)\b",
        rf"\b{_NUM_WORD}\s+(?:minutes?|hours?|days?|weeks?|months?|years?)\s+ago\b",
        r"\b(?:in|since|until|till|by|from|before|after)\s+(?:19|20)\d{2}\b",
        # "May" and "March" are also a verb and a modal: a date only next to a number or a preposition
        r"\b(?:march|may)\s+\d{1,2}(?:st|nd|rd|th)?\b",
        r"\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:march|may)\b",
        r"\b(?:in|of|since|until|till|by|last|next|early|late|mid-?)\s+(?:march|may)\b",
    ),
    re.compile(r"\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?\s+\d{1,2}\b"),  # Dec 3
]
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUOTE_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r'"([^"\n]+)"'),
    re.compile(r"“([^”\n]+)”"),
    re.compile(r"(?<!\w)'([^'\n]+?)'(?!\w)"),  # not an apostrophe: it's, dogs' ...
    re.compile(r"(?<!\w)‘([^’\n]+?)’(?!\w)"),
]
_EXACT = _ci(r"\b(?:exact|exactly|verbatim|word[- ]for[- ]word|precise|precisely|quote[ds]?|quoting)\b")
_RECALL = _ci(
    r"\bwhat did (?:i|you|we|he|she|they)\s+(?:just\s+|actually\s+)?"
    r"(?:say|tell|mention|write|decide|agree|call|name|ask|suggest|recommend)\b",
    r"\bremind me\b",
    r"\b(?:did|have|had) (?:i|we|you) (?:ever\s+)?(?:tell|told|mention(?:ed)?|say|said|write|wrote)\b",
    r"\b(?:i|you|we) (?:said|told you|told me|mentioned|wrote)\b",
    r"\b(?:do|did) you (?:still\s+)?(?:remember|recall)\b",
    r"\bremember (?:when|what|where|who|which|that|the|my|our)\b",
    r"\b(?:last time|earlier|previously)\b",
)
_QUESTION = _ci(
    r"\bhow (?:much|many|long|old|far|often|big|tall)\b",
    r"\bwhen (?:did|do|does|is|was|were|will|are|should)\b",
    r"\bwhich\b",
    r"\bwhat (?:time|date|day|year|number|size|colou?r|name|address|price)\b",
    r"\bwhat (?:was|is|were) (?:the|my|our|your|his|her|their) (?:name|number|address|date|time|code|price|amount)\b",
    r"\bwho (?:is|was|did|were)\b",
)
_WORD_CAP = re.compile(r"(?<![\w'’])[^\W\d_][\w'’-]*")
_SENTENCE_OPENERS = "\"'“‘([{*-–—•"
_NOT_NAMES = frozenset({"I", "OK", "Ok"})


def _spans(patterns: Iterable[re.Pattern[str]], text: str) -> list[tuple[int, int, str]]:
    """Matches of all ``patterns``, in text order, leaving out those inside a longer one."""
    found = sorted({(m.start(), m.end(), m.group(0)) for p in patterns for m in p.finditer(text)},
                   key=lambda s: (s[0], -s[1]))  # fmt: skip
    outer: list[tuple[int, int, str]] = []
    for span in found:
        if not outer or span[1] > outer[-1][1]:
            outer.append(span)
    return outer


def _mask(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _at_sentence_start(text: str, start: int) -> bool:
    before = text[:start]
    stripped = before.rstrip()
    if not stripped or "\n" in before[len(stripped) :]:
        return True
    stripped = stripped.rstrip(_SENTENCE_OPENERS).rstrip()
    return not stripped or stripped[-1] in ".!?…:;\n"


def find_cues(query: str) -> dict[str, list[str]]:
    """The verbatim-detail cues in ``query``: ``{kind: [matched text, ...]}`` for each kind found.

    Kinds (``CUE_KINDS``): ``number`` (digits outside dates), ``date`` (dates, times, month and
    weekday names, "yesterday", "last week", "3 days ago"), ``name`` (capitalised words not at a
    sentence start, other than "I"), ``quote`` ("..." or '...'), ``exact`` ("exactly",
    "verbatim", "word for word", "quote"), ``recall`` ("what did I say", "remind me", "you said"),
    ``question`` ("how much", "how many", "when did", "which", "what time").
    """
    found: dict[str, list[str]] = {}

    def add(kind: str, items: Iterable[str]) -> None:
        items = [i.strip() for i in items if i.strip()]
        if items:
            found.setdefault(kind, [])
            found[kind].extend(i for i in dict.fromkeys(items) if i not in found[kind])

    dates = _spans(_DATE_PATTERNS, query)
    add("date", (s for _, _, s in dates))
    undated = _mask(query, dates)
    add("number", (m.group(0) for m in _NUMBER.finditer(undated)))
    quotes = _spans(_QUOTE_PATTERNS, query)
    add("quote", (s for _, _, s in quotes))
    names = []
    for m in _WORD_CAP.finditer(undated):
        word = m.group(0)
        base = re.split(r"['’]", word, maxsplit=1)[0]
        if word[0].isupper() and base not in _NOT_NAMES and not _at_sentence_start(undated, m.start()):
            names.append(word)
    add("name", names)
    add("exact", (s for _, _, s in _spans(_EXACT, query)))
    add("recall", (s for _, _, s in _spans(_RECALL, query)))
    add("question", (s for _, _, s in _spans(_QUESTION, query)))
    return {kind: found[kind] for kind in CUE_KINDS if kind in found}


class VerbatimCuePolicy(_Policy):
    """Retrieve when the query asks for verbatim detail: at least ``min_cues`` distinct cue kinds.

    ``score`` is the number of distinct cue kinds found (see :func:`find_cues`); ``kinds``
    restricts which kinds count.
    """

    name: Literal["cues"] = "cues"
    min_cues: int = Field(1, ge=1, description="distinct cue kinds needed to vote for retrieval")
    kinds: tuple[CueKind, ...] = Field(
        CUE_KINDS, min_length=1, description="cue kinds that count"  # type: ignore[arg-type]
    )

    def cue_score(self, query: str) -> tuple[int, dict[str, list[str]]]:
        cues = {k: v for k, v in find_cues(query).items() if k in self.kinds}
        return len(cues), cues

    def vote(self, inp: RouterInput) -> PolicyVote:
        score, cues = self.cue_score(inp.query)
        if not cues:
            return self._vote(False, 0.0, "no verbatim cues in the query", cues={})
        listed = ", ".join(f"{kind} {', '.join(repr(x) for x in items[:2])}" for kind, items in cues.items())
        wants = score >= self.min_cues
        need = "" if wants or self.min_cues == 1 else f" (fewer than {self.min_cues} kinds)"
        return self._vote(wants, float(score), f"found {listed}{need}", cues=cues)


def _best_distance(hits: Sequence[LogHit]) -> float | None:
    distances = [h.distance for h in hits if h.distance is not None]
    return min(distances) if distances else None


class RetrievalConfidencePolicy(_Policy):
    """Retrieve when the best hit is within ``max_distance`` (cosine: 0 same, 2 opposite).

    ``score`` is ``1 - best distance``. No hits: a vote against retrieval; hits without
    distances (not from ``search``): abstain. When this policy is in a router, only hits within
    ``max_distance`` are placed in the context.
    """

    name: Literal["retrieval"] = "retrieval"
    max_distance: float = Field(0.6, ge=0.0, description="farthest best hit that still votes for retrieval")

    def vote(self, inp: RouterInput) -> PolicyVote:
        if not inp.hits:
            return self._vote(False, 0.0, "the log has nothing close (no hits)", best_distance=None)
        best = _best_distance(inp.hits)
        if best is None:
            return self._vote(None, 0.0, "the hits carry no distance to judge", best_distance=None)
        wants = best <= self.max_distance
        op = "<=" if wants else ">"
        close = "" if wants else ": the log has nothing close"
        return self._vote(
            wants,
            1.0 - best,
            f"best hit at distance {best:.3f} {op} {self.max_distance:.3f}{close}",
            best_distance=best,
        )


class StateConfidencePolicy(_Policy):
    """Retrieve when the state's own confidence is below ``min_confidence``; abstain when unknown."""

    name: Literal["state"] = "state"
    min_confidence: float = Field(0.3, ge=0.0, le=1.0, description="state confidence below which to retrieve")
    speaks_for_state: ClassVar[bool] = True

    def vote(self, inp: RouterInput) -> PolicyVote:
        conf = inp.state_confidence
        if conf is None:
            return self._vote(None, 0.0, "state confidence unknown")
        if conf < self.min_confidence:
            return self._vote(
                True, conf, f"working memory does not answer this (confidence {conf:.3f} < {self.min_confidence:.3f})"
            )
        return self._vote(
            False, conf, f"working memory answers this (confidence {conf:.3f} >= {self.min_confidence:.3f})"
        )


class AlwaysRetrieve(_Policy):
    """Baseline: always vote for retrieval."""

    name: Literal["always"] = "always"

    def vote(self, inp: RouterInput) -> PolicyVote:
        return self._vote(True, 1.0, "always retrieves (baseline)")


class NeverRetrieve(_Policy):
    """Baseline: never vote for retrieval."""

    name: Literal["never"] = "never"

    def vote(self, inp: RouterInput) -> PolicyVote:
        return self._vote(False, 0.0, "never retrieves (baseline)")


BuiltinPolicy = Annotated[
    VerbatimCuePolicy | RetrievalConfidencePolicy | StateConfidencePolicy | AlwaysRetrieve | NeverRetrieve,
    Field(discriminator="name"),
]
_POLICY_CLASSES: dict[str, type[_Policy]] = {
    "cues": VerbatimCuePolicy,
    "retrieval": RetrievalConfidencePolicy,
    "state": StateConfidencePolicy,
    "always": AlwaysRetrieve,
    "never": NeverRetrieve,
}
_POLICY_THRESHOLD = {"cues": "min_cues", "retrieval": "max_distance", "state": "min_confidence"}
POLICY_NAMES: tuple[str, ...] = tuple(_POLICY_CLASSES)


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
            field = _POLICY_THRESHOLD.get(p.name)
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
        if mode not in ("any", "all", "majority"):
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
        custom = [p for p in self.policies if not isinstance(p, tuple(_POLICY_CLASSES.values()))]
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
        if self.mode == "any":
            return yes > 0
        if self.mode == "all":
            return yes > 0 and no == 0
        return yes > no

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


def _parse_spec(spec: str) -> list[_Policy]:
    if not isinstance(spec, str) or not spec.strip():
        raise RouterError(f"empty router spec {spec!r}: use policy names joined by '+', e.g. 'cues+retrieval+state'")
    if any(sep in spec for sep in ",|&"):
        raise RouterError(
            f"router spec {spec!r}: join policy names with '+' (e.g. 'cues+retrieval'); "
            "choose how votes combine with mode='any'|'all'|'majority'"
        )
    policies: list[_Policy] = []
    seen: set[str] = set()
    for part in spec.split("+"):
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in _POLICY_CLASSES:
            raise RouterError(
                f"unknown router policy {name!r} in {spec!r}: known policies are {', '.join(POLICY_NAMES)}"
            )
        if name in seen:
            raise RouterError(f"policy {name!r} appears twice in router spec {spec!r}")
        seen.add(name)
        kwargs: dict[str, Any] = {}
        if "=" in part:
            field = _POLICY_THRESHOLD.get(name)
            if field is None:
                raise RouterError(f"policy {name!r} takes no threshold, got {part.strip()!r} in {spec!r}")
            kwargs[field] = value
        try:
            policies.append(_POLICY_CLASSES[name](**kwargs))
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
        _parse_spec(spec), mode=mode, k=k, token_budget=token_budget, count_tokens=count_tokens, callbacks=callbacks
    )


# -- calibration -------------------------------------------------------------------------------------
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

    def _threshold(self, cls: type[_Policy], field: str) -> Any:
        return next((getattr(p, field) for p in self.config.policies if isinstance(p, cls)), None)

    @property
    def max_distance(self) -> float | None:
        return self._threshold(RetrievalConfidencePolicy, "max_distance")

    @property
    def min_confidence(self) -> float | None:
        return self._threshold(StateConfidencePolicy, "min_confidence")

    @property
    def min_cues(self) -> int | None:
        return self._threshold(VerbatimCuePolicy, "min_cues")

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
        import os

        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
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


_GRID_KEYS = ("max_distance", "min_confidence", "min_cues")


def _candidates(
    values: Any,
    *,
    default: float,
    below: Callable[[float], float | None],
    above: Callable[[float], float],
    cap: int,
) -> list[float]:
    """Thresholds that realise every split of ``values``: midpoints, one below all, one above all, the default."""
    import numpy as np

    uniq = np.unique(np.asarray(values, dtype=float))
    if uniq.size > cap:
        uniq = np.unique(np.quantile(uniq, np.linspace(0.0, 1.0, cap)))
    out = {float(default)}
    if uniq.size:
        out.update(float(x) for x in (uniq[:-1] + uniq[1:]) / 2.0)
        low = below(float(uniq[0]))
        if low is not None:
            out.add(low)
        out.add(above(float(uniq[-1])))
    return sorted(out)


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
    import numpy as np

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
    unknown = sorted(set(grid) - set(_GRID_KEYS))
    if unknown:
        raise RouterError(f"unknown grid keys {unknown}: use {', '.join(_GRID_KEYS)}")
    base = router_from_spec(policies, mode=mode, k=k, token_budget=token_budget)
    present = {p.name: p for p in base.policies}
    n = len(examples)

    # Per example, what each policy's vote depends on (the thresholds do not change these).
    cue_scores = np.zeros(n)
    best = np.full(n, np.nan)
    has_hits = np.zeros(n, dtype=bool)
    conf = np.full(n, np.nan)
    cue_policy = present.get("cues")
    for i, e in enumerate(examples):
        if isinstance(cue_policy, VerbatimCuePolicy):
            cue_scores[i] = cue_policy.cue_score(e.query)[0]
        has_hits[i] = bool(e.hits)
        d = _best_distance(e.hits)
        best[i] = np.nan if d is None else d
        conf[i] = np.nan if e.state_confidence is None else e.state_confidence

    def axis(key: str, policy: str, derived: Callable[[], list[float]]) -> list[Any]:
        if policy not in present:
            return [None]
        values = list(grid[key]) if key in grid else derived()
        if not values:
            raise RouterError(f"grid[{key!r}] is empty")
        try:  # validate each candidate through the policy itself
            return [getattr(type(present[policy])(**{key: v}), key) for v in values]
        except ValidationError as exc:
            raise RouterError(f"bad grid[{key!r}] value: {exc.errors()[0]['msg']}") from exc

    # retrieve when distance <= max_distance: below all is half the smallest (none if it is 0)
    md_axis = axis(
        "max_distance",
        "retrieval",
        lambda: _candidates(
            best[~np.isnan(best)],
            default=present["retrieval"].max_distance,
            below=lambda lo: lo / 2.0 if lo > 0 else None,
            above=lambda hi: hi + 0.05,
            cap=max_candidates,
        ),
    )
    # retrieve when confidence < min_confidence: 0 retrieves never, 1 always (but at confidence 1)
    mc_axis = axis(
        "min_confidence",
        "state",
        lambda: _candidates(
            conf[~np.isnan(conf)],
            default=present["state"].min_confidence,
            below=lambda lo: 0.0,
            above=lambda hi: (hi + 1.0) / 2.0 if hi < 1.0 else 1.0,
            cap=max_candidates,
        ),
    )
    cue_axis = axis("min_cues", "cues", lambda: sorted({1, 2, present["cues"].min_cues}))

    # Votes as (yes, no) counts per example; thresholds of absent policies are None.
    fixed_yes = np.zeros(n, dtype=np.int16)
    fixed_no = np.zeros(n, dtype=np.int16)
    for p in base.policies:
        if isinstance(p, AlwaysRetrieve):
            fixed_yes += 1
        elif isinstance(p, NeverRetrieve):
            fixed_no += 1

    def retrieval_votes(md: float | None) -> tuple[np.ndarray, np.ndarray]:
        if md is None:
            return np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int16)
        known = ~np.isnan(best)
        yes = known & (np.nan_to_num(best, nan=np.inf) <= md)
        no = (known & ~yes) | ~has_hits
        return yes.astype(np.int16), no.astype(np.int16)

    def state_votes(mc: float | None) -> tuple[np.ndarray, np.ndarray]:
        if mc is None:
            return np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int16)
        known = ~np.isnan(conf)
        yes = known & (np.nan_to_num(conf, nan=np.inf) < mc)
        return yes.astype(np.int16), (known & ~yes).astype(np.int16)

    def cue_votes(mc: int | None) -> tuple[np.ndarray, np.ndarray]:
        if mc is None:
            return np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int16)
        yes = cue_scores >= mc
        return yes.astype(np.int16), (~yes).astype(np.int16)

    def wanted(yes: np.ndarray, no: np.ndarray) -> np.ndarray:
        if mode == "any":
            return yes > 0
        if mode == "all":
            return (yes > 0) & (no == 0)
        return yes > no

    def metrics(pred: np.ndarray) -> CalibrationMetrics:
        tp = int(np.sum(pred & labels))
        fp = int(np.sum(pred & ~labels))
        fn = int(np.sum(~pred & labels))
        return CalibrationMetrics.from_counts(tp, fp, fn, n - tp - fp - fn)

    state_table = [state_votes(mc) for mc in mc_axis]
    best_key: tuple[float, float] | None = None
    best_choice: tuple[Any, Any, Any] = (None, None, None)
    best_metrics: CalibrationMetrics | None = None
    tried = 0
    for cues in cue_axis:
        cy, cn = cue_votes(cues)
        for md in md_axis:
            ry, rn = retrieval_votes(md)
            for mc, (sy, sn) in zip(mc_axis, state_table):
                tried += 1
                m = metrics(wanted(fixed_yes + cy + ry + sy, fixed_no + cn + rn + sn))
                key = (round(m.f1, 12), round(m.accuracy, 12))
                if best_key is None or key > best_key:
                    best_key, best_choice, best_metrics = key, (cues, md, mc), m
    assert best_metrics is not None

    default_yes, default_no = fixed_yes.copy(), fixed_no.copy()
    for votes in (
        cue_votes(present["cues"].min_cues if "cues" in present else None),
        retrieval_votes(present["retrieval"].max_distance if "retrieval" in present else None),
        state_votes(present["state"].min_confidence if "state" in present else None),
    ):
        default_yes += votes[0]
        default_no += votes[1]
    default_metrics = metrics(wanted(default_yes, default_no))

    cues, md, mc = best_choice
    tuned: list[_Policy] = []
    for p in base.policies:
        if isinstance(p, VerbatimCuePolicy):
            tuned.append(p.model_copy(update={"min_cues": cues}))
        elif isinstance(p, RetrievalConfidencePolicy):
            tuned.append(p.model_copy(update={"max_distance": md}))
        elif isinstance(p, StateConfidencePolicy):
            tuned.append(p.model_copy(update={"min_confidence": mc}))
        else:
            tuned.append(p)  # type: ignore[arg-type]
    return CalibrationResult(
        config=RouterConfig(policies=tuned, mode=mode, k=k, token_budget=token_budget),  # type: ignore[arg-type]
        metrics=best_metrics,
        default_metrics=default_metrics,
        n_examples=n,
        n_positive=int(labels.sum()),
        candidates_tried=tried,
    )
