"""sruc: SRCNN and VDSR image upscaling, MATLAB-exact and seam-free.

The library API::

    import sruc
    img = sruc.upscale("photo.jpg", 3)                    # VDSR -> PIL.Image
    up = sruc.Upscaler("vdsr")                            # prepared once, for many images
    up.upscale("a.jpg", 3); up.upscale("b.jpg", 2.5)
    sruc.upscale_file("photo.jpg", "photo_x3.png", 3, model="srcnn")
    sruc.upscale("photo.jpg", sruc.TargetSize(width=1920))  # a size, not a scale
    sruc.psnr("hr.png", "sr.png", shave=3)                # Y-channel PSNR in dB

Heavy modules (torch) are imported on first use, so ``import sruc`` and
``sruc --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sruc.errors import (
    ChecksumError,
    DeviceError,
    DownloadError,
    InputError,
    ModelError,
    OutputError,
    SrucError,
    SrucWarning,
    Stopped,
    UsageError,
)

__version__ = "0.1.0.dev0"

_LAZY = {
    "TargetSize": "sruc.scales",
    "Upscaler": "sruc.engine.pipeline",
    "UpscaleResult": "sruc.engine.pipeline",
    "upscale": "sruc.engine.pipeline",
    "upscale_file": "sruc.engine.pipeline",
    "upscale_picture": "sruc.engine.pipeline",
    "psnr": "sruc.measure.quality",
    "ssim": "sruc.measure.quality",
    "compare": "sruc.measure.quality",
    "load_model": "sruc.zoo.registry",
    "imresize": "sruc.core.resize",
    "read_image": "sruc.files.images",
    "write_image": "sruc.files.images",
    "use_threads": "sruc.engine.threads",
}

if TYPE_CHECKING:
    from sruc.core.resize import imresize
    from sruc.engine.pipeline import Upscaler, upscale, upscale_file, upscale_picture
    from sruc.engine.threads import use_threads
    from sruc.files.images import read_image, write_image
    from sruc.measure.quality import compare, psnr, ssim
    from sruc.scales import TargetSize
    from sruc.zoo.registry import load_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sruc' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ChecksumError",
    "DeviceError",
    "DownloadError",
    "InputError",
    "ModelError",
    "OutputError",
    "SrucError",
    "SrucWarning",
    "Stopped",
    "TargetSize",
    "UpscaleResult",
    "Upscaler",
    "UsageError",
    "__version__",
    "compare",
    "imresize",
    "load_model",
    "psnr",
    "read_image",
    "ssim",
    "upscale",
    "upscale_file",
    "upscale_picture",
    "use_threads",
    "write_image",
]
