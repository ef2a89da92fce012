"""Where pinned weights files live: the cache, the bundled copies, a verified download.

Every file sruc fetches is pinned by its SHA-256. A file is looked for in the
user cache first, then among the weights bundled inside the package, and only
then downloaded; every copy is hashed before use, wherever it comes from.

This module is the one the rest of sruc asks, with a :class:`Pinned` file:
:func:`resolve` (a verified copy), :func:`locate` (the path it is used from),
:func:`status` (where it is, by size) and :func:`verify` (re-hash everything
on disk). The cache folder's layout, locks and hashing are in
:mod:`sruc.zoo.cache`; HTTP with resume and retries is in
:mod:`sruc.zoo.download`. Nothing here ever writes inside the installed package.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sruc.errors import ChecksumError, DownloadError, SrucWarning, UsageError
from sruc.zoo.cache import (
    ENV_CACHE_DIR,
    LOCK_SUFFIX,
    PART_SUFFIX,
    URL_HASH_CHARS,
    LockBusy,
    cache_dir,
    check_writable,
    file_sha256,
    is_inside_package,
    is_plain_name,
    lock_path,
    locked,
    part_path,
    url_file_hash_prefix,
    url_file_name,
    verify_file,
)
from sruc.zoo.download import (
    DEFAULT_BASE_URL,
    ENV_BASE_URL,
    ProgressFn,
    base_url,
    download,
    is_url,
    weights_url,
)

#: The environment variable that keeps sruc off the network (``--offline`` wins over it).
ENV_OFFLINE = "SRUC_OFFLINE"

#: Weights shipped inside the package (read only: sruc never writes there).
BUNDLED_DIR = Path(__file__).resolve().with_name("weights")

_TRUE = frozenset({"1", "true", "yes", "on"})
_HEX64 = re.compile(r"[0-9a-f]{64}")

#: Where :func:`resolve` found a file.
Origin = Literal["cache", "bundled", "download"]
#: Where a file is now, as ``sruc models`` shows it (see :func:`status`).
Where = Literal["cached", "bundled", "remote", "missing"]


def is_offline(offline: bool | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether the network is off limits: ``offline`` if given, else ``$SRUC_OFFLINE``."""
    if offline is not None:
        return offline
    env = os.environ if env is None else env
    return env.get(ENV_OFFLINE, "").strip().lower() in _TRUE


def check_sha256(text: str) -> str:
    """Validate a SHA-256 given by a user; returns it in lower case.

    Raises:
        UsageError: not 64 hexadecimal digits.
    """
    value = text.strip().lower()
    if not _HEX64.fullmatch(value):
        raise UsageError(
            f"--sha256 must be 64 hexadecimal digits (as printed by sha256sum), got {text!r}"
        )
    return value


# --- pinned files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinned:
    """One file pinned by its hash, and where it may be found.

    Attributes:
        label: how messages name it (a registry name or the URL).
        file: its file name in the cache (and among the bundled weights).
        url: the absolute URL to download it from (:func:`locate`,
            :func:`status` and :func:`verify` never read it).
        sha256: its SHA-256 in lower-case hex.
        size: its size in bytes, when known in advance.
        bundled: whether a copy may ship inside the package (registry files).
        hint: what else the user can do when it cannot be had, for messages.
    """

    label: str
    file: str
    url: str
    sha256: str
    size: int | None = None
    bundled: bool = False
    hint: str = ""


def pin_url(url: str, sha256: str) -> Pinned:
    """A file given by its URL and pinned SHA-256, under its cache name (:func:`url_file_name`)."""
    return Pinned(label=url, file=url_file_name(url, sha256), url=url, sha256=sha256)


@dataclass(frozen=True)
class Located:
    """Where :func:`resolve` found a file: its path and how it got there."""

    path: Path
    origin: Origin


# --- finding a file: cache, bundled, download ----------------------------------------------


def resolve(
    pinned: Pinned,
    *,
    cache: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: ProgressFn | None = None,
    timeout: tuple[float, float] | None = None,
    attempts: int | None = None,
    backoff: float | None = None,
) -> Located:
    """A verified copy of ``pinned``: from the cache, the package, or downloaded.

    A cached copy whose hash is wrong is removed with a :class:`SrucWarning`
    and fetched again; a damaged bundled copy (a broken installation) is
    skipped with a warning. Where another process holds the cache's lock on
    the file (it is downloading or replacing it) and a good bundled copy
    exists, that copy is used at once, with one warning; without one, the
    wait is announced and bounded (:data:`sruc.zoo.cache.LOCK_WAIT_S`).

    Args:
        pinned: the file to find.
        cache: the cache folder (see :func:`cache_dir`).
        offline: never use the network (default: ``$SRUC_OFFLINE``).
        progress: download progress callback, see :data:`ProgressFn`.
        timeout: (connect, read) timeouts in seconds.
        attempts: tries before giving up on a download.
        backoff: seconds before the first retry.

    Raises:
        DownloadError: offline and no copy is here, or the download failed.
        ChecksumError: the downloaded bytes have the wrong hash.
    """
    dest = cache_dir(cache) / pinned.file
    bundled: list[Located | None] = []  # hashed once, and only if needed

    def spare() -> Located | None:
        if not bundled:
            bundled.append(_good_bundled(pinned) if pinned.bundled else None)
        return bundled[0]

    found = _good_cached(dest, pinned.sha256, spare)
    if found is None:
        found = spare()
    if found is not None:
        return found
    if is_offline(offline):
        also = f" ({pinned.hint})" if pinned.hint else ""
        raise DownloadError(
            f"{pinned.label} is not available offline: download {pinned.url} and save it "
            f"as {dest}{also}"
        )
    path = download(
        pinned.url,
        dest,
        pinned.sha256,
        size=pinned.size,
        progress=progress,
        timeout=timeout,
        attempts=attempts,
        backoff=backoff,
    )
    return Located(path, "download")


def _good_cached(
    dest: Path, sha256: str, spare: Callable[[], Located | None] = lambda: None
) -> Located | None:
    """The cached copy if its hash is right; a damaged one is removed, with a warning.

    If another process holds the lock on ``dest`` (it is replacing the file),
    the ``spare`` (the good bundled copy) is returned at once with a warning,
    rather than waiting for that process; without a spare, the wait is announced."""
    if not dest.is_file():
        return None
    got = file_sha256(dest)
    if got == sha256:
        return Located(dest, "cache")
    try:
        removed = _discard_if_damaged(dest, sha256, wait=False)
    except LockBusy:
        found = spare()
        if found is not None:
            warnings.warn(
                f"cached {dest} is damaged and another process holds its lock "
                f"{lock_path(dest)} (downloading it again?); using the bundled copy",
                SrucWarning,
                stacklevel=3,
            )
            return found
        removed = _discard_if_damaged(dest, sha256)  # wait for it, announced
    if removed:
        warnings.warn(
            f"cached {dest} is damaged (expected sha256 {sha256}, got {got}); "
            "removed it, getting a good copy again",
            SrucWarning,
            stacklevel=3,
        )
    elif dest.is_file():  # another process replaced it with a good copy meanwhile
        return Located(dest, "cache")
    return None


def _good_bundled(pinned: Pinned) -> Located | None:
    """The bundled copy if there is one and its hash is right; a damaged one is reported."""
    packaged = BUNDLED_DIR / pinned.file
    if not packaged.is_file():
        return None
    got = file_sha256(packaged)
    if got == pinned.sha256:
        return Located(packaged, "bundled")
    warnings.warn(
        f"the bundled {packaged} is damaged (expected sha256 {pinned.sha256}, "
        f"got {got}); reinstall sruc",
        SrucWarning,
        stacklevel=3,
    )
    return None


def _discard_if_damaged(dest: Path, sha256: str, *, wait: bool = True) -> bool:
    """Remove a damaged cached file, under the download lock; True if removed.

    The lock makes sure the file is not being replaced by a good download
    while it is hashed again and removed.

    Raises:
        LockBusy: ``wait`` is False and another process holds the lock.
    """
    check_writable(dest.parent)
    with locked(lock_path(dest), wait=wait):
        if dest.is_file() and file_sha256(dest) != sha256:
            dest.unlink()
            return True
    return False


# --- looking without fetching --------------------------------------------------------------


def locate(pinned: Pinned, *, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where ``pinned`` is used from: the cache path, unless only the bundled one exists.

    For a file that is nowhere yet, this is where a download (or the user, by
    hand) puts it.
    """
    cached = cache_dir(cache) / pinned.file
    bundled = BUNDLED_DIR / pinned.file
    if pinned.bundled and bundled.is_file() and not cached.is_file():
        return bundled
    return cached


def status(
    pinned: Pinned,
    *,
    cache: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> Where:
    """Where ``pinned`` is, judged by its size (:func:`verify` hashes)."""
    if _has_size(cache_dir(cache) / pinned.file, pinned.size):
        return "cached"
    if pinned.bundled and _has_size(BUNDLED_DIR / pinned.file, pinned.size):
        return "bundled"
    return "missing" if is_offline(offline) else "remote"


def _has_size(path: Path, size: int | None) -> bool:
    try:
        return path.is_file() and (size is None or path.stat().st_size == size)
    except OSError:
        return False


@dataclass(frozen=True)
class FileCheck:
    """The result of re-hashing one weights file (``sruc models verify``).

    Attributes:
        path: the file.
        origin: ``cache`` or ``bundled``.
        status: ``ok``; ``damaged`` (wrong hash); ``partial`` (an unfinished
            download, resumed and verified by the next pull); ``unknown`` (a
            file the registry does not describe: not checked).
        expected: the pinned SHA-256 (a prefix for files fetched by URL).
        got: the SHA-256 of the file now.
    """

    path: Path
    origin: Literal["cache", "bundled"]
    status: Literal["ok", "damaged", "partial", "unknown"]
    expected: str = ""
    got: str = ""


def verify(
    pins: Iterable[Pinned], *, cache: str | os.PathLike[str] | None = None
) -> list[FileCheck]:
    """Re-hash the bundled copies of ``pins`` and every file in the cache folder.

    Files of ``pins`` are checked against their SHA-256, files fetched by URL
    against the hash prefix in their name; the bundled copies come first, then
    the cache in name order. Nothing is changed or deleted.
    """
    pins = list(pins)
    checks = [
        _check_file(BUNDLED_DIR / p.file, "bundled", p.sha256)
        for p in pins
        if p.bundled and (BUNDLED_DIR / p.file).is_file()
    ]
    folder = cache_dir(cache)
    if not folder.is_dir():
        return checks
    by_file = {p.file: p.sha256 for p in pins}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue  # lock files (and anything hidden) are not weights
        if path.name.endswith(PART_SUFFIX):
            checks.append(FileCheck(path, "cache", "partial"))
        elif path.name in by_file:
            checks.append(_check_file(path, "cache", by_file[path.name]))
        elif prefix := url_file_hash_prefix(path.name):
            checks.append(_check_file(path, "cache", prefix))
        else:
            checks.append(FileCheck(path, "cache", "unknown"))
    return checks


def _check_file(path: Path, origin: Literal["cache", "bundled"], expected: str) -> FileCheck:
    got = file_sha256(path)
    ok = got.startswith(expected)  # a full hash, or the prefix in a URL file's name
    return FileCheck(path, origin, "ok" if ok else "damaged", expected, got)


__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_BASE_URL",
    "ENV_BASE_URL",
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "LOCK_SUFFIX",
    "PART_SUFFIX",
    "URL_HASH_CHARS",
    "ChecksumError",
    "DownloadError",
    "FileCheck",
    "Located",
    "Origin",
    "Pinned",
    "ProgressFn",
    "Where",
    "base_url",
    "cache_dir",
    "check_sha256",
    "download",
    "file_sha256",
    "is_inside_package",
    "is_offline",
    "is_plain_name",
    "is_url",
    "locate",
    "lock_path",
    "part_path",
    "pin_url",
    "resolve",
    "status",
    "url_file_hash_prefix",
    "url_file_name",
    "verify",
    "verify_file",
    "weights_url",
]
