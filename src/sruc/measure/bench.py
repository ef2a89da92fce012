"""``sruc bench``: score models on folders of ground-truth images, as the papers do.

Every number comes from :func:`sruc.core.protocol.evaluate_image`, the one
implementation of ``docs/PROTOCOL.md`` (modcrop, MATLAB-exact LR on Y at 8-bit
levels, the model on the interpolated Y, output rounded, Y-PSNR and SSIM with
``scale`` pixels shaved). This module only checks everything that can be
checked before any work (the images through :mod:`sruc.measure.sets`),
resolves the models for every scale, runs them through
:func:`sruc.core.tiling.run_tiled` and averages into a
:class:`~sruc.measure.report.BenchReport`, so that its results stay comparable
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
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sruc import archs
from sruc.core.ensemble import self_ensemble
from sruc.core.protocol import YModel, evaluate_image
from sruc.core.tiling import TileModel, check_tile, run_tiled
from sruc.engine.device import resolve_device, tune_cpu_allocator
from sruc.engine.fused import ConvChain
from sruc.engine.runtimes import Fallback, choose_engine, engine_forward
from sruc.engine.threads import use_threads
from sruc.errors import ModelError, SrucWarning, UsageError
from sruc.measure.report import (
    BenchReport,
    EvalSet,
    ImageScore,
    ModelInfo,
    ModelScores,
    SetResult,
    format_scales,
)
from sruc.measure.sets import check_image, find_images, read_ground_truth
from sruc.scales import check_protocol_scales
from sruc.zoo import registry
from sruc.zoo.registry import LoadedModel, load_model

#: The scales of the published tables, used when none are given.
DEFAULT_SCALES = (2, 3, 4)

#: Reports progress as (steps done, steps total, what was just measured).
BenchProgress = Callable[[int, int, str], None]
ModelSpec = str | os.PathLike[str] | nn.Module | LoadedModel


# --------------------------------------------------------------------------- inputs


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


def _runner(
    net: TileModel, radius: int, tile: int | None, device: torch.device, tta: bool
) -> YModel:
    def run(x: torch.Tensor, progress: object = None) -> torch.Tensor:
        # Tiles overlap by the receptive radius, so tiled and whole-image
        # results are the same: the tile size cannot change a score.
        return run_tiled(net, x, radius=radius, tile=tile, device=device)

    if tta:
        return lambda x: self_ensemble(run, x)
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
    tta: bool = False,
    engine: str = "auto",
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
        tta: score every model by its self-ensemble over the 8 flips and
            rotations (:mod:`sruc.core.ensemble`; 8 times the work; bicubic
            is unchanged by it).
        engine: what runs the models in fp32: ``auto``, ``torch``, ``winograd``,
            ``nnpack``, ``onnxruntime`` or ``openvino``
            (:func:`sruc.engine.runtimes.choose_engine`).

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
    chosen = choose_engine(engine, dev, "fp32")  # a missing extra before any work
    tune_cpu_allocator()
    use_threads()  # the default thread policy, unless a count was chosen already
    if tile is not None and tile < 0:
        raise UsageError(f"tile must be 0 (no tiling) or a positive size, got {tile}")
    sets = _eval_sets(folders)
    for es in sets:
        for path in es.images:
            check_image(path, scale_list)
    cands = _resolve_all(models, scale_list)
    for lm in (lm for c in cands for lm in c.at.values()):
        check_tile(tile, lm.radius)
    runners = _runners(cands, tile, dev, tta, chosen)
    results = _empty_results(sets, scale_list, cands)
    runs_per_image = {s: 1 + sum(s in c.at for c in cands) for s in scale_list}
    total = sum(len(es.images) for es in sets) * sum(runs_per_image.values())
    scorer = _Scorer(with_ssim, total, progress)
    with torch.inference_mode():
        for es in sets:
            for path in es.images:
                scorer.image(path, [results[(es.name, s)] for s in scale_list], runners)
    return BenchReport(
        sets=sets,
        scales=scale_list,
        models=[ModelInfo(c.name, c.arch, c.trained) for c in cands],
        results=list(results.values()),
        device=str(dev),
        tile=tile,
        with_ssim=with_ssim,
        tta=tta,
        seconds=time.perf_counter() - start,
    )


def _runners(
    cands: Sequence[_Candidate], tile: int | None, dev: torch.device, tta: bool, engine: str
) -> dict[tuple[int, int], YModel]:
    """What runs model ``i`` at scale ``s``, by ``(i, s)``; each weights file moved
    to the device (or loaded into ``engine``) once."""
    runners: dict[tuple[int, int], YModel] = {}
    prepared: dict[int, TileModel] = {}
    for i, cand in enumerate(cands):
        for s, lm in cand.at.items():
            if id(lm) not in prepared:  # one move to the device per weights file
                module = lm.module.to(dev).eval()
                prepared[id(lm)] = _fp32_runner(lm, module, dev, engine)
            runners[(i, s)] = _runner(prepared[id(lm)], lm.radius, tile, dev, tta)
    return runners


def _fp32_runner(lm: LoadedModel, module: nn.Module, dev: torch.device, engine: str) -> TileModel:
    """The network in fp32 on ``engine`` (as :func:`~sruc.engine.runtimes.choose_engine`
    chose it): the module itself on ``torch``, its convolution chain with Winograd 3x3
    layers on ``winograd``/``nnpack`` (the module where it has no chain), else the
    engine with a fallback to the module."""
    if engine == "torch":
        return module
    if engine in ("winograd", "nnpack"):
        chain = ConvChain.of(module, torch.float32, dev, conv3x3=engine)
        return module if chain is None else chain
    return Fallback(engine, engine_forward(lm, engine), module)


def _empty_results(
    sets: Sequence[EvalSet], scale_list: Sequence[int], cands: Sequence[_Candidate]
) -> dict[tuple[str, int], SetResult]:
    """One result per set and scale (sets outer), every model's scores still empty."""
    return {
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


@dataclass
class _Scorer:
    """Scores images into a report's results, reporting progress after each."""

    with_ssim: bool
    total: int
    progress: BenchProgress | None
    done: int = 0

    def image(
        self, path: Path, results: Sequence[SetResult], runners: dict[tuple[int, int], YModel]
    ) -> None:
        """One ground-truth image at the scale of each of ``results``: bicubic, then
        every model not skipped there."""
        hr = read_ground_truth(path)
        for r in results:
            self.score(hr, r.scale, None, r.bicubic, path.name)
            for i, ms in enumerate(r.models):
                if ms.skipped is None:
                    self.score(hr, r.scale, runners[(i, r.scale)], ms, path.name)

    def score(
        self, hr: torch.Tensor, s: int, model: YModel | None, into: ModelScores, name: str
    ) -> None:
        t0 = time.perf_counter()
        sc = evaluate_image(hr, s, model, with_ssim=self.with_ssim)
        into.images.append(ImageScore(name, sc.psnr, sc.ssim))
        into.seconds += time.perf_counter() - t0
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, f"{into.model} x{s} {name}")


__all__ = ["DEFAULT_SCALES", "BenchProgress", "ModelSpec", "bench"]
