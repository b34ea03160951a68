"""Evaluating memory: six conditions side by side, scores, reports, the empty-memory check,
the state's content against another conversation's state, and the free-chat loop check."""

from deltamem_agents.eval.breakdown import (
    LOCOMO_CATEGORIES,
    CategoryScores,
    ContentDelta,
    category_scores,
    content_deltas,
)
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
from deltamem_agents.eval.repetition import (
    FreeChatResult,
    FreeReply,
    repeated_ngram_share,
    summarize_free,
)
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
    "LOCOMO_CATEGORIES",
    "Answer",
    "CategoryScores",
    "ContentDelta",
    "EvalConfig",
    "EvalReport",
    "Evaluator",
    "FreeChatResult",
    "FreeReply",
    "answer_recall",
    "category_scores",
    "check_goals",
    "check_rule",
    "content_deltas",
    "detect_language",
    "exact_match",
    "generic_passages",
    "markdown",
    "normalize",
    "perplexity_check",
    "repeated_ngram_share",
    "run_eval",
    "summarize",
    "summarize_free",
    "token_f1",
    "write_report",
]
