"""Training: Hungarian matcher, set criterion, optimizer / schedule, deterministic data stream, trainer."""

from pem.train.config import TrainConfig, train_preset
from pem.train.criterion import LossConfig, SetCriterion
from pem.train.matcher import HungarianMatcher
from pem.train.trainer import Trainer, TrainResult, run_training

__all__ = [
    "HungarianMatcher",
    "LossConfig",
    "SetCriterion",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "run_training",
    "train_preset",
]
