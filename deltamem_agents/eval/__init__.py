"""Evaluating memory: six conditions side by side, scores, reports, the empty-memory check."""

from deltamem_agents.eval.conditions import (
    CONDITIONS,
    LABELS,
    Answer,
    EvalConfig,
    Evaluator,
)
from deltamem_agents.eval.metrics import (
    answer_recall,
    check_rule,
    detect_language,
    exact_match,
    normalize,
    token_f1,
)
from deltamem_agents.eval.perplexity import generic_passages, perplexity_check
from deltamem_agents.eval.report import (
    EvalReport,
    check_goals,
    markdown,
    summarize,
    write_report,
)
from deltamem_agents.eval.runner import run_eval

__all__ = [
    "CONDITIONS",
    "LABELS",
    "Answer",
    "EvalConfig",
    "EvalReport",
    "Evaluator",
    "answer_recall",
    "check_goals",
    "check_rule",
    "detect_language",
    "exact_match",
    "generic_passages",
    "markdown",
    "normalize",
    "perplexity_check",
    "run_eval",
    "summarize",
    "token_f1",
    "write_report",
]
