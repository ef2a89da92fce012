"""Finding images: the one list of image extensions and the one folder walk.

``sruc batch``, ``sruc bench`` and ``sruc train`` all find their files here.
A file *claims* to be an image by its extension (:data:`IMAGE_EXTENSIONS`): a
claimed file that cannot be decoded is an error worth reporting. A file whose
extension says it is something else (:data:`NON_IMAGE_EXTENSIONS`: videos,
sidecars, documents, camera raw) is passed over without being opened. Hidden
files and folders (``.DS_Store``, AppleDouble ``._IMG.jpg`` forks, sruc's own
``.part`` files) are never read. Any other file may be tried by content.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: Extensions that claim an image.
IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".dib",
    ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".qoi",
    ".heic", ".heif", ".avif",
})  # fmt: skip
#: Extensions of files that sit beside photos but are not images (their only
#: decodable part, for camera raw files, would be a thumbnail).
NON_IMAGE_EXTENSIONS = frozenset({
    # video and audio
    ".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".3gp", ".mts", ".m2ts", ".wmv", ".flv",
    ".mpg", ".mpeg", ".mp3", ".wav", ".aac", ".m4a", ".flac", ".ogg",
    # text, documents, sidecars, archives
    ".txt", ".md", ".json", ".xml", ".csv", ".pdf", ".doc", ".docx", ".html", ".htm", ".log",
    ".ini", ".yaml", ".yml", ".xmp", ".aae", ".thm", ".lrv", ".dop", ".pp3", ".db", ".zip",
    ".tar", ".gz", ".7z", ".rar", ".pt", ".pth", ".py",
    # camera raw
    ".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw",
})  # fmt: skip


def is_hidden(name: str) -> bool:
    """A dot file or folder: never read."""
    return name.startswith(".")


def claims_image(path: Path) -> bool:
    """The file's extension says it is an image."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_candidate(path: Path) -> bool:
    """Worth opening: not hidden, and not named as something other than an image."""
    return not is_hidden(path.name) and path.suffix.lower() not in NON_IMAGE_EXTENSIONS


def walk(
    folder: Path,
    *,
    recursive: bool = True,
    exclude: Sequence[Path] = (),
    onerror: Callable[[OSError], None] | None = None,
) -> Iterator[Path]:
    """Every non-hidden file under ``folder``, each folder's files sorted by name before
    its sorted sub-folders; hidden folders and ``exclude`` (resolved) are not entered."""
    skip = {p.resolve() for p in exclude}
    for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror):
        here = Path(dirpath)
        dirnames[:] = (
            sorted(d for d in dirnames if not is_hidden(d) and (here / d).resolve() not in skip)
            if recursive
            else []
        )
        yield from (here / f for f in sorted(filenames) if not is_hidden(f))


__all__ = [
    "IMAGE_EXTENSIONS",
    "NON_IMAGE_EXTENSIONS",
    "claims_image",
    "is_candidate",
    "is_hidden",
    "walk",
]
