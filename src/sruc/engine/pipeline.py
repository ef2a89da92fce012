"""The upscaling pipeline.

decode -> EXIF orientation -> MATLAB bicubic upscale of the whole image ->
model on the Y channel (tiled, seam-free) -> Cb/Cr from the bicubic image ->
merge -> clamp and round -> encode. Gray images are their own Y (one channel,
no colour work); alpha is upscaled bicubically on its own.

Speed: the model is prepared once (:func:`sruc.engine.prepared.prepare_model`:
device, precision, fused kernels) and reused for every image; a
:class:`PreparedModel` passed as ``model`` skips that work.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from sruc.core.color import rgb_to_ycbcr, ycbcr_to_rgb
from sruc.core.ensemble import self_ensemble
from sruc.core.resize import imresize, output_size
from sruc.core.tiling import ProgressFn, check_tile, run_tiled
from sruc.engine import banded, memory
from sruc.engine.prepared import ModelSpec, PreparedModel, prepare_model
from sruc.engine.threads import check_threads, use_threads
from sruc.errors import DeviceError, ModelError, SrucWarning, UsageError
from sruc.files import animation, images
from sruc.files.animation import Animation, Frame
from sruc.files.images import Picture
from sruc.scales import TargetSize, check_scale, nearest_scale
from sruc.zoo.cache import ENV_CACHE_DIR
from sruc.zoo.download import ENV_BASE_URL
from sruc.zoo.hub import ENV_OFFLINE
from sruc.zoo.registry import DEFAULT_MODEL, LoadedModel, load_model

ImageInput = str | os.PathLike[str] | Image.Image | Picture
#: How much larger: a factor in (1, 8], or an output size (``TargetSize(width=1920)``).
Scale = float | TargetSize


@dataclass
class UpscaleResult:
    """What :func:`upscale_file` did, for the CLI's summary."""

    output: Path
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    model: str
    scale: float
    device: str
    seconds: float
    precision: str = "fp32"
    frames: int = 1  # more than 1: an animation, every frame upscaled
    engine: str = "torch"  # what ran it (sruc.engine.runtimes), e.g. winograd in fp32 on CPUs


class Upscaler:
    """A model loaded, verified and prepared once, for as many images as you like.

    Example:
        >>> up = sruc.Upscaler("vdsr", device="auto")  # doctest: +SKIP
        >>> for name in ("a.jpg", "b.jpg"):  # doctest: +SKIP
        ...     up.upscale(name, 3).save(name + "_x3.png")

    Args:
        model: registry name (``vdsr``, ``srcnn``, ``bicubic``), checkpoint
            path, http(s) URL (with ``sha256``), nn.Module, loaded or prepared model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`sruc.engine.precision`).
        engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (see
            :mod:`sruc.engine.runtimes`; the last two need ``pip install 'sruc[fast]'``).
        tile: tile edge in pixels; 0 disables tiling; None picks one per image.
        tta: self-ensemble: average the network over the 8 flips and rotations
            of its input (:mod:`sruc.core.ensemble`; 8 times the work).
        banded: make the output in bands of rows (:mod:`sruc.engine.banded`; the
            same pixels in a fraction of the memory) if True, the whole image at
            once if False; None (default): :func:`sruc.engine.memory.choose_banded`
            decides (bands on CPUs, whole images on GPUs while they fit).
        cache_dir, offline, sha256: where the weights may come from (see
            :func:`sruc.zoo.registry.load_model`).
        threads: CPU threads for torch, set for the whole process when the
            model is prepared (:func:`sruc.engine.threads.use_threads`); None:
            the CPUs this process may use, or ``OMP_NUM_THREADS``.

    A registry group with one file per scale (SRCNN) loads the file of each
    scale on first use and keeps it. Nothing is loaded until the first image,
    so making an Upscaler never fails on a missing download; every image after
    the first pays only for its own work. Not for concurrent use from threads.
    """

    def __init__(
        self,
        model: ModelSpec = DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | None = None,
        tta: bool = False,
        banded: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        sha256: str | None = None,
        threads: int | None = None,
        engine: str = "auto",
    ) -> None:
        from sruc.engine.runtimes import check_engine

        self.model = model
        self.threads = None if threads is None else check_threads(threads)
        self.device = device
        self.precision = precision
        self.engine = check_engine(engine)
        self.tile = tile
        self.tta = tta
        self.banded = banded
        self._load = {"cache_dir": cache_dir, "offline": offline, "sha256": sha256}
        self._prepared: dict[str | None, PreparedModel] = {}  # by weights file (None: one)
        self._checked: set[tuple[str | None, float]] = set()  # (file, scale) pairs checked

    def prepared(self, scale: float) -> PreparedModel:
        """The model prepared for ``scale`` (loaded and prepared on first use)."""
        key = self._key(scale)
        pm = self._prepared.get(key)
        if pm is None:
            pm = self._prepared[key] = self._prepare(scale)
        if (key, scale) not in self._checked:  # its warning once, not once per image
            pm.loaded.check_scale(scale)
            self._checked.add((key, scale))
        return pm

    def network_scale(self, scale: float) -> float:
        """The scale the network runs at for an output ``scale`` times the input's size:
        ``scale`` itself for a multi-scale model (VDSR, bicubic), the nearest trained
        scale for a per-scale one (SRCNN; its output is then resized to the exact size
        by the protocol's bicubic). Loads a model file to read its scales."""
        if isinstance(self.model, str | os.PathLike):
            from sruc.zoo import registry

            trained = registry.group_scales(os.fspath(self.model))
            if trained is not None:
                return nearest_scale(trained, scale) if trained else scale
        pm = self._prepared.get(None)
        if pm is None:
            pm = self._prepared[None] = self._prepare(scale)
        lm = pm.loaded
        if lm.identity or lm.multiscale or not lm.scales:
            return scale
        return nearest_scale(lm.scales, scale)

    def _plan(
        self, pic: Picture, scale: Scale
    ) -> tuple[PreparedModel, float, tuple[int, int] | None]:
        """The prepared model, the scale and (for a TargetSize) the output ``(h, w)``."""
        if isinstance(scale, TargetSize):
            factor, out_w, out_h = scale.resolve(pic.width, pic.height)
            return self.prepared(self.network_scale(factor)), factor, (out_h, out_w)
        factor = check_scale(scale)
        return self.prepared(factor), factor, None

    def _prepare(self, scale: float) -> PreparedModel:
        model = self.model
        if isinstance(model, PreparedModel):
            lm = model.loaded
        elif isinstance(model, LoadedModel):
            lm = model
        elif isinstance(model, torch.nn.Module):
            lm = load_model(model)
        else:
            lm = load_model(model, scale=scale, **self._load)  # type: ignore[arg-type]
        check_tile(self.tile, lm.radius)  # once per model, before any image
        check_tta(lm, self.tta)
        use_threads(self.threads)
        if isinstance(model, PreparedModel):
            return model
        return prepare_model(
            lm,
            device=self.device,
            precision=self.precision,
            engine=self.engine,
            cache_dir=self._load["cache_dir"],
        )

    def _key(self, scale: float) -> str | None:
        """Which file serves ``scale``: per-scale registry groups have one per scale."""
        if isinstance(self.model, str | os.PathLike):
            from sruc.zoo import registry

            name = os.fspath(self.model)
            rows = registry.find(name)
            if len(rows) > 1:
                return registry.select(name, scale).name
        return None

    def upscale_picture(
        self,
        pic: Picture,
        scale: Scale,
        *,
        progress: ProgressFn | None = None,
        depth: int | None = None,
        max_output_pixels: int | None = None,
        target: str | os.PathLike[str] | None = None,
    ) -> Picture:
        """Upscale a decoded picture (see :func:`upscale_picture`).

        ``target``: the file the result will be written to, or ``depth`` (8 or 16):
        the bits it will be written at; a banded result is then stored quantised,
        in a quarter or half of a float picture's memory (``target`` also tells
        the memory estimate how it will be encoded). ``max_output_pixels``: refuse
        larger outputs before any work."""
        pm, factor, size = self._plan(pic, scale)
        how = _output(pic, target, max_output_pixels, self.banded, depth)
        return _upscale(pm, pic, factor, self.tile, progress, self.tta, size, how)

    def upscale(
        self,
        image: ImageInput,
        scale: Scale,
        *,
        max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
        progress: ProgressFn | None = None,
        max_output_pixels: int | None = None,
    ) -> Image.Image:
        """Upscale an image file, Pillow image or picture; a Pillow image back (see
        :func:`upscale`). Of an animation, the first frame only (with a warning)."""
        if not isinstance(scale, TargetSize):
            self.prepared(check_scale(scale))  # the model's problems before decoding
        pic = _as_picture(image, max_pixels)
        # No pixel limit here: only the first frame, already decoded, is upscaled.
        if isinstance(image, str | os.PathLike) and animation.probe(image, None):
            warnings.warn(
                f"{image} is animated: only its first frame is upscaled here; "
                "upscale_file keeps every frame",
                SrucWarning,
                stacklevel=2,
            )
        pm, factor, size = self._plan(pic, scale)
        how = _output(pic, None, max_output_pixels, self.banded, images.output_bits(pic, None))
        how = replace(how, copies=1)  # the Pillow image
        return _upscale(pm, pic, factor, self.tile, progress, self.tta, size, how).to_pil()

    def upscale_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        scale: Scale,
        *,
        quality: int | None = None,
        overwrite: bool = False,
        max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
        progress: ProgressFn | None = None,
        on_start: Callable[[Picture], None] | None = None,
        max_output_pixels: int | None = None,
    ) -> UpscaleResult:
        """Upscale ``src`` into ``dst`` (see :func:`upscale_file`)."""
        started = time.perf_counter()
        if not isinstance(scale, TargetSize):
            scale = check_scale(scale)
        dst = images.check_output(dst, overwrite=overwrite, inputs=(src,))
        anim = animation.probe(src, max_pixels)  # the header only: no frame decoded
        if anim is not None:  # before the model: an output that cannot hold it is refused
            animation.check_output_format(anim, images.output_format(dst))
        if not isinstance(scale, TargetSize):
            self.prepared(scale)  # the model's problems before decoding
        if anim is not None:
            return self.upscale_animation(
                anim,
                dst,
                scale,
                quality=quality,
                overwrite=overwrite,
                progress=progress,
                on_start=on_start,
                started=started,
            )
        pic = images.read_image(src, max_pixels)
        pm, factor, size = self._plan(pic, scale)
        if on_start is not None:
            on_start(pic)
        how = _output(pic, dst, max_output_pixels, self.banded)
        out = _upscale(pm, pic, factor, self.tile, progress, self.tta, size, how)
        images.write_image(out, dst, quality=quality, overwrite=overwrite)
        return UpscaleResult(
            output=dst,
            input_size=(pic.width, pic.height),
            output_size=(out.width, out.height),
            model=pm.loaded.name,
            scale=factor,
            device=str(pm.device),
            seconds=time.perf_counter() - started,
            precision=pm.runner(pic.bits)[1],
            engine=pm.engine_of(pic.bits),
        )

    # ----------------------------------------------------------------- animations

    def upscale_frames(
        self,
        frames: Iterable[Frame],
        scale: Scale,
        *,
        progress: ProgressFn | None = None,
        total: int | None = None,
    ) -> Iterator[Frame]:
        """Each frame upscaled as a still (:meth:`upscale_picture`, the one prepared
        model), lazily: one frame is decoded and upscaled at a time, so a caller that
        keeps only the 8-bit results never holds more than one frame as float.

        ``progress`` is called with (frames done, ``total``) after each frame.
        """
        for done, frame in enumerate(frames, 1):
            out = replace(frame, picture=self.upscale_picture(frame.picture, scale))
            del frame
            if progress is not None:
                progress(done, total if total is not None else done)
            yield out
            del out  # the caller has its 8-bit copy by now

    def upscale_animation(
        self,
        anim: Animation,
        dst: str | os.PathLike[str],
        scale: Scale,
        *,
        quality: int | None = None,
        overwrite: bool = False,
        progress: ProgressFn | None = None,
        on_start: Callable[[Picture], None] | None = None,
        started: float | None = None,
    ) -> UpscaleResult:
        """Upscale every frame of ``anim`` (from :func:`sruc.files.animation.probe`) into
        ``dst`` (GIF, WebP or APNG), keeping durations, disposal, loop count and
        transparency. ``progress`` counts frames; ``on_start`` gets the first frame.

        Raises:
            UsageError: ``dst`` is a format that holds one image (JPEG, TIFF...).
            DeviceError: the upscaled frames would not fit in memory as 8-bit images.
        """
        started = time.perf_counter() if started is None else started
        dst = Path(dst)
        animation.check_output_format(anim, images.output_format(dst))
        frames = animation.read_frames(anim)
        first = next(frames)
        pm, factor, size = self._plan(first.picture, scale)
        out_h, out_w = size or (output_size(anim.height, factor), output_size(anim.width, factor))
        _check_frames_fit(out_w, out_h, anim.frames, factor)
        if on_start is not None:
            on_start(first.picture)
        if progress is not None:
            progress(0, anim.frames)
        bits = first.picture.bits
        chain = _chain(first, frames)
        del first
        upscaled = self.upscale_frames(chain, scale, progress=progress, total=anim.frames)
        animation.write_animation(
            upscaled,
            dst,
            loop=anim.loop,
            alpha=anim.alpha,
            quality=quality,
            overwrite=overwrite,
        )
        return UpscaleResult(
            output=dst,
            input_size=(anim.width, anim.height),
            output_size=(out_w, out_h),
            model=pm.loaded.name,
            scale=factor,
            device=str(pm.device),
            seconds=time.perf_counter() - started,
            precision=pm.runner(bits)[1],
            engine=pm.engine_of(bits),
            frames=anim.frames,
        )


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    del first  # the decoded first frame is not kept for the whole run
    yield from rest


#: Bytes a held output pixel (of every frame) costs while an animation is encoded:
#: sruc's 8-bit RGBA copy and the encoder's own copies. Measured peak memory per
#: extra 512x512 frame: 5.7 B/pixel for WebP, 7.1 for GIF, 10.8 for APNG
#: (docs/EXPERIMENTS.md, "Animations: memory").
_HELD_BYTES_PER_PIXEL = 12


def _check_frames_fit(out_w: int, out_h: int, frames: int, scale: float) -> None:
    """Refuse an animation whose upscaled frames cannot all be held as 8-bit images."""
    need = out_w * out_h * frames * _HELD_BYTES_PER_PIXEL
    avail = memory.available_bytes()
    if avail is not None and need > avail:
        raise DeviceError(
            f"the x{scale:g} animation would be {frames} frames of {out_w}x{out_h}, "
            f"~{need / 2**30:.1f} GiB to encode, but {avail / 2**30:.1f} GiB of memory is "
            "available; use a smaller scale or fewer frames"
        )


def _as_picture(image: ImageInput, max_pixels: int | None) -> Picture:
    if isinstance(image, Picture):
        return image
    if isinstance(image, Image.Image):
        return images.from_pil(image, max_pixels)
    return images.read_image(image, max_pixels)


def check_tta(lm: LoadedModel, tta: bool) -> None:
    """Warn that ``tta`` does nothing for a model that runs no network (bicubic)."""
    if tta and lm.identity:
        warnings.warn(
            f"--tta does nothing with {lm.name}: it runs no network, so every "
            "orientation gives the same image",
            SrucWarning,
            stacklevel=3,
        )


def run_model(
    pm: PreparedModel,
    x: torch.Tensor,
    *,
    bits: int = 8,
    tile: int | None = None,
    progress: ProgressFn | None = None,
    tta: bool = False,
) -> torch.Tensor:
    """Run a prepared network on ``(1, C, H, W)`` float32 ``x``, tiled; same shape out.

    The tile comes from the device when ``tile`` is None (free memory on
    CUDA, :data:`sruc.core.tiling.CPU_TILE` on CPUs), and on CUDA several tiles
    run per forward pass. With ``tta``, the mean over the 8 flips and rotations
    of ``x`` (:func:`sruc.core.ensemble.self_ensemble`), each pass tiled alike.
    """
    net, _ = pm.runner(bits)
    r = pm.loaded.radius

    def one(x: torch.Tensor, progress: ProgressFn | None) -> torch.Tensor:
        size, batch = pm.tiling(x.shape[-2], x.shape[-1], bits, tile, channels=x.shape[1])
        return run_tiled(
            net, x, radius=r, tile=size, device=pm.device, progress=progress, batch=batch
        )

    return self_ensemble(one, x, progress) if tta else one(x, progress)


@dataclass(frozen=True)
class Output:
    """What the caller does with an upscale's result, which decides how it is made.

    Attributes:
        depth: 8 or 16: the bits per sample it will be written or shown at, so a
            banded result can be stored quantised; None: a float picture is wanted.
        max_pixels: the largest output accepted (``--max-pixels``); None: no limit
            but memory.
        banded: force the banded (True) or whole-image (False) path; None lets
            :func:`sruc.engine.memory.choose_banded` decide.
        copies: copies of the output its encoder holds
            (:func:`sruc.files.images.encoded_copies`), for the estimate.
    """

    depth: int | None = None
    max_pixels: int | None = None
    banded: bool | None = None
    copies: int = 0


def _output(
    pic: Picture,
    target: str | os.PathLike[str] | None,
    max_pixels: int | None,
    banded: bool | None,
    depth: int | None = None,
) -> Output:
    """What is done with the result: written to ``target`` (at its depth, with its
    encoder's copies), else kept at ``depth`` (None: float)."""
    if target is None:
        return Output(depth, max_pixels, banded)
    bits = images.output_bits(pic, target)
    return Output(bits, max_pixels, banded, images.encoded_copies(target))


def _upscale(
    pm: PreparedModel,
    pic: Picture,
    scale: float,
    tile: int | None,
    progress: ProgressFn | None,
    tta: bool = False,
    size: tuple[int, int] | None = None,
    how: Output | None = None,
) -> Picture:
    """The core, on checked arguments: bicubic, the network on Y, bicubic chroma, merge;
    the whole image at once or band by band, as :func:`sruc.engine.memory.choose_banded`
    decides (it may refuse the job).

    ``size``: the output ``(h, w)`` of a TargetSize (else the MATLAB size of ``scale``)."""
    how = how or Output()
    out_h, out_w = size or (output_size(pic.height, scale), output_size(pic.width, scale))
    images.check_output_pixels(out_w, out_h, how.max_pixels, (pic.width, pic.height), scale)
    plan = None if tile == 0 else _band_plan(pm, pic, scale, (out_h, out_w), size, tile, tta)
    bands = _use_bands(_job(pic, (out_h, out_w), scale, how, plan), how.banded)
    with memory.out_of_memory_as(
        lambda: (
            f"out of memory upscaling {pic.width}x{pic.height} x{scale:g} to "
            f"{out_w}x{out_h} on {pm.device}; use a smaller scale, a smaller --tile, or more memory"
        )
    ):
        if bands and plan is not None:
            return banded.upscale_banded(pm, pic, plan, depth=how.depth, progress=progress)
        return _compute(pm, pic, scale, tile, progress, (out_h, out_w), tta, size is not None)


def _band_plan(
    pm: PreparedModel,
    pic: Picture,
    scale: float,
    out_size: tuple[int, int],
    size: tuple[int, int] | None,
    tile: int | None,
    tta: bool = False,
) -> banded.BandPlan:
    """The banded path's plan, with the tiles the whole path would cut."""

    def tiling(h: int, w: int) -> tuple[int, int]:
        return pm.tiling(h, w, pic.bits, tile)

    return banded.make_plan(pm, pic, scale, out_size, size is not None, tiling, tta)


def _use_bands(job: memory.Job, forced: bool | None) -> bool:
    """Band the job or not: as forced, else the memory policy (which may refuse it)."""
    if forced is None:
        return memory.choose_banded(job)
    if forced and not job.band_rows:
        raise UsageError("--tile 0 cannot run in bands: the network needs the whole image")
    if not forced:
        memory.choose_banded(replace(job, band_rows=0))  # refuses what cannot fit
    return forced


def _job(
    pic: Picture,
    out_size: tuple[int, int],
    scale: float,
    how: Output,
    plan: banded.BandPlan | None,
) -> memory.Job:
    """What the memory policy needs to know of this upscale."""
    channels = int(pic.color.shape[0]) + (pic.alpha is not None)
    return memory.Job(
        out_width=out_size[1],
        out_height=out_size[0],
        channels=channels,
        scale=scale,
        in_values=pic.width * pic.height * channels,
        out_bytes=(how.depth or 32) // 8,
        band_rows=0 if plan is None else banded.band_rows(plan),
        encode_copies=how.copies,
        whole_faster=plan is not None and (plan.uniform or not plan.exact or bool(plan.passes)),
    )


def _compute(
    pm: PreparedModel,
    pic: Picture,
    scale: float,
    tile: int | None,
    progress: ProgressFn | None,
    out_size: tuple[int, int],
    tta: bool = False,
    sized: bool = False,
) -> Picture:
    out_h, out_w = out_size
    lm = pm.loaded
    # A per-scale model (SRCNN) asked for a size runs at its nearest trained scale;
    # its Y is then resized to the size, and the chroma made at the size directly.
    exact = not sized or lm.identity or lm.multiscale or not lm.scales
    net_scale = scale if exact else nearest_scale(lm.scales, scale)

    def resize(t: torch.Tensor) -> torch.Tensor:
        return imresize(t, size=out_size) if sized else imresize(t, scale)

    with torch.inference_mode():
        target = resize(pic.color[None])  # (1, C, H', W'), C = 1 or 3
        assert target.shape[-2:] == (out_h, out_w)
        up = target if exact else imresize(pic.color[None], net_scale)
        alpha = resize(pic.alpha[None])[0].clamp_(0, 1) if pic.alpha is not None else None

        def network(x: torch.Tensor) -> torch.Tensor:
            y = run_model(pm, x, bits=pic.bits, tile=tile, progress=progress, tta=tta)
            return y if exact else imresize(y, size=out_size)

        if lm.identity:
            color = target[0]
        elif pic.is_gray:
            color = network(up)[0]
        else:
            ycc = rgb_to_ycbcr(up)
            y = network(ycc[:, :1].contiguous())
            chroma = ycc[:, 1:] if exact else rgb_to_ycbcr(target)[:, 1:]
            color = ycbcr_to_rgb(torch.cat([y, chroma], dim=1))[0]
        if not bool(torch.isfinite(color).all()):  # clamp would hide it as black or white
            raise ModelError(
                f"{pm.loaded.name} produced NaN or infinite values ({pm.precision} on "
                f"{pm.device}): its weights are damaged or do not suit this input; nothing "
                "was written"
            )
        color = color.clamp_(0, 1)
    if progress is not None and pm.loaded.identity:
        progress(1, 1)
    return pic.with_pixels(color, alpha)


def upscale_picture(
    pic: Picture,
    scale: Scale,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
    tta: bool = False,
    engine: str = "auto",
) -> Picture:
    """Upscale a decoded picture; the core of :func:`upscale`.

    Args:
        pic: the decoded image.
        scale: upscaling factor in (1, 8]; fractional scales work with
            multi-scale models (VDSR, bicubic). Or a :class:`~sruc.scales.TargetSize`
            (``TargetSize(width=1920)``): VDSR and bicubic run at that exact scale,
            SRCNN at its nearest trained scale followed by the protocol's bicubic
            to the exact size.
        model: registry name, checkpoint path, nn.Module, loaded model, or a
            :class:`PreparedModel` (then ``device`` and ``precision`` are its own).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tile: tile edge in pixels; 0 disables tiling; None picks one.
        progress: called with (tiles done, tiles total).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`prepare_model`).
        tta: self-ensemble over the 8 flips and rotations (8 times the work).
        engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (see :class:`Upscaler`).
    """
    up = _shared(model, device, precision, tile, tta, engine)
    return up.upscale_picture(pic, scale, progress=progress)


def upscale(
    image: ImageInput,
    scale: Scale,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    precision: str = "auto",
    tta: bool = False,
    max_output_pixels: int | None = None,
    engine: str = "auto",
) -> Image.Image:
    """Upscale an image file or Pillow image and return a Pillow image.

    The ICC profile and EXIF (orientation reset) are in the result's ``info``.
    Pillow cannot hold 16-bit colour, so 16-bit RGB comes back as 8-bit here;
    :func:`upscale_file` keeps 16 bits when writing PNG or TIFF. Repeated
    calls with the same model, device and precision reuse one prepared model
    (see :class:`Upscaler`).

    Example:
        >>> import sruc
        >>> sruc.upscale("photo.jpg", 3).save("photo_x3.png")  # doctest: +SKIP
    """
    up = _shared(model, device, precision, tile, tta, engine)
    return up.upscale(
        image,
        scale,
        max_pixels=max_pixels,
        progress=progress,
        max_output_pixels=max_output_pixels,
    )


def upscale_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    scale: Scale,
    *,
    model: ModelSpec = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    tile: int | None = None,
    quality: int | None = None,
    overwrite: bool = False,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    on_start: Callable[[Picture], None] | None = None,
    precision: str = "auto",
    tta: bool = False,
    max_output_pixels: int | None = None,
    engine: str = "auto",
) -> UpscaleResult:
    """Upscale ``src`` into ``dst``, checking everything cheap before the work.

    The output is written atomically; the input is never overwritten. An
    animated GIF, WebP or APNG keeps every frame, its timing, loop count,
    disposal and transparency when ``dst`` is ``.gif``, ``.webp`` or ``.png``
    (see :meth:`Upscaler.upscale_animation`); ``progress`` then counts frames,
    and ``max_pixels`` counts the pixels of every frame (from the headers,
    before decoding). ``max_output_pixels`` limits the output (before any
    work); a very large output is made in bands of rows
    (:mod:`sruc.engine.banded`), or refused in one line if even that cannot fit
    in memory.
    """
    up = _shared(model, device, precision, tile, tta, engine)
    return up.upscale_file(
        src,
        dst,
        scale,
        quality=quality,
        overwrite=overwrite,
        max_pixels=max_pixels,
        progress=progress,
        on_start=on_start,
        max_output_pixels=max_output_pixels,
    )


#: Upscalers the module-level functions reuse, most recent last.
_SHARED: OrderedDict[tuple[object, ...], Upscaler] = OrderedDict()
_SHARED_SIZE = 4
_SHARED_LOCK = threading.Lock()


def _shared(
    model: ModelSpec,
    device: str | torch.device,
    precision: str,
    tile: int | None,
    tta: bool,
    engine: str = "auto",
) -> Upscaler:
    """An Upscaler for these arguments, reused across calls where that is safe.

    Registry names and checkpoint files are reused (a file by its path, size
    and modification time, so a retrained checkpoint is loaded again; a name by
    the cache and mirror settings it was resolved with); modules
    and loaded or prepared models are the caller's objects and are wrapped,
    not cached.
    """
    if not isinstance(model, str | os.PathLike):
        return Upscaler(
            model, device=device, precision=precision, tile=tile, tta=tta, engine=engine
        )
    text = os.fspath(model)
    try:
        st = os.stat(text)
        stamp: tuple[object, ...] = (os.path.realpath(text), st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (text,)
    # Where the weights come from is part of the key, so a changed cache or mirror is used.
    where = tuple(os.environ.get(v) for v in (ENV_CACHE_DIR, ENV_OFFLINE, ENV_BASE_URL))
    key = (*stamp, *where, str(device), precision, tile, tta, engine)
    with _SHARED_LOCK:
        up = _SHARED.pop(key, None) or Upscaler(
            model, device=device, precision=precision, tile=tile, tta=tta, engine=engine
        )
        _SHARED[key] = up
        while len(_SHARED) > _SHARED_SIZE:
            _SHARED.popitem(last=False)
    return up


__all__ = [
    "ImageInput",
    "ModelSpec",
    "PreparedModel",
    "Scale",
    "UpscaleResult",
    "Upscaler",
    "check_tta",
    "prepare_model",
    "run_model",
    "upscale",
    "upscale_file",
    "upscale_picture",
]
