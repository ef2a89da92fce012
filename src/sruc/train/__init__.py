"""``sruc train``: recipes, configuration, data, the loop."""

from sruc.train.config import TrainConfig, TrainEvent, TrainResult
from sruc.train.loop import evaluate, train
from sruc.train.recipes import DEFAULT_RECIPE, RECIPES

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "evaluate",
    "train",
]
