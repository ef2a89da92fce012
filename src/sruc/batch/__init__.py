"""``sruc batch``: plan a folder of images and run it.

One concern a module: :mod:`~sruc.batch.plan` (inputs -> planned files, output
names, clashes, skips, shards), :mod:`~sruc.batch.report` (what became of each
file, the report and its JSON), :mod:`~sruc.batch.pool` (the background I/O
threads) and :mod:`~sruc.batch.run` (the decode/upscale/encode pipeline,
:func:`run_batch`).
"""

from sruc.batch.plan import (
    OUTPUT_FORMATS,
    batch_device,
    effective_shard,
    in_shard,
    parse_shard,
    plan_batch,
)
from sruc.batch.pool import io_plan
from sruc.batch.report import BatchInterrupted, BatchItem, BatchProgress, BatchReport
from sruc.batch.run import run_batch

__all__ = [
    "OUTPUT_FORMATS",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "batch_device",
    "effective_shard",
    "in_shard",
    "io_plan",
    "parse_shard",
    "plan_batch",
    "run_batch",
]
