"""Will the job fit in memory? An estimate before the work, the choice of path, and
one line when nothing fits.

A whole-image upscale holds the decoded input, the bicubic enlargement, the
Y/Cb/Cr planes and the output in float32 at once, and one working tile of the
network's feature maps. Measured on this project's machine: 53 bytes per
output pixel for an RGB bicubic x4 of a 1000x1000 image, 68 with SRCNN
(``/usr/bin/time`` max RSS less the 230 MB of an imported sruc);
:data:`BYTES_PER_VALUE` covers that with a margin. The banded path
(:mod:`sruc.engine.banded`) holds the input, the integer output and one band
(:func:`banded_bytes`). :func:`choose_banded` picks the path from these
estimates and the memory the system says is available (``MemAvailable``, and
a cgroup limit where there is one) before anything is computed, so a
5-gigapixel output is refused in a line instead of failing half-way with an
allocator error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sruc.errors import DeviceError

#: Bytes per output value (pixel x channel) the pipeline holds at its peak.
BYTES_PER_VALUE = 24
#: Bytes per output pixel along each side (resize weights and index tables): a
#: 1x200,000 and a 1x800,000 RGB line at x2 took 447 and 1,044 MB here, about
#: 500 bytes per pixel of the long side; this keeps a margin.
BYTES_PER_EDGE_PIXEL = 640
#: Share of the available memory the whole-image path may plan to use; above it
#: the job is banded (the system, other programs and the estimate's error need
#: the rest).
COMFORT = 0.5
#: A network tile's feature maps: 64 channels x (256 + 2 x 20)^2 x float32, x3 buffers.
TILE_BYTES = 64 * 296 * 296 * 4 * 3


def available_bytes() -> int | None:
    """Memory the system can give this process now (None where it cannot tell)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            used = _cgroup_usage(limit)
            found.append(max(0, int(text) - used))
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def _cgroup_usage(limit_file: str) -> int:
    usage = limit_file.replace("memory.max", "memory.current").replace(
        "limit_in_bytes", "usage_in_bytes"
    )
    try:
        return int(Path(usage).read_text().strip())
    except (OSError, ValueError):
        return 0


def upscale_bytes(out_width: int, out_height: int, channels: int) -> int:
    """The estimated peak memory of one whole-image upscale to ``out_width x out_height``."""
    values = out_width * out_height * channels
    edges = (out_width + out_height) * BYTES_PER_EDGE_PIXEL
    return values * BYTES_PER_VALUE + edges + TILE_BYTES


@dataclass(frozen=True)
class Job:
    """What the memory of one upscale depends on.

    Attributes:
        out_width, out_height: the output size.
        channels: output channels (colour, plus alpha).
        scale: the factor, for messages.
        in_values: input values (pixels x channels), held as float32 throughout.
        out_bytes: bytes per value of the banded path's output (1 or 2 for an
            integer raster, 4 for a float picture).
        band_rows: rows of one band's working set, context included (0: the job
            cannot be banded: ``--tta`` or ``--tile 0``).
        encode_copies: copies of the output held while it is encoded
            (:func:`sruc.files.images.encoded_copies`: 0 for a streamed PNG).
        whole_faster: the whole path is faster here: it stacks several tiles per
            forward pass (a GPU), which the banded path does not, or a per-scale
            model is resized to a size (bands then recompute the tiles at their edges).
    """

    out_width: int
    out_height: int
    channels: int
    scale: float
    in_values: int
    out_bytes: int
    band_rows: int
    encode_copies: int = 2
    whole_faster: bool = False


def banded_bytes(job: Job) -> int:
    """The estimated peak memory of the banded path: the input, the output (and its
    encoded copies), one band's working set, the resize tables and a network tile."""
    values = job.out_width * job.out_height * job.channels
    band = job.band_rows * job.out_width * job.channels * BYTES_PER_VALUE
    edges = (job.out_width + job.out_height) * BYTES_PER_EDGE_PIXEL
    output = values * job.out_bytes * (1 + job.encode_copies)
    return job.in_values * 4 + output + band + edges + TILE_BYTES


def choose_banded(job: Job, available: int | None = None) -> bool:
    """The one policy: band the job (True) or not, or refuse it in one line.

    One tile per pass (CPUs): banded whenever the job can be, as it is as fast
    as the whole image within the noise (VDSR x2, one thread, on a 2-core AMD
    EPYC: 300x300 7.32 against 7.53 s, 1000x1000 34.6 against 33.6 s;
    ``benchmarks/big_output.py speed``) in a fraction of the memory. Tiles
    stacked per pass (GPUs) or a per-scale model at a size (``whole_faster``):
    the whole image while it fits in :data:`COMFORT` of the memory available,
    else banded.

    Raises:
        DeviceError: neither path fits in the memory available.
    """
    avail = available_bytes() if available is None else available
    whole = upscale_bytes(job.out_width, job.out_height, job.channels) + job.in_values * 4
    banded = banded_bytes(job) if job.band_rows else None
    if avail is None:
        return banded is not None and not job.whole_faster
    comfortable = whole <= avail * COMFORT
    if banded is not None and banded <= avail and not (job.whole_faster and comfortable):
        return True
    if whole <= avail:
        return False
    need = whole if banded is None else min(whole, banded)
    pixels = job.out_width * job.out_height
    raise DeviceError(
        f"the x{job.scale:g} output would be {job.out_width}x{job.out_height} "
        f"({_pixels(pixels)}, ~{_size(need)} of memory) but "
        f"{_size(avail)} is available; use a smaller scale or a smaller image"
    )


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (Python's, torch's CPU or CUDA one)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


@contextmanager
def out_of_memory_as(message: Callable[[], str]) -> Iterator[None]:
    """Turn an allocation failure in the block (:func:`out_of_memory`) into a
    :class:`DeviceError` saying ``message()`` (called only then); other errors pass."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        raise DeviceError(message()) from None


def _pixels(n: int) -> str:
    return f"{n / 1e9:.1f} GP" if n >= 1e9 else f"{n / 1e6:.1f} MP"


def _size(n: float) -> str:
    units = ("bytes", "KB", "MB", "GB", "TB")
    k = min(len(units) - 1, int(math.log(max(n, 1), 1000)))
    return f"{n / 1000**k:.0f} {units[k]}" if k else f"{n:.0f} bytes"


__all__ = [
    "Job",
    "available_bytes",
    "banded_bytes",
    "choose_banded",
    "out_of_memory",
    "out_of_memory_as",
    "upscale_bytes",
]
