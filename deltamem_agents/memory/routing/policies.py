"""The routing policies: each looks at one turn and votes for retrieval, against it, or abstains.

Every built-in policy is in :data:`POLICIES` (name -> class): spec strings, saved configs and the
calibration all find the policies there, so a policy added to it is usable everywhere.

A threshold policy compares one number per turn (its *feature*) with one threshold.
:meth:`ThresholdPolicy.votes` does that for many turns and many thresholds at once, and the
scalar :meth:`~ThresholdPolicy.vote` goes through the same code: calibration scores exactly the
votes the router will cast.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol, Union, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.memory.routing.cues import CUE_KINDS, CueKind, find_cues
from deltamem_agents.memory.routing.decision import PolicyVote, RouterInput
from deltamem_agents.memory.textlog import LogHit

__all__ = [
    "ABSTAIN",
    "AGAINST",
    "POLICIES",
    "POLICY_NAMES",
    "RETRIEVE",
    "AlwaysRetrieve",
    "BasePolicy",
    "BuiltinPolicy",
    "NeverRetrieve",
    "RetrievalConfidencePolicy",
    "RoutingPolicy",
    "StateConfidencePolicy",
    "ThresholdPolicy",
    "VerbatimCuePolicy",
]

#: what :meth:`ThresholdPolicy.votes` returns per turn and threshold
RETRIEVE, ABSTAIN, AGAINST = 1, 0, -1
_VERDICT: dict[int, bool | None] = {RETRIEVE: True, ABSTAIN: None, AGAINST: False}


@runtime_checkable
class RoutingPolicy(Protocol):
    """Anything with a ``name`` and ``vote(inp) -> PolicyVote`` can vote in a router.

    A policy that judges the state itself sets ``speaks_for_state = True``: its vote for
    retrieval turns a wanted retrieval into route ``"retrieve"`` instead of ``"both"``.
    """

    name: str

    def vote(self, inp: RouterInput) -> PolicyVote: ...


class BasePolicy(BaseModel):
    """A built-in policy: plain data (so a router's config can be saved), with a ``vote``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    speaks_for_state: ClassVar[bool] = False
    #: the field a spec string's ``name=value`` sets and calibration tunes (None: no threshold)
    threshold_field: ClassVar[str | None] = None

    @abstractmethod
    def vote(self, inp: RouterInput) -> PolicyVote: ...

    def _vote(self, wants: bool | None, score: float, reason: str, **details: Any) -> PolicyVote:
        name: str = self.name  # type: ignore[attr-defined]
        return PolicyVote(policy=name, wants_retrieval=wants, score=score, reason=reason, details=details)


class ThresholdPolicy(BasePolicy):
    """A policy that votes by comparing one number per turn, its feature, with one threshold."""

    threshold_field: ClassVar[str]

    @property
    def threshold(self) -> float:
        return float(getattr(self, self.threshold_field))

    @abstractmethod
    def feature(self, inp: RouterInput) -> float:
        """The number this policy judges ``inp`` by (NaN: nothing to judge, the policy abstains)."""

    def features(self, inputs: Iterable[RouterInput]) -> np.ndarray:
        """:meth:`feature` of each input, as a float array (what calibration computes once)."""
        return np.array([self.feature(inp) for inp in inputs], dtype=float)

    @classmethod
    @abstractmethod
    def votes(cls, features: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
        """The votes for features against thresholds, broadcast like numpy: an int8 array of
        :data:`RETRIEVE`, :data:`AGAINST` or :data:`ABSTAIN`."""

    @abstractmethod
    def candidates(self, features: np.ndarray, cap: int) -> list[float]:
        """Thresholds worth trying on turns with these ``features`` (this policy's own among them);
        at most about ``cap`` besides the ends and the default."""

    def verdict(self, feature: float) -> bool | None:
        """The vote on one feature at this policy's threshold: True, False, or None to abstain."""
        return _VERDICT[int(self.votes(feature, self.threshold))]


def _split_points(
    values: np.ndarray,
    *,
    default: float,
    below: Callable[[float], float | None],
    above: Callable[[float], float],
    cap: int,
) -> list[float]:
    """Thresholds that realise every split of ``values``: midpoints, one below all, one above all, the default."""
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


class VerbatimCuePolicy(ThresholdPolicy):
    """Retrieve when the query asks for verbatim detail: at least ``min_cues`` distinct cue kinds.

    ``score`` (the feature) is the number of distinct cue kinds found (see :func:`find_cues`);
    ``kinds`` restricts which kinds count. Never abstains.
    """

    name: Literal["cues"] = "cues"
    min_cues: int = Field(1, ge=1, description="distinct cue kinds needed to vote for retrieval")
    kinds: tuple[CueKind, ...] = Field(
        CUE_KINDS, min_length=1, description="cue kinds that count"  # type: ignore[arg-type]
    )
    threshold_field: ClassVar[str] = "min_cues"

    def cue_score(self, query: str) -> tuple[int, dict[str, list[str]]]:
        cues = {k: v for k, v in find_cues(query).items() if k in self.kinds}
        return len(cues), cues

    def feature(self, inp: RouterInput) -> float:
        return float(self.cue_score(inp.query)[0])

    @classmethod
    def votes(cls, features: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
        yes = np.asarray(features, dtype=float) >= np.asarray(thresholds, dtype=float)
        return np.where(yes, RETRIEVE, AGAINST).astype(np.int8)

    def candidates(self, features: np.ndarray, cap: int) -> list[float]:
        return sorted({1, 2, self.min_cues})

    def vote(self, inp: RouterInput) -> PolicyVote:
        score, cues = self.cue_score(inp.query)
        wants = self.verdict(float(score))
        if not cues:
            return self._vote(wants, 0.0, "no verbatim cues in the query", cues={})
        listed = ", ".join(f"{kind} {', '.join(repr(x) for x in items[:2])}" for kind, items in cues.items())
        need = "" if wants or self.min_cues == 1 else f" (fewer than {self.min_cues} kinds)"
        return self._vote(wants, float(score), f"found {listed}{need}", cues=cues)


def _best_distance(hits: Sequence[LogHit]) -> float | None:
    distances = [h.distance for h in hits if h.distance is not None and not math.isnan(h.distance)]
    return min(distances) if distances else None


class RetrievalConfidencePolicy(ThresholdPolicy):
    """Retrieve when the best hit is within ``max_distance`` (cosine: 0 same, 2 opposite).

    ``score`` is ``1 - best distance``. No hits: a vote against retrieval (the feature is
    +inf: nothing is close); hits without distances (not from ``search``): abstain (NaN). When
    this policy is in a router, only hits within ``max_distance`` are placed in the context.
    """

    name: Literal["retrieval"] = "retrieval"
    max_distance: float = Field(0.6, ge=0.0, description="farthest best hit that still votes for retrieval")
    threshold_field: ClassVar[str] = "max_distance"

    def feature(self, inp: RouterInput) -> float:
        if not inp.hits:
            return math.inf
        best = _best_distance(inp.hits)
        return math.nan if best is None else best

    @classmethod
    def votes(cls, features: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
        best = np.asarray(features, dtype=float)
        yes = np.isfinite(best) & (best <= np.asarray(thresholds, dtype=float))
        return np.where(yes, RETRIEVE, np.where(np.isnan(best), ABSTAIN, AGAINST)).astype(np.int8)

    def candidates(self, features: np.ndarray, cap: int) -> list[float]:
        # retrieve when distance <= max_distance: below all is half the smallest (none if it is 0)
        return _split_points(
            features[np.isfinite(features)],
            default=self.max_distance,
            below=lambda lo: lo / 2.0 if lo > 0 else None,
            above=lambda hi: hi + 0.05,
            cap=cap,
        )

    def vote(self, inp: RouterInput) -> PolicyVote:
        best = self.feature(inp)
        wants = self.verdict(best)
        if not inp.hits:
            return self._vote(wants, 0.0, "the log has nothing close (no hits)", best_distance=None)
        if math.isnan(best):
            return self._vote(wants, 0.0, "the hits carry no distance to judge", best_distance=None)
        op = "<=" if wants else ">"
        close = "" if wants else ": the log has nothing close"
        return self._vote(
            wants,
            1.0 - best,
            f"best hit at distance {best:.3f} {op} {self.max_distance:.3f}{close}",
            best_distance=best,
        )


class StateConfidencePolicy(ThresholdPolicy):
    """Retrieve when the state's own confidence is below ``min_confidence``; abstain when unknown."""

    name: Literal["state"] = "state"
    min_confidence: float = Field(0.3, ge=0.0, le=1.0, description="state confidence below which to retrieve")
    speaks_for_state: ClassVar[bool] = True
    threshold_field: ClassVar[str] = "min_confidence"

    def feature(self, inp: RouterInput) -> float:
        return math.nan if inp.state_confidence is None else inp.state_confidence

    @classmethod
    def votes(cls, features: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
        conf = np.asarray(features, dtype=float)
        yes = conf < np.asarray(thresholds, dtype=float)
        return np.where(yes, RETRIEVE, np.where(np.isnan(conf), ABSTAIN, AGAINST)).astype(np.int8)

    def candidates(self, features: np.ndarray, cap: int) -> list[float]:
        # retrieve when confidence < min_confidence: 0 retrieves never, 1 always (but at confidence 1)
        return _split_points(
            features[~np.isnan(features)],
            default=self.min_confidence,
            below=lambda lo: 0.0,
            above=lambda hi: (hi + 1.0) / 2.0 if hi < 1.0 else 1.0,
            cap=cap,
        )

    def vote(self, inp: RouterInput) -> PolicyVote:
        conf = inp.state_confidence
        wants = self.verdict(self.feature(inp))
        if conf is None:
            return self._vote(wants, 0.0, "state confidence unknown")
        if wants:
            return self._vote(
                wants, conf, f"working memory does not answer this (confidence {conf:.3f} < {self.min_confidence:.3f})"
            )
        return self._vote(
            wants, conf, f"working memory answers this (confidence {conf:.3f} >= {self.min_confidence:.3f})"
        )


class AlwaysRetrieve(BasePolicy):
    """Baseline: always vote for retrieval."""

    name: Literal["always"] = "always"

    def vote(self, inp: RouterInput) -> PolicyVote:
        return self._vote(True, 1.0, "always retrieves (baseline)")


class NeverRetrieve(BasePolicy):
    """Baseline: never vote for retrieval."""

    name: Literal["never"] = "never"

    def vote(self, inp: RouterInput) -> PolicyVote:
        return self._vote(False, 0.0, "never retrieves (baseline)")


#: The one registry of built-in policies, name -> class, in the order calibration searches them.
POLICIES: dict[str, type[BasePolicy]] = {
    cls.model_fields["name"].default: cls
    for cls in (VerbatimCuePolicy, RetrievalConfidencePolicy, StateConfidencePolicy, AlwaysRetrieve, NeverRetrieve)
}
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)
#: A built-in policy in a saved config, told apart by ``name`` (built from the registry).
BuiltinPolicy = Annotated[Union[tuple(POLICIES.values())], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007
