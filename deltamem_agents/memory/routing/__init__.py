"""The retrieval router: per user turn, answer from δ-mem's state, from the text log, or both.

One idea a module: ``decision`` (the router's input, the votes, the decision, how votes combine),
``cues`` (verbatim-detail cues in a query), ``policies`` (the voters and their registry),
``router`` (``MemoryRouter``, its config and spec strings, the saved calibration it loads) and
``calibration`` (the threshold search on labelled turns). Import from here.
"""

from deltamem_agents.memory.routing.calibration import (
    GRID_KEYS,
    CalibrationExample,
    calibrate,
    load_calibration_set,
)
from deltamem_agents.memory.routing.cues import CUE_KINDS, CueKind, find_cues
from deltamem_agents.memory.routing.decision import (
    MODES,
    Mode,
    PolicyVote,
    Route,
    RouteDecision,
    RouterInput,
    SkippedHit,
    SkipReason,
    combine_votes,
)
from deltamem_agents.memory.routing.policies import (
    POLICIES,
    POLICY_NAMES,
    AlwaysRetrieve,
    BasePolicy,
    BuiltinPolicy,
    NeverRetrieve,
    RetrievalConfidencePolicy,
    RoutingPolicy,
    StateConfidencePolicy,
    ThresholdPolicy,
    VerbatimCuePolicy,
)
from deltamem_agents.memory.routing.router import (
    CALIBRATION_FORMAT,
    CALIBRATION_VERSION,
    CalibrationDataError,
    CalibrationMetrics,
    CalibrationResult,
    MemoryRouter,
    RouterConfig,
    RouterError,
    default_count_tokens,
    parse_spec,
    router_from_spec,
)

__all__ = [
    "AlwaysRetrieve",
    "BasePolicy",
    "BuiltinPolicy",
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "CUE_KINDS",
    "CalibrationDataError",
    "CalibrationExample",
    "CalibrationMetrics",
    "CalibrationResult",
    "CueKind",
    "GRID_KEYS",
    "MODES",
    "MemoryRouter",
    "Mode",
    "NeverRetrieve",
    "POLICIES",
    "POLICY_NAMES",
    "PolicyVote",
    "RetrievalConfidencePolicy",
    "Route",
    "RouteDecision",
    "RouterConfig",
    "RouterError",
    "RouterInput",
    "RoutingPolicy",
    "SkipReason",
    "SkippedHit",
    "StateConfidencePolicy",
    "ThresholdPolicy",
    "VerbatimCuePolicy",
    "calibrate",
    "combine_votes",
    "default_count_tokens",
    "find_cues",
    "load_calibration_set",
    "parse_spec",
    "router_from_spec",
]
