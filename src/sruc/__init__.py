"""sruc: SRCNN and VDSR image upscaling, MATLAB-exact and seam-free.

The library API::

    import sruc
    img = sruc.upscale("photo.jpg", 3)                    # VDSR -> PIL.Image
    sruc.upscale_file("photo.jpg", "photo_x3.png", 3, model="srcnn")
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
    UsageError,
)

__version__ = "0.1.0.dev0"

_LAZY = {
    "upscale": "sruc.pipeline",
    "upscale_file": "sruc.pipeline",
    "upscale_picture": "sruc.pipeline",
    "psnr": "sruc.quality",
    "ssim": "sruc.quality",
    "compare": "sruc.quality",
    "load_model": "sruc.registry",
    "imresize": "sruc.resize",
    "read_image": "sruc.images",
    "write_image": "sruc.images",
}

if TYPE_CHECKING:
    from sruc.images import read_image, write_image
    from sruc.pipeline import upscale, upscale_file, upscale_picture
    from sruc.quality import compare, psnr, ssim
    from sruc.registry import load_model
    from sruc.resize import imresize


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
    "write_image",
]
