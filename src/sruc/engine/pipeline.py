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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from sruc.core.color import rgb_to_ycbcr, ycbcr_to_rgb
from sruc.core.ensemble import self_ensemble
from sruc.core.resize import imresize, output_size
from sruc.core.tiling import ProgressFn, check_tile, default_batch, default_tile, run_tiled
from sruc.engine import memory
from sruc.engine.prepared import ModelSpec, PreparedModel, prepare_model
from sruc.errors import DeviceError, ModelError, SrucWarning
from sruc.files import images
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
        cache_dir, offline, sha256: where the weights may come from (see
            :func:`sruc.zoo.registry.load_model`).

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
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        sha256: str | None = None,
        engine: str = "auto",
    ) -> None:
        from sruc.engine.runtimes import check_engine

        self.model = model
        self.device = device
        self.precision = precision
        self.engine = check_engine(engine)
        self.tile = tile
        self.tta = tta
        self._load = {"cache_dir": cache_dir, "offline": offline, "sha256": sha256}
        self._prepared: dict[str | None, PreparedModel] = {}  # by weights file (None: one)

    def prepared(self, scale: float) -> PreparedModel:
        """The model prepared for ``scale`` (loaded and prepared on first use)."""
        key = self._key(scale)
        pm = self._prepared.get(key)
        if pm is None:
            pm = self._prepared[key] = self._prepare(scale)
        pm.loaded.check_scale(scale)
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
        self, pic: Picture, scale: Scale, *, progress: ProgressFn | None = None
    ) -> Picture:
        """Upscale a decoded picture (see :func:`upscale_picture`)."""
        pm, factor, size = self._plan(pic, scale)
        return _upscale(pm, pic, factor, self.tile, progress, self.tta, size)

    def upscale(
        self,
        image: ImageInput,
        scale: Scale,
        *,
        max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
        progress: ProgressFn | None = None,
    ) -> Image.Image:
        """Upscale an image file, Pillow image or picture; a Pillow image back (see
        :func:`upscale`)."""
        if not isinstance(scale, TargetSize):
            self.prepared(check_scale(scale))  # the model's problems before decoding
        pic = _as_picture(image, max_pixels)
        return self.upscale_picture(pic, scale, progress=progress).to_pil()

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
    ) -> UpscaleResult:
        """Upscale ``src`` into ``dst`` (see :func:`upscale_file`)."""
        started = time.perf_counter()
        if not isinstance(scale, TargetSize):
            scale = check_scale(scale)
        dst = images.check_output(dst, overwrite=overwrite, inputs=(src,))
        if not isinstance(scale, TargetSize):
            self.prepared(scale)  # the model's problems before decoding
        pic = images.read_image(src, max_pixels)
        pm, factor, size = self._plan(pic, scale)
        if on_start is not None:
            on_start(pic)
        out = _upscale(pm, pic, factor, self.tile, progress, self.tta, size)
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
    net, precision = pm.runner(bits)
    per_value = 4 if precision == "fp32" else 2
    r = pm.loaded.radius

    def one(x: torch.Tensor, progress: ProgressFn | None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        size = tile
        if size is None:
            size = default_tile(pm.device, h, w, r, channels=x.shape[1], bytes_per_value=per_value)
        batch = default_batch(pm.device, size, r, channels=x.shape[1], bytes_per_value=per_value)
        return run_tiled(
            net, x, radius=r, tile=size, device=pm.device, progress=progress, batch=batch
        )

    return self_ensemble(one, x, progress) if tta else one(x, progress)


def _upscale(
    pm: PreparedModel,
    pic: Picture,
    scale: float,
    tile: int | None,
    progress: ProgressFn | None,
    tta: bool = False,
    size: tuple[int, int] | None = None,
) -> Picture:
    """The core, on checked arguments: bicubic, the network on Y, bicubic chroma, merge.

    ``size``: the output ``(h, w)`` of a TargetSize (else the MATLAB size of ``scale``)."""
    out_h, out_w = size or (output_size(pic.height, scale), output_size(pic.width, scale))
    channels = int(pic.color.shape[0]) + (pic.alpha is not None)
    if pm.device.type == "cpu":
        memory.check_fits(out_w, out_h, channels, scale)
    try:
        return _compute(pm, pic, scale, tile, progress, (out_h, out_w), tta, size is not None)
    except (MemoryError, RuntimeError) as e:
        if not memory.out_of_memory(e):
            raise
        raise DeviceError(
            f"out of memory upscaling {pic.width}x{pic.height} x{scale:g} to {out_w}x{out_h} "
            f"on {pm.device}; use a smaller scale, a smaller --tile, or more memory"
        ) from None


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
    return up.upscale(image, scale, max_pixels=max_pixels, progress=progress)


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
    engine: str = "auto",
) -> UpscaleResult:
    """Upscale ``src`` into ``dst``, checking everything cheap before the work.

    The output is written atomically; the input is never overwritten.
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
