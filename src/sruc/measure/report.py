"""What ``sruc bench`` measured: the result dataclasses, :data:`PROTOCOL` and the JSON.

:class:`BenchReport` holds one :class:`SetResult` per set and scale, each with
bicubic's and every model's :class:`ModelScores` (per-image
:class:`ImageScore`). ``sruc bench --json`` prints :meth:`BenchReport.to_json`;
the table is :func:`sruc.cli.bench.table`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sruc import __version__

#: What every number in a report means, for the JSON output (see docs/PROTOCOL.md).
PROTOCOL: dict[str, str] = {
    "reference": "docs/PROTOCOL.md; the SRCNN/VDSR papers' evaluation",
    "ground_truth": "the 8-bit image as stored (gray stays gray), cropped to a multiple "
    "of the scale keeping the top-left (modcrop)",
    "channel": "Y of BT.601 studio-swing YCbCr as MATLAB rgb2ycbcr; a gray image is its own Y",
    "low_resolution": "MATLAB imresize(Y, 1/scale, 'bicubic') (a = -0.5, antialiased, "
    "symmetric borders), rounded to 8-bit levels",
    "model_input": "MATLAB bicubic of the low-resolution Y back to the ground-truth size, "
    "not rounded, as float32 in [0, 1]",
    "output": "the model's output (the input itself for bicubic) rounded to 8-bit levels",
    "psnr": "peak 255, float64, `scale` pixels shaved from every border, per image; the set "
    "value is the mean in dB",
    "ssim": "Wang et al.: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255, valid "
    "region, same shave; the set value is the mean",
}


@dataclass(frozen=True)
class ImageScore:
    """One image's score at one scale for one model.

    Attributes:
        image: the file name, without its folder.
        psnr: Y-PSNR in dB (``inf`` for a perfect result).
        ssim: SSIM on Y, or None when SSIM was not asked for.
    """

    image: str
    psnr: float
    ssim: float | None


@dataclass
class ModelScores:
    """One model's scores on one set at one scale.

    Attributes:
        model: the model's name, as given.
        weights: the weights file (or registry file name) used at this scale.
        images: per-image scores in file-name order; empty when skipped.
        skipped: why the model was not run at this scale, or None.
        seconds: time spent evaluating, including the protocol's own work.
    """

    model: str
    weights: str | None = None
    images: list[ImageScore] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def mean_psnr(self) -> float | None:
        """Mean PSNR over the set in dB (as the papers average), or None if skipped."""
        return statistics.fmean(s.psnr for s in self.images) if self.images else None

    @property
    def mean_ssim(self) -> float | None:
        """Mean SSIM over the set, or None if skipped or SSIM was not measured."""
        values = [s.ssim for s in self.images if s.ssim is not None]
        return statistics.fmean(values) if values and len(values) == len(self.images) else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: means, per-image values, and ``skipped``."""
        return {
            "model": self.model,
            "weights": self.weights,
            "psnr": _num(self.mean_psnr),
            "ssim": _num(self.mean_ssim),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "images": [
                {"image": s.image, "psnr": _num(s.psnr), "ssim": _num(s.ssim)} for s in self.images
            ],
        }


@dataclass
class SetResult:
    """All scores for one set at one scale.

    Attributes:
        set: the set's name (its folder name).
        scale: the integer upscaling factor.
        bicubic: the bicubic baseline.
        models: one entry per model, in the order given.
    """

    set: str
    scale: int
    bicubic: ModelScores
    models: list[ModelScores]

    def gain(self, model: ModelScores) -> float | None:
        """``model``'s mean PSNR minus bicubic's, in dB (None if skipped)."""
        m, b = model.mean_psnr, self.bicubic.mean_psnr
        return None if m is None or b is None else m - b

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "scale": self.scale,
            "bicubic": self.bicubic.to_json(),
            "models": [{**m.to_json(), "gain_db": _num(self.gain(m))} for m in self.models],
        }


@dataclass(frozen=True)
class EvalSet:
    """A folder of ground-truth images.

    Attributes:
        name: the folder's name (made unique within a report).
        path: the folder.
        images: the image files, sorted by name.
    """

    name: str
    path: Path
    images: tuple[Path, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What a report says about each model it ran."""

    name: str
    arch: str
    trained_scales: tuple[float, ...]


@dataclass
class BenchReport:
    """The outcome of :func:`~sruc.measure.bench.bench`.

    Attributes:
        sets: the sets measured, in the order given.
        scales: the scales measured, in the order given.
        models: the models besides bicubic, in the order given.
        results: one entry per set and scale (sets outer, scales inner).
        device: where the models ran.
        tile: the tile edge asked for (None: chosen per image; 0: untiled).
        with_ssim: whether SSIM was measured.
        seconds: wall time of the whole run.
        tta: whether the models ran as self-ensembles (``--tta``).
    """

    sets: list[EvalSet]
    scales: list[int]
    models: list[ModelInfo]
    results: list[SetResult]
    device: str
    tile: int | None
    with_ssim: bool
    seconds: float = 0.0
    tta: bool = False

    def result(self, set_name: str, scale: int) -> SetResult:
        """The result for one set (by name) and scale.

        Raises:
            KeyError: no such set or scale in this report.
        """
        for r in self.results:
            if r.set == set_name and r.scale == scale:
                return r
        raise KeyError(f"no result for set {set_name!r} at x{scale}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the protocol, the setup, and every value.

        Infinite PSNR (a perfect reconstruction) is written as the string
        ``"inf"``, as ``sruc psnr --json`` does, since JSON has no infinity.
        """
        return {
            "sruc_version": __version__,
            "protocol": dict(PROTOCOL),
            "device": self.device,
            "tile": self.tile,
            "ssim": self.with_ssim,
            "tta": self.tta,
            "scales": list(self.scales),
            "models": [
                {"name": "bicubic", "arch": "bicubic", "trained_scales": None},
                *(
                    {"name": m.name, "arch": m.arch, "trained_scales": list(m.trained_scales)}
                    for m in self.models
                ),
            ],
            "sets": [
                {"name": s.name, "path": str(s.path), "images": [p.name for p in s.images]}
                for s in self.sets
            ],
            "results": [r.to_json() for r in self.results],
            "seconds": round(self.seconds, 3),
        }


def format_scales(scales: Iterable[float]) -> str:
    """``x2/x3/x4``, for messages and tables."""
    return "/".join(f"x{s:g}" for s in scales) or "no known scale"


def _num(value: float | None) -> float | str | None:
    if value is None:
        return None
    return "inf" if math.isinf(value) else round(value, 6)


__all__ = [
    "PROTOCOL",
    "BenchReport",
    "EvalSet",
    "ImageScore",
    "ModelInfo",
    "ModelScores",
    "SetResult",
    "format_scales",
]
