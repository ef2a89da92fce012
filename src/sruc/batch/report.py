"""What a batch did: :class:`BatchItem` per file, :class:`BatchReport` and its JSON.

Also the statuses a file can end in, :class:`BatchProgress` (what the run's
callback gets) and :class:`BatchInterrupted` (Ctrl-C, carrying the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Statuses of a file in the report.
DONE, SKIPPED, FAILED, IGNORED, PENDING = "done", "skipped", "failed", "ignored", "pending"


@dataclass
class BatchItem:
    """One input file and what became of it.

    Attributes:
        source: the input file.
        output: where its result goes (or went).
        status: ``done``; ``skipped`` (the output exists); ``failed`` (see
            ``error``); ``ignored`` (not an image: a file found by a folder
            walk or glob whose content is not an image); ``pending`` (the
            batch stopped before it, or the shard is another process's).
        error: why it failed, one line.
        claimed: the extension says it is an image, or the user named the file.
        key: the output's path relative to the output folder: the shard key.
        input_size, output_size: (width, height) in pixels, once known.
        seconds: work time spent on it (decode, model, encode).
        model_seconds: of which the model (bicubic resize, network, colour).
        precision: what the network ran in.
        engine: what ran it (``torch``, ``winograd`` in fp32 on CPUs, ...).
    """

    source: Path
    output: Path
    status: str = PENDING
    error: str | None = None
    claimed: bool = True
    key: str = ""
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    seconds: float = 0.0
    model_seconds: float = 0.0
    precision: str | None = None
    engine: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "input": str(self.source),
            "output": str(self.output),
            "status": self.status,
            "error": self.error,
            "input_size": list(self.input_size) if self.input_size else None,
            "output_size": list(self.output_size) if self.output_size else None,
            "seconds": round(self.seconds, 4),
            "model_seconds": round(self.model_seconds, 4),
            "precision": self.precision,
            "engine": self.engine,
        }

    @property
    def megapixels(self) -> float:
        """Output megapixels (0 until written)."""
        if self.status != DONE or self.output_size is None:
            return 0.0
        return self.output_size[0] * self.output_size[1] / 1e6


@dataclass
class BatchReport:
    """What a batch did: one :class:`BatchItem` per file, and totals.

    Attributes:
        items: every file of this process's share, in order.
        seconds: wall time of the whole batch.
        model: the model's name; device, precision, engine: where and how it ran.
        scale: the upscaling factor.
        shard: this process's 0-based (index, count), or None.
        stopped: why the batch stopped early (a full disk, Ctrl-C), or None.
        interrupted: stopped by Ctrl-C (KeyboardInterrupt).
    """

    items: list[BatchItem]
    seconds: float = 0.0
    model: str = ""
    device: str = ""
    precision: str = ""
    engine: str = ""
    scale: float = 0.0
    shard: tuple[int, int] | None = None
    stopped: str | None = None
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == FAILED]

    @property
    def megapixels(self) -> float:
        """Output megapixels written."""
        return sum(i.megapixels for i in self.items)

    @property
    def model_seconds(self) -> float:
        """Time spent in the model (resize, network, colour), summed over files."""
        return sum(i.model_seconds for i in self.items)

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, 1 if any file failed or the batch stopped early, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.stopped else 0

    def summary(self) -> dict[str, Any]:
        return {
            "done": self.count(DONE),
            "skipped": self.count(SKIPPED),
            "failed": self.count(FAILED),
            "ignored": self.count(IGNORED),
            "pending": self.count(PENDING),
            "megapixels": round(self.megapixels, 4),
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``sruc batch --json`` prints it)."""
        return {
            "model": self.model,
            "scale": self.scale,
            "device": self.device,
            "precision": self.precision,
            "engine": self.engine,
            "shard": list(self.shard) if self.shard else None,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "files": [i.to_json() for i in self.items],
        }


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`~sruc.batch.run.run_batch`: the batch stopped cleanly;
    ``report`` says how far."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report


@dataclass
class BatchProgress:
    """A progress report to :func:`~sruc.batch.run.run_batch`'s callback (on the calling thread).

    Attributes:
        total: files to process in this run (skipped ones not counted).
        position: files through the model, plus the finished fraction of the
            current one (its tiles): what a progress bar shows.
        finished: files with a final status.
        megapixels: output megapixels through the model so far.
        elapsed: seconds since the batch started.
        item: the file that just got its final status (files failed or
            skipped while planning are reported once at the start), or None
            for a tile.
        frames: ``(done, total)`` frames of the animation being upscaled, or None
            (a still image).
    """

    total: int
    position: float
    finished: int
    megapixels: float
    elapsed: float
    item: BatchItem | None = None
    frames: tuple[int, int] | None = None


BatchProgressFn = Callable[[BatchProgress], None]


__all__ = [
    "DONE",
    "FAILED",
    "IGNORED",
    "PENDING",
    "SKIPPED",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchProgressFn",
    "BatchReport",
]
