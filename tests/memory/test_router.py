"""The retrieval router: policies, combination, routes, snippet selection, spec, calibration.

Most tests build ``LogHit`` objects directly (the router is a pure function of its input); one
routes hits searched from a real ``TextLog`` on Chroma's ``EphemeralClient``.
"""

from __future__ import annotations

import json
import logging

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from deltamem_agents.memory.routing import (
    CUE_KINDS,
    GRID_KEYS,
    POLICIES,
    POLICY_NAMES,
    AlwaysRetrieve,
    CalibrationDataError,
    CalibrationExample,
    CalibrationResult,
    MemoryRouter,
    NeverRetrieve,
    PolicyVote,
    RetrievalConfidencePolicy,
    RouteDecision,
    RouterConfig,
    RouterError,
    RouterInput,
    StateConfidencePolicy,
    ThresholdPolicy,
    VerbatimCuePolicy,
    calibrate,
    combine_votes,
    default_count_tokens,
    find_cues,
    load_calibration_set,
    router_from_spec,
)
from deltamem_agents.memory.routing.policies import ABSTAIN, AGAINST, RETRIEVE
from deltamem_agents.memory.textlog import LogHit, TextLog, TextLogConfig
from deltamem_agents.store.records import ChatMessage
from tests.memory.hashing import HashingEmbedding


def hit(id_: str, distance: float | None = 0.2, words: int = 5) -> LogHit:
    return LogHit(id=id_, text=" ".join(["word"] * words), distance=distance, metadata={"turn": 0})


def inp(query: str = "hello there", hits: list[LogHit] | None = None, conf: float | None = None) -> RouterInput:
    return RouterInput(query=query, hits=hits or [], state_confidence=conf)


# -- VerbatimCuePolicy --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "kinds"),
    [
        pytest.param("I paid 42 euros for it", {"number"}, id="number"),
        pytest.param("The flight is on 2024-05-01", {"date"}, id="iso-date"),
        pytest.param("we met yesterday", {"date"}, id="yesterday"),
        pytest.param("the call last week ran long", {"date"}, id="last-week"),
        pytest.param("see you on Tuesday", {"date"}, id="weekday"),
        pytest.param("it was early in March", {"date"}, id="month"),
        pytest.param("the train at 9:30 pm", {"date"}, id="time"),
        pytest.param("my sister lives with Margarethe now", {"name"}, id="name"),
        pytest.param('she wrote "bring the blue folder" on the card', {"quote"}, id="double-quote"),
        pytest.param("he kept saying 'not today' to me", {"quote"}, id="single-quote"),
        pytest.param("what did I say about the garden?", {"recall"}, id="what-did-i-say"),
        pytest.param("what did you say about the garden?", {"recall"}, id="what-did-you-say"),
        pytest.param("remind me of the plan", {"recall"}, id="remind-me"),
        pytest.param("give me the wording exactly", {"exact"}, id="exactly"),
        pytest.param("repeat it word for word", {"exact"}, id="word-for-word"),
        pytest.param("how many people came along?", {"question"}, id="how-many"),
        pytest.param("which one did we pick?", {"question"}, id="which"),
        pytest.param("when did the move happen?", {"question"}, id="when-did"),
    ],
)
def test_cue_kinds(query, kinds):
    vote = VerbatimCuePolicy().vote(inp(query))
    assert set(vote.details["cues"]) == kinds
    assert vote.wants_retrieval is True
    assert vote.score == len(kinds)
    assert vote.policy == "cues"
    assert all(kind in vote.reason for kind in kinds)


@pytest.mark.parametrize(
    "query",
    [
        "hey, how are you doing today?",
        "Tell me a joke about cats.",
        "Thanks, that is great! I'm happy.",
        "May I ask you something?",
        "it's a nice day, isn't it",
        "",
    ],
)
def test_chit_chat_has_no_cues(query):
    vote = VerbatimCuePolicy().vote(inp(query))
    assert vote.wants_retrieval is False
    assert vote.score == 0
    assert vote.reason == "no verbatim cues in the query"


def test_cue_details_score_distinct_kinds_and_min_cues():
    query = "What did I say to Bob about the 3 tickets on Friday?"
    cues = find_cues(query)
    assert cues == {"number": ["3"], "date": ["Friday"], "name": ["Bob"], "recall": ["What did I say"]}
    assert list(cues) == [k for k in CUE_KINDS if k in cues]
    vote = VerbatimCuePolicy(min_cues=4).vote(inp(query))
    assert (vote.wants_retrieval, vote.score) == (True, 4.0)
    assert "'Bob'" in vote.reason and "'Friday'" in vote.reason
    short = VerbatimCuePolicy(min_cues=2).vote(inp("I have 3 cats"))
    assert short.wants_retrieval is False and "fewer than 2" in short.reason
    only_numbers = VerbatimCuePolicy(kinds=("number",))
    assert only_numbers.vote(inp("Remind me what Bob said")).wants_retrieval is False
    # dates are not also counted as numbers; "I" and sentence starts are not names
    assert find_cues("I left. Then on 2024-05-01 Ada called.") == {"date": ["2024-05-01"], "name": ["Ada"]}
    with pytest.raises(ValueError):
        VerbatimCuePolicy(min_cues=0)
    with pytest.raises(ValueError):
        VerbatimCuePolicy(kinds=("colour",))


# -- RetrievalConfidencePolicy / StateConfidencePolicy / baselines --------------------------------------
def test_retrieval_confidence_votes():
    policy = RetrievalConfidencePolicy(max_distance=0.5)
    close = policy.vote(inp(hits=[hit("a", 0.7), hit("b", 0.25)]))
    assert close.wants_retrieval is True
    assert close.score == pytest.approx(0.75)
    assert close.details["best_distance"] == 0.25 and "0.250 <= 0.500" in close.reason
    far = policy.vote(inp(hits=[hit("a", 0.9)]))
    assert far.wants_retrieval is False and "nothing close" in far.reason
    empty = policy.vote(inp(hits=[]))
    assert (empty.wants_retrieval, empty.score) == (False, 0.0)
    assert "log has nothing close" in empty.reason
    undistanced = policy.vote(inp(hits=[hit("a", None)]))
    assert undistanced.wants_retrieval is None
    with pytest.raises(ValueError):
        RetrievalConfidencePolicy(max_distance=-0.1)


def test_state_confidence_votes():
    policy = StateConfidencePolicy(min_confidence=0.3)
    assert policy.vote(inp(conf=None)).wants_retrieval is None
    weak = policy.vote(inp(conf=0.1))
    assert (weak.wants_retrieval, weak.score) == (True, 0.1)
    assert "working memory does not answer this" in weak.reason
    strong = policy.vote(inp(conf=0.3))
    assert strong.wants_retrieval is False and "answers this" in strong.reason
    with pytest.raises(ValueError):
        StateConfidencePolicy(min_confidence=1.5)
    with pytest.raises(ValueError):
        RouterInput(query="q", state_confidence=1.2)


def test_baselines():
    assert AlwaysRetrieve().vote(inp()).wants_retrieval is True
    assert NeverRetrieve().vote(inp()).wants_retrieval is False
    always = router_from_spec("always").route(inp(hits=[hit("a", 1.9)]))
    assert always.route == "both" and always.retrieved_ids == ["a"] and "always" in always.reason
    never = router_from_spec("never").route(inp("what did I say on 2024-05-01?", hits=[hit("a", 0.0)], conf=0.0))
    assert never.route == "state" and never.retrieved_ids == []
    assert [(s.id, s.why) for s in never.skipped] == [("a", "not wanted")]
    assert "never" in never.reason


# -- combination and routes ----------------------------------------------------------------------------
class Fixed:
    """A custom policy: any object with ``name`` and ``vote`` can vote."""

    def __init__(self, name: str, wants: bool | None) -> None:
        self.name = name
        self.wants = wants

    def vote(self, inp: RouterInput) -> PolicyVote:
        return PolicyVote(policy=self.name, wants_retrieval=self.wants, score=1.0, reason=f"fixed {self.wants}")


@pytest.mark.parametrize(
    ("votes", "mode", "wanted"),
    [
        ((True, False, False), "any", True),
        ((False, False, None), "any", False),
        ((True, True, None), "all", True),
        ((True, False, None), "all", False),
        ((None, None), "all", False),
        ((True, True, False), "majority", True),
        ((True, False, None), "majority", False),  # a tie is not a majority
        ((True, None, None), "majority", True),  # abstentions do not count
    ],
)
def test_combination_modes(votes, mode, wanted):
    router = MemoryRouter([Fixed(f"p{i}", v) for i, v in enumerate(votes)], mode=mode)
    decision = router.route(inp(hits=[hit("a")]))
    assert decision.retrieval_wanted is wanted
    assert decision.route == ("both" if wanted else "state")
    assert decision.mode == mode


def test_route_state_when_memory_is_strong_and_no_cues():
    router = router_from_spec("cues+retrieval+state")
    decision = router.route(inp("hey, how are you doing today?", hits=[hit("a", 0.9)], conf=0.8))
    assert decision.route == "state" and not decision.retrieval_wanted
    assert decision.snippets == [] and decision.tokens_used == 0
    for name in ("cues", "retrieval", "state"):
        assert name in decision.reason


def test_route_both_when_cues_fire_and_state_is_fine():
    router = router_from_spec("cues+retrieval+state")
    decision = router.route(inp("what did I say about the garden?", hits=[hit("a", 0.3)], conf=0.9))
    assert decision.route == "both" and decision.uses_state and decision.uses_retrieval
    assert decision.retrieved_ids == ["a"]
    assert "cues: found recall 'what did I say'" in decision.reason and "retrieval: best hit" in decision.reason
    assert "working memory" not in decision.reason  # the state's vote was not a deciding one


def test_route_retrieve_when_state_is_weak():
    router = router_from_spec("cues+retrieval+state")
    decision = router.route(inp("and the other thing?", hits=[hit("a", 0.3), hit("b", 0.4)], conf=0.05))
    assert decision.route == "retrieve" and not decision.uses_state
    assert decision.retrieved_ids == ["a", "b"]
    assert "state: working memory does not answer this" in decision.reason
    assert "retrieval: best hit" in decision.reason
    assert decision.vote("state").wants_retrieval is True
    assert decision.vote("missing") is None


def test_wanted_but_nothing_to_place_falls_back_to_state():
    router = router_from_spec("cues+retrieval")
    far = router.route(inp("what did I say about the garden?", hits=[hit("a", 0.9), hit("b", 1.1)]))
    assert far.retrieval_wanted and far.route == "state"
    assert [(s.id, s.why) for s in far.skipped] == [("a", "too far"), ("b", "too far")]
    assert "no snippet to place (2 too far)" in far.reason
    none = router.route(inp("what did I say about the garden?", hits=[]))
    assert none.route == "state" and "no hits" in none.reason


def test_every_policy_abstaining_means_state():
    decision = router_from_spec("state").route(inp(hits=[hit("a")], conf=None))
    assert decision.route == "state" and "abstained" in decision.reason


# -- snippet selection ------------------------------------------------------------------------------------
def test_k_limit_records_skips():
    router = router_from_spec("always", k=2)
    decision = router.route(inp(hits=[hit(c) for c in "abcd"]))
    assert decision.retrieved_ids == ["a", "b"]
    assert [(s.id, s.why) for s in decision.skipped] == [("c", "over k"), ("d", "over k")]
    assert [h.id for h in decision.snippets] == ["a", "b"]


def test_token_budget_skips_what_does_not_fit_and_keeps_going():
    # default counter: 10 words -> 13 tokens, 30 -> 39, 5 -> 7
    assert default_count_tokens(" ".join(["w"] * 10)) == 13
    router = router_from_spec("always", k=4, token_budget=25)
    hits = [hit("a", words=10), hit("big", words=30), hit("c", words=5), hit("d", words=1)]
    decision = router.route(inp(hits=hits))
    assert decision.retrieved_ids == ["a", "c", "d"]
    assert decision.tokens_used == 13 + 7 + 2
    (skip,) = decision.skipped
    assert (skip.id, skip.why, skip.tokens) == ("big", "over budget", 39)
    assert "1 over budget" in decision.reason


def test_custom_token_counter():
    router = router_from_spec("always", token_budget=10, count_tokens=len)
    hits = [LogHit(id="a", text="x" * 8, distance=0.1), LogHit(id="b", text="yyy", distance=0.2)]
    decision = router.route(inp(hits=hits))
    assert decision.retrieved_ids == ["a"] and decision.tokens_used == 8
    assert decision.skipped_ids == ["b"]


def test_dedup_and_distance_filter():
    router = router_from_spec("cues+retrieval=0.5", k=3)
    hits = [hit("a", 0.1), hit("a", 0.1), hit("far", 0.8), hit("b", 0.3), hit("b", 0.3), hit("c", 0.4), hit("d", 0.45)]
    decision = router.route(inp("hi", hits=hits))
    assert decision.retrieved_ids == ["a", "b", "c"]
    assert [(s.id, s.why) for s in decision.skipped] == [
        ("a", "duplicate"),
        ("far", "too far"),
        ("b", "duplicate"),
        ("d", "over k"),
    ]
    # without a retrieval policy no hit is too far
    assert router_from_spec("always").route(inp(hits=[hit("x", 1.9)])).retrieved_ids == ["x"]


# -- callbacks, logging, explain -------------------------------------------------------------------------
def test_callbacks_receive_the_decision():
    seen: list[RouteDecision] = []
    router = router_from_spec("always", callbacks=[seen.append, seen.append])
    decision = router.route(inp(hits=[hit("a")]))
    assert seen == [decision, decision]
    assert router.decide(inp(hits=[hit("a")])).route == "both" and len(seen) == 2  # decide: no callbacks


def test_logging_emits_one_record(caplog):
    router = router_from_spec("cues+retrieval+state")
    with caplog.at_level(logging.INFO, logger="deltamem_agents.router"):
        decision = router.route(inp("what did I say?", hits=[hit("a", 0.2)], conf=0.9))
    records = [r for r in caplog.records if r.name == "deltamem_agents.router"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.INFO
    assert record.route_decision is decision
    assert "route=both" in record.getMessage() and "'a'" in record.getMessage()


def test_decision_is_serialisable_and_explained():
    decision = router_from_spec("cues+retrieval", k=1).route(inp("how many?", hits=[hit("a", 0.1), hit("b", 0.2)]))
    data = json.loads(decision.model_dump_json())
    assert data["route"] == "both" and data["retrieved_ids"] == ["a"]
    assert data["skipped"] == [{"id": "b", "why": "over k", "distance": 0.2, "tokens": None}]
    assert {v["policy"] for v in data["votes"]} == {"cues", "retrieval"}
    assert decision.elapsed_ms >= 0
    text = decision.explain()
    assert "used a at distance 0.100" in text and "skipped b at distance 0.200: over k" in text


def test_router_validation():
    with pytest.raises(RouterError, match="at least one policy"):
        MemoryRouter([])
    with pytest.raises(RouterError, match="mode"):
        MemoryRouter(mode="some")  # type: ignore[arg-type]
    with pytest.raises(RouterError, match="k must be"):
        MemoryRouter(k=0)
    with pytest.raises(RouterError, match="token_budget"):
        MemoryRouter(token_budget=0)
    with pytest.raises(RouterError, match="vote"):
        MemoryRouter([object()])  # type: ignore[list-item]
    with pytest.raises(RouterError, match="callbacks"):
        MemoryRouter(callbacks=[42])  # type: ignore[list-item]
    with pytest.raises(RouterError, match="not a built-in policy"):
        MemoryRouter([Fixed("mine", True)]).config()
    assert [p.name for p in MemoryRouter().policies] == ["cues", "retrieval", "state"]


# -- spec -----------------------------------------------------------------------------------------------
def test_router_from_spec():
    router = router_from_spec(" cues + retrieval=0.45 + state=0.2 ", mode="majority", k=2, token_budget=64)
    assert [p.name for p in router.policies] == ["cues", "retrieval", "state"]
    assert router.policies[1].max_distance == 0.45 and router.policies[2].min_confidence == 0.2
    assert (router.mode, router.k, router.token_budget) == ("majority", 2, 64)
    assert router.config().spec() == "cues=1+retrieval=0.45+state=0.2"
    assert MemoryRouter.from_spec("never").policies == [NeverRetrieve()]
    assert isinstance(router_from_spec("always").policies[0], AlwaysRetrieve)
    assert [p.name for p in router_from_spec().policies] == ["cues", "retrieval", "state"]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cues+memory", r"unknown router policy 'memory'.*known policies are cues, retrieval, state, always, never"),
        ("", "empty router spec"),
        ("cues|retrieval", r"join policy names with '\+'"),
        ("cues+cues", "appears twice"),
        ("always=1", "takes no threshold"),
        ("retrieval=far", "bad threshold"),
        ("state=2", "bad threshold"),
    ],
)
def test_router_spec_errors(spec, match):
    with pytest.raises(RouterError, match=match):
        router_from_spec(spec)


# -- calibration ------------------------------------------------------------------------------------------
def example(query: str, distance: float | None, conf: float | None, needs: bool) -> CalibrationExample:
    hits = [] if distance is None else [hit("h", distance)]
    return CalibrationExample(query=query, hits=hits, state_confidence=conf, needs_retrieval=needs)


def separable_set() -> list[CalibrationExample]:
    """Retrieval is needed exactly when the best hit is closer than 0.35 (no cues anywhere)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(30):
        needs = i % 2 == 0
        d = float(rng.uniform(0.05, 0.3) if needs else rng.uniform(0.4, 0.9))
        out.append(example("and the other thing?", d, float(rng.uniform(0.4, 1.0)), needs))
    return out


def replay(router: MemoryRouter, examples: list[CalibrationExample]) -> list[bool]:
    return [router.decide(e.router_input()).retrieval_wanted for e in examples]


def test_calibration_separates_a_separable_set():
    examples = separable_set()
    result = calibrate(examples)
    assert result.f1 == 1.0 and result.accuracy == 1.0
    assert 0.3 <= result.max_distance <= 0.4
    assert result.n_examples == 30 and result.n_positive == 15 and result.candidates_tried > 1
    # the router it builds decides exactly as the search scored it
    assert replay(result.router(), examples) == [e.needs_retrieval for e in examples]


def test_calibration_improves_over_wrong_defaults():
    # defaults (max_distance 0.6, min_confidence 0.3) are wrong here: close hits are all < 0.2,
    # unneeded ones sit at 0.3-0.5; the state is weak below 0.6.
    examples = []
    for i in range(12):
        examples.append(example("tell me more", 0.1 + 0.008 * i, 0.9, True))  # log answers
        examples.append(example("tell me more", 0.3 + 0.015 * i, 0.9, False))  # log is off-topic
        examples.append(example("tell me more", 1.2, 0.2 + 0.03 * i, True))  # state does not know
        examples.append(example("tell me more", 1.2, 0.7 + 0.02 * i, False))
    result = calibrate(examples)
    assert result.default_metrics.f1 < 0.8
    assert result.f1 == 1.0 > result.default_metrics.f1
    assert result.max_distance < 0.3 and 0.53 <= result.min_confidence <= 0.7
    assert result.min_cues in (1, 2)
    predicted = replay(result.router(), examples)
    assert predicted == [e.needs_retrieval for e in examples]


def test_calibration_grid_and_policy_subset():
    examples = separable_set()
    fixed = calibrate(examples, grid={"max_distance": [0.6], "min_cues": [1]}, policies="retrieval+state")
    assert fixed.max_distance == 0.6 and fixed.min_cues is None and fixed.min_confidence is not None
    assert fixed.f1 < 1.0
    with pytest.raises(RouterError, match="unknown grid keys"):
        calibrate(examples, grid={"distance": [0.3]})
    with pytest.raises(RouterError, match="bad grid"):
        calibrate(examples, grid={"min_confidence": [3.0]})
    with pytest.raises(CalibrationDataError, match="needs_retrieval = true"):
        calibrate([example("q", 0.1, 0.5, False)])
    with pytest.raises(CalibrationDataError, match="at least one"):
        calibrate([])


def test_calibration_modes_match_the_router():
    examples = separable_set() + [example("What did Ada say on Friday?", 0.8, 0.1, True)]
    for mode in ("all", "majority"):
        result = calibrate(examples, mode=mode)
        assert result.config.mode == mode
        predicted = np.array(replay(result.router(), examples))
        labels = np.array([e.needs_retrieval for e in examples])
        tp = int((predicted & labels).sum())
        assert result.metrics.tp == tp
        assert result.metrics.fp == int((predicted & ~labels).sum())


def test_calibration_save_and_from_calibration(tmp_path):
    result = calibrate(separable_set(), k=3, token_budget=100)
    path = result.save(tmp_path / "out" / "router.json")
    data = json.loads(path.read_text())
    assert data["format"] == "deltamem-router-calibration" and data["metrics"]["f1"] == 1.0
    seen = []
    router = MemoryRouter.from_calibration(path, callbacks=[seen.append])
    assert router.config() == result.config
    assert (router.k, router.token_budget) == (3, 100)
    router.route(inp(hits=[hit("a", 0.1)]))
    assert len(seen) == 1
    assert CalibrationResult.load(path) == result
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(CalibrationDataError, match="not a router calibration file"):
        MemoryRouter.from_calibration(tmp_path / "bad.json")
    with pytest.raises(CalibrationDataError, match="no such calibration file"):
        MemoryRouter.from_calibration(tmp_path / "missing.json")
    assert MemoryRouter.from_config({"policies": [{"name": "always"}], "k": 2}).k == 2
    with pytest.raises(RouterError, match="invalid router config"):
        MemoryRouter.from_config({"policies": [{"name": "sometimes"}]})
    assert isinstance(RouterConfig(policies=[{"name": "cues", "min_cues": 2}]).policies[0], VerbatimCuePolicy)


def test_load_calibration_set(tmp_path):
    good = tmp_path / "set.jsonl"
    lines = [
        {"query": "what did I say?", "hits": [{"id": "a", "text": "t", "distance": 0.2}], "state_confidence": 0.1,
         "needs_retrieval": True},
        {"query": "hi", "needs_retrieval": False},
    ]  # fmt: skip
    good.write_text(json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n")
    examples = load_calibration_set(good)
    assert [e.needs_retrieval for e in examples] == [True, False]
    assert examples[0].hits[0].distance == 0.2 and examples[1].hits == [] and examples[1].state_confidence is None
    assert calibrate(examples).f1 == 1.0


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"set.jsonl:3: not valid JSON"),
        ("[1, 2]", r"set.jsonl:3: expected a JSON object, got list"),
        ('{"query": "q"}', r"set.jsonl:3: needs_retrieval: Field required"),
        ('{"query": "q", "needs_retrieval": "yes"}', r"set.jsonl:3: needs_retrieval: Input should be a valid boolean"),
        ('{"query": "q", "needs_retrieval": true, "state_confidence": 2}', r"set.jsonl:3: state_confidence"),
        ('{"query": "q", "needs_retrieval": true, "hits": [{"id": "a"}]}', r"set.jsonl:3: hits.0.text: Field required"),
        ('{"query": "q", "needs_retreival": true}', r"set.jsonl:3: .*needs_retreival: Extra inputs"),
    ],
)
def test_load_calibration_set_errors_name_the_line(tmp_path, line, match):
    path = tmp_path / "set.jsonl"
    path.write_text('{"query": "ok", "needs_retrieval": true}\n\n' + line + "\n")
    with pytest.raises(CalibrationDataError, match=match):
        load_calibration_set(path)


def test_load_calibration_set_empty_or_missing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(CalibrationDataError, match="no examples"):
        load_calibration_set(tmp_path / "empty.jsonl")
    with pytest.raises(CalibrationDataError, match="no such calibration set"):
        load_calibration_set(tmp_path / "nope.jsonl")


# -- one vote, one rule, one registry: shared by the router and calibration ----------------------------
GRID_INPUTS = [
    inp("hello there"),
    inp("what did I say about Paris on 2024-05-01?"),
    inp("how many, exactly? 42", conf=0.3),
    inp("ok", [hit("a", None), hit("b", None)]),
    inp("ok", [hit("a", 0.0)], conf=0.0),
    inp("ok", [hit("a", 0.6), hit("b", 0.3)], conf=1.0),
    inp("remind me what Bob said", [hit("a", None), hit("b", 0.45)], conf=0.45),
    inp("which one", [hit("a", 1.9)], conf=0.999),
]
#: thresholds on both sides of, and exactly at, the features of GRID_INPUTS
GRID_THRESHOLDS = {
    "cues": [1, 2, 3, 4, 7],
    "retrieval": [0.0, 0.3, 0.45, 0.6, 1.0, 1.9, 2.0, 5.0],
    "state": [0.0, 0.3, 0.45, 0.999, 1.0],
}
THRESHOLD_POLICIES = [name for name, cls in POLICIES.items() if issubclass(cls, ThresholdPolicy)]


def test_every_threshold_policy_is_on_the_grid():
    assert set(GRID_THRESHOLDS) == set(THRESHOLD_POLICIES)


@pytest.mark.parametrize("name", THRESHOLD_POLICIES)
def test_vectorised_vote_equals_the_scalar_vote(name):
    cls = POLICIES[name]
    thresholds = GRID_THRESHOLDS[name]
    features = cls().features(GRID_INPUTS)
    table = cls.votes(features[np.newaxis, :], np.asarray(thresholds, dtype=float)[:, np.newaxis])
    assert table.shape == (len(thresholds), len(GRID_INPUTS)) and table.dtype == np.int8
    verdict = {RETRIEVE: True, AGAINST: False, ABSTAIN: None}
    for i, threshold in enumerate(thresholds):
        policy = cls(**{cls.threshold_field: threshold})
        for j, x in enumerate(GRID_INPUTS):
            assert verdict[int(table[i, j])] is policy.vote(x).wants_retrieval, (threshold, x)
            assert policy.verdict(float(features[j])) is policy.vote(x).wants_retrieval


@pytest.mark.parametrize("mode", ["any", "all", "majority"])
def test_one_combination_rule_for_router_and_calibration(mode):
    router = router_from_spec("always", mode=mode)
    counts = [(yes, no, abstain) for yes in range(3) for no in range(3) for abstain in range(2)]
    for yes, no, abstain in counts:
        wants = [True] * yes + [False] * no + [None] * abstain
        votes = [PolicyVote(policy="p", wants_retrieval=w, score=0.0, reason="") for w in wants]
        assert router.wants_retrieval(votes) is bool(combine_votes(yes, no, mode))
    many = combine_votes(np.array([c[0] for c in counts]), np.array([c[1] for c in counts]), mode)
    assert many.tolist() == [combine_votes(yes, no, mode) for yes, no, _ in counts]


def test_one_registry_names_every_builtin_policy():
    assert POLICY_NAMES == tuple(POLICIES) == ("cues", "retrieval", "state", "always", "never")
    assert GRID_KEYS == ("max_distance", "min_confidence", "min_cues")
    for name, cls in POLICIES.items():
        assert cls().name == name
        field = cls.threshold_field
        spec = name if field is None else f"{name}={getattr(cls(), field)!r}"
        assert router_from_spec(spec).config().spec() == spec
        assert RouterConfig.model_validate({"policies": [{"name": name}]}).policies == [cls()]
    with pytest.raises(RouterError, match="takes no threshold"):
        router_from_spec("always=1")


@pytest.mark.parametrize("mode", ["any", "all", "majority"])
def test_calibrated_router_replays_the_scored_metrics(mode):
    rng = np.random.default_rng(7)
    queries = ["and then?", "what did I say about Paris?", "how many were there, 42?"]
    examples = []
    for i in range(60):
        r = rng.random()
        if r < 0.2:
            hits = []
        elif r < 0.3:
            hits = [hit("n", None)]
        else:
            hits = [hit(f"h{j}", float(rng.uniform(0.0, 1.5))) for j in range(3)]
        conf = None if rng.random() < 0.2 else float(rng.uniform())
        examples.append(
            CalibrationExample(query=queries[i % 3], hits=hits, state_confidence=conf,
                               needs_retrieval=bool(rng.random() < 0.5))
        )  # fmt: skip
    result = calibrate(examples, mode=mode, policies="cues+retrieval+state+never")
    labels = np.array([e.needs_retrieval for e in examples])
    for router, metrics in (
        (result.router(), result.metrics),
        (router_from_spec("cues+retrieval+state+never", mode=mode), result.default_metrics),
    ):
        predicted = np.array(replay(router, examples))
        assert (int((predicted & labels).sum()), int((predicted & ~labels).sum())) == (metrics.tp, metrics.fp)
        assert (int((~predicted & labels).sum()), int((~predicted & ~labels).sum())) == (metrics.fn, metrics.tn)


# -- with a real TextLog ----------------------------------------------------------------------------------
def test_search_and_route_on_a_real_textlog():
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    config = TextLogConfig(collection="router-test", chunk_tokens=None)
    log = TextLog(config, client=client, embedding_function=HashingEmbedding())
    try:
        facts = ["the red kettle whistles at seven", "a blue bicycle leans on the fence", "my aunt grows tomatoes"]
        ids = [log.add_message(ChatMessage(role="user", content=f), user_id="ada", session_id="s", turn=i)[0]
               for i, f in enumerate(facts)]  # fmt: skip
        router = router_from_spec("cues+retrieval=0.7+state", k=2)
        decision = router.search_and_route(log, "red kettle whistles", user_id="ada", state_confidence=0.1)
        assert decision.route == "retrieve"
        assert decision.retrieved_ids[0] == ids[0]
        assert decision.snippets[0].text == facts[0] and decision.snippets[0].metadata["turn"] == 0
        assert set(decision.retrieved_ids) | set(decision.skipped_ids) == set(ids)
        calm = router.search_and_route(log, "lovely weather", user_id="ada", state_confidence=0.9)
        assert calm.route == "state"
    finally:
        log.reset()
