"""HEIC/HEIF (iPhone photos) through the optional ``pillow-heif``, and telling it by content.

Pillow reads AVIF itself but not HEIC, whose images are HEVC-coded; ``pip install
'sruc[heif]'`` adds pillow-heif, which this module registers with Pillow the first
time a HEIF file is met (so ``import sruc`` stays light). Both formats are ISO
base media files: an ``ftyp`` box at the start lists brands (``heic``, ``mif1``,
``avif``...), which is how :func:`kind` tells them apart without decoding, so a
HEIC file without the extra gets a line naming the extra rather than Pillow's
"cannot identify image file".

pillow-heif applies the file's rotation and mirroring (``irot``/``imir``) while
decoding and resets the EXIF orientation to normal; Pillow's AVIF reader leaves
the pixels as stored and the orientation in EXIF, which
:func:`sruc.files.images.read_image` then applies. Either way the picture comes
out upright, with its ICC profile and EXIF.
"""

from __future__ import annotations

import threading

#: What to install to read (and write) HEIC/HEIF.
HEIF_EXTRA = "pip install 'sruc[heif]'"
#: Brands of HEIF files whose images need an HEVC decoder (pillow-heif). ``mif1``
#: and ``msf1`` are the generic image and sequence brands; an AVIF file lists them
#: too, so the AVIF brands are checked first (:func:`kind`).
HEIF_BRANDS = frozenset({
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
    b"mif2",
})  # fmt: skip
#: Brands of AVIF (AV1) files, which Pillow reads itself.
AVIF_BRANDS = frozenset({b"avif", b"avis"})
#: Bytes read from the start of a file to find its ``ftyp`` box.
HEAD_BYTES = 64

_lock = threading.Lock()
_registered: bool | None = None  # None: not tried yet


def brands(head: bytes) -> frozenset[bytes]:
    """The major and compatible brands of the ``ftyp`` box at the start of ``head``
    (empty when there is none)."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return frozenset()
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size) if size >= 16 else len(head)
    found = {head[8:12]}
    found.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return frozenset(found)


def kind(head: bytes) -> str | None:
    """``"AVIF"``, ``"HEIF"`` or None (not an ISO image file) from a file's first bytes."""
    found = brands(head)
    if found & AVIF_BRANDS:
        return "AVIF"
    if found & HEIF_BRANDS:
        return "HEIF"
    return None


#: What to do when this Pillow has no AVIF codec (recent Pillow wheels have it built in;
#: ``PIL.features.check('avif')`` says).
AVIF_HINT = "upgrade Pillow (pip install -U pillow), whose recent wheels have AVIF built in"


def avif_available() -> bool:
    """Whether this Pillow reads and writes AVIF."""
    from PIL import features

    try:
        return bool(features.check("avif"))
    except ValueError:  # a Pillow that does not know the feature's name
        return False


def available() -> bool:
    """Whether pillow-heif is installed; registers its HEIF reader and writer with Pillow
    the first time (once per process)."""
    global _registered
    with _lock:
        if _registered is None:
            try:
                import pillow_heif
            except ImportError:
                _registered = False
            else:
                pillow_heif.register_heif_opener()
                _registered = True
        return _registered


__all__ = [
    "AVIF_BRANDS",
    "AVIF_HINT",
    "HEAD_BYTES",
    "HEIF_BRANDS",
    "HEIF_EXTRA",
    "available",
    "avif_available",
    "brands",
    "kind",
]
