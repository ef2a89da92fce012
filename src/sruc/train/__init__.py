"""``sruc train``: train SRCNN and VDSR on your own images.

``train(TrainConfig(data, out), progress=...) -> TrainResult``. The modules, each
one concern:

- :mod:`~sruc.train.recipes`: how to optimise (optimiser, schedule, loss), as data.
- :mod:`~sruc.train.config`: the options of a run, its events and its result.
- :mod:`~sruc.train.data`: the images and the patches cut from them.
- :mod:`~sruc.train.model`: the network trained, its start and its optimiser.
- :mod:`~sruc.train.state`: the run folder, and the state a run resumes from.
- :mod:`~sruc.train.session`: one call of ``train``, and what it reports.
- :mod:`~sruc.train.loop`: :func:`train` and its loop.
- :mod:`~sruc.train.validate`: the validation PSNR, by the protocol.
- :mod:`~sruc.train.distributed`: data parallelism under ``torchrun``.
- :mod:`~sruc.train.stopping`: Ctrl-C, SIGTERM and ``--max-minutes``.
- :mod:`~sruc.train.plot`: the chart of ``val_psnr.png``.
"""

from sruc.train.config import TrainConfig, TrainEvent, TrainResult
from sruc.train.loop import train
from sruc.train.recipes import DEFAULT_RECIPE, RECIPES
from sruc.train.validate import evaluate

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "evaluate",
    "train",
]
