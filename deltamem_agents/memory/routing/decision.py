"""What a routing decision is made of: the router's input, the votes, the decision, and the rule
that turns vote counts into a verdict.

The records are the router's boundary (callers build a :class:`RouterInput`, read a
:class:`RouteDecision`); :func:`combine_votes` lives beside them because the router and the
calibration must combine votes the same way, one turn at a time or a whole labelled set at once.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.memory.textlog import LogHit

__all__ = [
    "MODES",
    "Mode",
    "PolicyVote",
    "Route",
    "RouteDecision",
    "RouterInput",
    "SkipReason",
    "SkippedHit",
    "combine_votes",
]

Route = Literal["state", "retrieve", "both"]
Mode = Literal["any", "all", "majority"]
MODES: tuple[str, ...] = ("any", "all", "majority")
SkipReason = Literal["duplicate", "too far", "over k", "over budget", "not wanted"]

#: an int (one turn) or a numpy array of counts (many turns, or many thresholds)
Counts = TypeVar("Counts")


def combine_votes(yes: Counts, no: Counts, mode: str) -> Counts:
    """Whether retrieval is wanted, from the counts of votes for (``yes``) and against (``no``) it.

    ``any``: one vote for it; ``all``: at least one vote for it and none against; ``majority``: a
    strict majority of the votes that do not abstain. No vote at all: not wanted. Works on ints
    and, element-wise, on numpy arrays (the calibration's grid).
    """
    if mode == "any":
        return yes > 0  # type: ignore[operator,no-any-return]
    if mode == "all":
        return (yes > 0) & (no == 0)  # type: ignore[operator,no-any-return]
    return yes > no  # type: ignore[operator,no-any-return]


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
