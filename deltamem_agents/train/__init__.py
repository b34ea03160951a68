"""Training δ-mem adapters on a frozen backbone (CPU or CUDA): objective, trainer, checkpoints."""

from deltamem_agents.train.config import TrainConfig
from deltamem_agents.train.episodes import Episode, EpisodeBuilder, ReadExample
from deltamem_agents.train.objective import AnswerScores, score_answers, write_history
from deltamem_agents.train.trainer import (
    Trainer,
    TrainingError,
    TrainReport,
    train_adapter,
)

__all__ = [
    "AnswerScores",
    "Episode",
    "EpisodeBuilder",
    "ReadExample",
    "TrainConfig",
    "TrainReport",
    "Trainer",
    "TrainingError",
    "score_answers",
    "train_adapter",
    "write_history",
]
