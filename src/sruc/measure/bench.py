"""``sruc bench``: score models on folders of ground-truth images, as the papers do.

Every number comes from :func:`sruc.core.protocol.evaluate_image`, the one
implementation of ``shared/PROTOCOL.md`` (modcrop, MATLAB-exact LR on Y at 8-bit
levels, the model on the interpolated Y, output rounded, Y-PSNR and SSIM with
``scale`` pixels shaved). This module only finds the images, checks everything
that can be checked before any work, runs the models through
:func:`sruc.core.tiling.run_tiled` and averages, so that its results stay comparable
with published tables. Bicubic is always measured, beside every model.

Example:
    >>> from sruc.measure.bench import bench
    >>> report = bench(["Set5", "Set14"], ["runs/vdsr/best.pt"], [2, 3, 4])  # doctest: +SKIP
    >>> report.result("Set5", 2).bicubic.mean_psnr  # doctest: +SKIP
    33.66...
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from sruc import __version__, archs
from sruc.core.metrics import SSIM_WINDOW
from sruc.core.protocol import YModel, evaluate_image
from sruc.core.tiling import run_tiled
from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.errors import InputError, ModelError, SrucWarning, UsageError
from sruc.files import discovery
from sruc.scales import check_protocol_scales
from sruc.zoo import registry
from sruc.zoo.registry import LoadedModel, load_model

#: The scales of the published tables, used when none are given.
DEFAULT_SCALES = (2, 3, 4)

#: What every number in a report means, for the JSON output (see PROTOCOL.md).
PROTOCOL: dict[str, str] = {
    "reference": "shared/PROTOCOL.md; the SRCNN/VDSR papers' evaluation",
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

#: Reports progress as (steps done, steps total, what was just measured).
BenchProgress = Callable[[int, int, str], None]
ModelSpec = str | os.PathLike[str] | nn.Module | LoadedModel


# --------------------------------------------------------------------------- results


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
    """The outcome of :func:`bench`.

    Attributes:
        sets: the sets measured, in the order given.
        scales: the scales measured, in the order given.
        models: the models besides bicubic, in the order given.
        results: one entry per set and scale (sets outer, scales inner).
        device: where the models ran.
        tile: the tile edge asked for (None: chosen per image; 0: untiled).
        with_ssim: whether SSIM was measured.
        seconds: wall time of the whole run.
    """

    sets: list[EvalSet]
    scales: list[int]
    models: list[ModelInfo]
    results: list[SetResult]
    device: str
    tile: int | None
    with_ssim: bool
    seconds: float = 0.0

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


# --------------------------------------------------------------------------- inputs


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images directly in ``folder`` (not in sub-folders), sorted by name.

    Files are recognised by extension (:data:`sruc.files.discovery.IMAGE_EXTENSIONS`);
    other files and hidden files (such as macOS ``._name.png`` companions,
    which are not images) are skipped.

    Raises:
        InputError: the folder is missing, not a folder, unreadable, empty, or
            holds no images.
    """
    path = Path(folder)
    if not path.exists():
        raise InputError(f"{path}: no such folder")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a folder; sruc bench measures folders of images")
    try:
        entries = sorted(path.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise InputError(f"cannot list folder {path}: {e.strerror or e}") from None
    found = [p for p in discovery.walk(path, recursive=False) if discovery.claims_image(p)]
    if not found:
        if not entries:
            raise InputError(f"{path} is empty: there are no images to measure")
        raise InputError(
            f"{path} has no images (png, jpg, bmp, tif, webp, ...) directly inside it; "
            f"{len(entries)} other entr{'y' if len(entries) == 1 else 'ies'} skipped"
        )
    return found


def min_side(scale: int) -> int:
    """The smallest image side (after modcrop) that can be scored at ``scale``.

    ``scale`` pixels are shaved from each border and what is left must hold one
    11x11 SSIM window (kept with ``with_ssim=False`` too, so that a set's
    images do not change with the option).
    """
    return 2 * scale + SSIM_WINDOW


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise InputError(
            f"{path} is not an image sruc can read (unknown or damaged format)"
        ) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _is_high_depth(im: Image.Image) -> bool:
    """True for images with more than 8 bits per sample.

    Pillow opens 16-bit RGB PNG/TIFF as mode ``RGB`` keeping the high byte
    only; the decoder's raw mode (``RGB;16B``) still tells.
    """
    if im.mode.startswith(("I", "F")):
        return True
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def check_image(path: Path, scales: Sequence[int]) -> None:
    """Check from its header that ``path`` can be scored at every scale.

    Raises:
        InputError: not a readable image, more than 8 bits per sample, or too
            small for a scale.
    """
    with _open(path) as im:
        w, h = im.size
        if _is_high_depth(im):
            raise _high_depth_error(path)
    for s in scales:
        need = min_side(s)
        # The smaller side bounds both dimensions, so EXIF rotation cannot matter.
        if min(w, h) // s * s < need:
            raise InputError(
                f"{path} is {w}x{h}, too small for x{s}: after cropping to a multiple of {s} "
                f"and shaving {s} px per border, SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window needs "
                f"sides of at least {need} px; remove the image or drop x{s}"
            )


def _high_depth_error(path: Path) -> InputError:
    return InputError(
        f"{path} has more than 8 bits per sample; the papers' protocol measures 8-bit "
        "ground truth, so convert it to 8-bit first"
    )


def read_ground_truth(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an 8-bit ground-truth image to a float64 ``(C, H, W)`` tensor on 0..255.

    Gray stays one channel (it is its own Y); everything else becomes RGB.
    Alpha is dropped: quality is measured on colour, as ``sruc psnr`` does.
    The EXIF orientation is applied, as :func:`sruc.files.images.read_image` does,
    so every sruc command sees the same pixels (benchmark sets carry none).

    Raises:
        InputError: unreadable, damaged, or more than 8 bits per sample.
    """
    path = Path(path)
    with _open(path) as im:
        if _is_high_depth(im):
            raise _high_depth_error(path)
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            gray = im.mode in ("1", "L", "LA", "La")
            arr = np.array(im.convert("L" if gray else "RGB"), dtype=np.float64)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            # Pillow reports truncated or corrupt data as OSError/SyntaxError.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"{path} is damaged or truncated ({first})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _eval_sets(folders: Sequence[str | os.PathLike[str]]) -> list[EvalSet]:
    if not folders:
        raise UsageError("give at least one folder of ground-truth images")
    paths = [Path(f) for f in folders]
    sets = []
    seen: set[Path] = set()
    for p in paths:
        images = find_images(p)
        key = p.resolve()
        if key in seen:
            raise UsageError(f"folder {p} is given twice")
        seen.add(key)
        sets.append((p, images))
    names = [p.name or str(p) for p, _ in sets]
    # Two folders both called "Set5" would be indistinguishable in the table.
    return [
        EvalSet(name if names.count(name) == 1 else str(p), p, tuple(images))
        for name, (p, images) in zip(names, sets, strict=True)
    ]


@dataclass
class _Candidate:
    """A ``--model`` resolved for every requested scale."""

    name: str
    arch: str
    trained: tuple[float, ...]
    at: dict[int, LoadedModel]
    reason: str | None = None  # why the scales missing from ``at`` are skipped


def _check_channels(lm: LoadedModel) -> None:
    channels = getattr(lm.module, "config", {}).get("channels", 1)
    if channels != 1:
        raise ModelError(
            f"{lm.name} works on {channels} channels; the protocol runs models on the "
            "Y channel only (1 channel)"
        )


def _single(name: str, lm: LoadedModel, scales: Sequence[int]) -> _Candidate:
    """One set of weights: the scales it has (or, multi-scale, all of them)."""
    _check_channels(lm)
    at: dict[int, LoadedModel] = {}
    for s in scales:
        try:
            lm.check_scale(float(s))  # warns when outside a multi-scale model's range
        except ModelError:
            continue
        at[s] = lm
    reason = f"{name} ({lm.arch.upper()}) has weights for {format_scales(lm.scales)} only"
    return _Candidate(name, lm.arch, tuple(lm.scales), at, reason)


def _resolve(spec: ModelSpec, scales: Sequence[int]) -> _Candidate | None:
    """Load ``spec`` for every scale it can run; None for bicubic (always measured).

    A registry group with one file per scale (SRCNN) loads each scale's file,
    so ``--model srcnn --scale 2,3,4`` compares the x2, x3 and x4 weights.
    """
    if isinstance(spec, LoadedModel):
        return None if spec.identity else _single(spec.name, spec, scales)
    if isinstance(spec, nn.Module):
        lm = load_model(spec)
        return None if lm.identity else _single(lm.name, lm, scales)
    name = os.fspath(spec)
    rows = registry.find(name) if name not in registry.builtin_names() else []
    if len(rows) > 1 and not archs.get(rows[0].arch).multiscale:
        trained = tuple(sorted({t for w in rows for t in w.scales}))
        at: dict[int, LoadedModel] = {}
        for s in scales:
            if any(math.isclose(s, t) for t in trained):
                # Picks the file for this scale (downloaded if need be).
                at[s] = load_model(name, scale=float(s))
                _check_channels(at[s])
        reason = f"{name} ({rows[0].arch.upper()}) has weights for {format_scales(trained)} only"
        return _Candidate(name, rows[0].arch, trained, at, reason)
    lm = load_model(name)
    return None if lm.identity else _single(name, lm, scales)


def _resolve_all(specs: Sequence[ModelSpec], scales: Sequence[int]) -> list[_Candidate]:
    """Every model, checked against every scale before any work.

    A model that lacks some scales is skipped there with a warning (models
    trained for different scales can still share a table); one that has none
    of them is an error.
    """
    out: list[_Candidate] = []
    for spec in specs:
        cand = _resolve(spec, scales)
        if cand is None or any(c.name == cand.name for c in out):
            continue
        if not cand.at:
            raise ModelError(
                f"{cand.reason}, none of the requested {format_scales(scales)}; ask for those "
                "scales or use a multi-scale model such as VDSR"
            )
        for s in scales:
            if s not in cand.at:
                warnings.warn(f"{cand.reason}: skipped at x{s}", SrucWarning, stacklevel=3)
        out.append(cand)
    return out


# --------------------------------------------------------------------------- the run


def _runner(net: nn.Module, radius: int, tile: int | None, device: torch.device) -> YModel:
    def run(x: torch.Tensor) -> torch.Tensor:
        # Tiles overlap by the receptive radius, so tiled and whole-image
        # results are the same: the tile size cannot change a score.
        return run_tiled(net, x, radius=radius, tile=tile, device=device)

    return run


def bench(
    folders: Sequence[str | os.PathLike[str]],
    models: Sequence[ModelSpec] = (),
    scales: Sequence[int] = DEFAULT_SCALES,
    *,
    device: str | torch.device = "auto",
    tile: int | None = None,
    with_ssim: bool = True,
    progress: BenchProgress | None = None,
) -> BenchReport:
    """Score ``models`` and bicubic on folders of ground-truth images, by the papers' protocol.

    Everything that can fail is checked before any work: the scales, the
    device, every folder and image header (readable, 8-bit, large enough for
    every scale), and the models. A model that has no weights for some of the
    scales (an SRCNN trained for x3 asked for 2,3,4) is skipped at those scales
    with a :class:`~sruc.errors.SrucWarning`, so models with different scales
    can still be compared; a model that can run none of them is an error.

    Args:
        folders: folders of HR images; each is one set, named by its folder.
        models: registry names, checkpoint paths, modules or loaded models;
            bicubic is always measured and need not be listed.
        scales: integer upscaling factors, 2..8.
        device: where models run (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
            ``mps``); the protocol itself always runs on the CPU in float64.
        tile: tile edge in pixels; 0 runs whole images; None picks per device.
        with_ssim: measure and report SSIM (False saves most of the time).
        progress: called with (steps done, steps total, label) after each
            image, scale and model.

    Returns:
        The scores, per image and averaged per set, scale and model.

    Raises:
        UsageError: bad scales, no folders, or a folder given twice.
        InputError: a missing, empty or image-less folder; an unreadable,
            damaged, 16-bit or too-small image.
        ModelError: an unknown or broken model, one that fits no scale, or
            weights that cannot be downloaded (:class:`sruc.zoo.hub.DownloadError`).
        DeviceError: the device is not available.
    """
    start = time.perf_counter()
    scale_list = check_protocol_scales(scales, "the benchmark")
    dev = resolve_device(device)
    tune_cpu_allocator()
    if tile is not None and tile < 0:
        raise UsageError(f"tile must be 0 (no tiling) or a positive size, got {tile}")
    sets = _eval_sets(folders)
    for es in sets:
        for path in es.images:
            check_image(path, scale_list)
    cands = _resolve_all(models, scale_list)
    runners: dict[tuple[int, int], YModel] = {}
    prepared: dict[int, nn.Module] = {}
    for i, cand in enumerate(cands):
        for s, lm in cand.at.items():
            if id(lm) not in prepared:  # one move to the device per weights file
                prepared[id(lm)] = lm.module.to(dev).eval()
            runners[(i, s)] = _runner(prepared[id(lm)], lm.radius, tile, dev)
    results = {
        (es.name, s): SetResult(
            es.name,
            s,
            ModelScores("bicubic", weights="bicubic"),
            [
                ModelScores(c.name, weights=c.at[s].name)
                if s in c.at
                else ModelScores(c.name, skipped=c.reason)
                for c in cands
            ],
        )
        for es in sets
        for s in scale_list
    }
    runs_per_image = {s: 1 + sum(s in c.at for c in cands) for s in scale_list}
    total = sum(len(es.images) for es in sets) * sum(runs_per_image.values())
    done = 0

    def score(hr: torch.Tensor, s: int, model: YModel | None, into: ModelScores, name: str) -> None:
        nonlocal done
        t0 = time.perf_counter()
        sc = evaluate_image(hr, s, model, with_ssim=with_ssim)
        into.images.append(ImageScore(name, sc.psnr, sc.ssim))
        into.seconds += time.perf_counter() - t0
        done += 1
        if progress is not None:
            progress(done, total, f"{into.model} x{s} {name}")

    with torch.inference_mode():
        for es in sets:
            for path in es.images:
                hr = read_ground_truth(path)
                for s in scale_list:
                    r = results[(es.name, s)]
                    score(hr, s, None, r.bicubic, path.name)
                    for i, ms in enumerate(r.models):
                        if ms.skipped is None:
                            score(hr, s, runners[(i, s)], ms, path.name)
    return BenchReport(
        sets=sets,
        scales=scale_list,
        models=[ModelInfo(c.name, c.arch, c.trained) for c in cands],
        results=list(results.values()),
        device=str(dev),
        tile=tile,
        with_ssim=with_ssim,
        seconds=time.perf_counter() - start,
    )
