"""The weights cache on disk: which folder, how its files are named, locked and hashed.

The cache folder holds, and only ever held, these names (old caches keep
loading, so they never change):

- ``NAME``: a finished, verified file (a registry file's own name, or
  ``STEM-HASH12.SUFFIX`` for a file fetched by URL, see :func:`url_file_name`);
- ``NAME.part``: an unfinished download of ``NAME``, resumed by the next one;
- ``.NAME.lock``: the lock that serialises downloads of ``NAME`` (removed
  again when the download ends).

Nothing here ever writes inside the installed package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sruc.errors import ChecksumError, DownloadError, SrucWarning, UsageError

#: The environment variable naming the cache folder (``--cache-dir`` wins over it).
ENV_CACHE_DIR = "SRUC_CACHE_DIR"

#: Bytes per read while hashing a file.
CHUNK_BYTES = 1024 * 1024
#: Hex digits of the SHA-256 put into the cache name of a file fetched by URL.
URL_HASH_CHARS = 12

#: Suffix of an unfinished download (never a name a finished file can have).
PART_SUFFIX = ".part"
#: Suffix of the lock file that serialises downloads of one file.
LOCK_SUFFIX = ".lock"


# --- the folder ----------------------------------------------------------------------------


def cache_dir(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The weights cache folder: ``path`` > ``$SRUC_CACHE_DIR`` > the user cache.

    The folder is not created here (only a download creates it).

    Args:
        path: an explicit folder (``--cache-dir``); wins when given.
        env: the environment to read; ``os.environ`` when None.

    Returns:
        The folder, ``~`` expanded.
    """
    env = os.environ if env is None else env
    if path is not None and os.fspath(path) != "":
        return Path(path).expanduser()
    if env.get(ENV_CACHE_DIR):
        return Path(env[ENV_CACHE_DIR]).expanduser()
    import platformdirs

    # appauthor=False: no "sruc\\sruc" nesting on Windows.
    return Path(platformdirs.user_cache_dir("sruc", appauthor=False))


def is_inside_package(path: Path) -> bool:
    """Whether ``path`` is in (or is) the installed package folder."""
    package = Path(__file__).resolve().parents[1]  # src/sruc, not this room
    resolved = path.resolve()
    return resolved == package or package in resolved.parents


def check_writable(folder: Path) -> None:
    """Create the cache folder if needed; refuse one inside the package.

    Raises:
        UsageError: ``folder`` is inside the installed package.
        DownloadError: the folder cannot be created.
    """
    if is_inside_package(folder):
        raise UsageError(
            f"cache folder {folder} is inside the sruc package, which sruc never writes to; "
            f"choose another with --cache-dir or {ENV_CACHE_DIR}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create the weights cache folder {folder}: {e.strerror or e}; "
            f"choose another with --cache-dir or {ENV_CACHE_DIR}"
        ) from None


# --- names in the folder -------------------------------------------------------------------


def is_plain_name(name: str) -> bool:
    """Whether ``name`` can be a finished file in the cache: no folder, not hidden (locks are)."""
    return "/" not in name and not name.startswith(".")


def url_file_name(url: str, sha256: str) -> str:
    """The cache file name of a file downloaded by URL: ``STEM-HASH12.SUFFIX``.

    The name keeps the URL's last path segment (readable) and adds the start of
    the pinned SHA-256, so two URLs ending in ``best.pt`` never share a file and
    a pinned hash that changes gets a fresh file instead of overwriting one.
    """
    last = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._") or "weights.pt"
    stem, dot, suffix = safe.rpartition(".")
    if not dot or not stem:
        stem, suffix = safe, "pt"
    return f"{stem[:80]}-{sha256[:URL_HASH_CHARS]}.{suffix[:16]}"


def url_file_hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix in a name made by :func:`url_file_name`, or None."""
    m = re.fullmatch(rf".+-([0-9a-f]{{{URL_HASH_CHARS}}})\.[A-Za-z0-9_-]+", name)
    return m.group(1) if m else None


def part_path(dest: Path) -> Path:
    """Where the unfinished download of ``dest`` lives."""
    return dest.with_name(dest.name + PART_SUFFIX)


def lock_path(dest: Path) -> Path:
    """The lock file that serialises downloads of ``dest``."""
    return dest.with_name(f".{dest.name}{LOCK_SUFFIX}")


# --- unfinished downloads ------------------------------------------------------------------


def drop_if_empty(part: Path) -> None:
    """An empty ``.part`` holds nothing worth resuming."""
    with contextlib.suppress(OSError):
        if part.stat().st_size == 0:
            part.unlink()


def move_into_place(part: Path, dest: Path) -> None:
    """Rename the verified ``part`` to ``dest`` and make the rename durable.

    Raises:
        DownloadError: the rename failed.
    """
    try:
        os.replace(part, dest)
    except OSError as e:  # e.g. the old file held open on Windows
        raise DownloadError(
            f"cannot move the verified download into place as {dest}: {e.strerror or e}"
        ) from None
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); best effort, some filesystems refuse."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- hashing -------------------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_verified(path: Path) -> bytes | None:
    """A derived file kept in the cache (an exported graph, a compiled kernel library):
    its bytes if they match the SHA-256 in its ``.sha256`` sidecar, else None (missing,
    damaged or tampered: the caller makes it again)."""
    try:
        data = path.read_bytes()
        want = _sidecar(path).read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == want else None


def write_verified(path: Path, data: bytes) -> None:
    """Keep ``data`` at ``path`` with its SHA-256 sidecar, each written atomically.

    Raises:
        OSError, SrucError: the folder cannot be written.
    """
    from sruc.files.atomic import write_bytes

    check_writable(path.parent)
    write_bytes(path, data)
    write_bytes(_sidecar(path), (hashlib.sha256(data).hexdigest() + "\n").encode())


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file in hex, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike[str], sha256: str) -> None:
    """Raise unless the file at ``path`` has this SHA-256.

    Raises:
        ChecksumError: the hashes differ (the message gives both).
    """
    got = file_sha256(path)
    if got != sha256:
        raise ChecksumError(
            f"{path} does not match its pinned SHA-256: expected {sha256}, got {got}"
        )


# --- locking -------------------------------------------------------------------------------


#: Longest wait for another process's lock: its download has its own timeouts, so a
#: lock held longer than this belongs to a process that hangs (or a stale NFS lock).
LOCK_WAIT_S = 300.0
#: How often a busy lock is tried again.
LOCK_POLL_S = 0.2


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise DownloadError(
            f"{path} is a folder where sruc keeps a lock file; remove it and try again"
        ) from None
    except OSError as e:
        raise DownloadError(f"cannot create the lock file {path}: {e.strerror or e}") from None


class LockBusy(Exception):
    """Another process holds the lock and the caller chose not to wait (``wait=False``)."""


def _wait_for(fd: int, path: Path, wait: bool = True) -> None:
    """Take the flock on ``fd``; if another process holds it, say so once, then wait up
    to :data:`LOCK_WAIT_S` seconds (POSIX); with ``wait`` False, raise LockBusy at once."""
    import fcntl

    started = time.monotonic()
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait:
                raise LockBusy(str(path)) from None
        waited = time.monotonic() - started
        if waited >= LOCK_WAIT_S:
            raise DownloadError(
                f"another process has held {path} for {waited:.0f} s; if no sruc is "
                "running, remove that file and try again"
            )
        if not said:
            target = path.name.removeprefix(".").removesuffix(LOCK_SUFFIX)
            warnings.warn(
                f"waiting for another download of {target} to finish (lock {path})",
                SrucWarning,
                stacklevel=4,
            )
            said = True
        time.sleep(LOCK_POLL_S)


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while inside.

    POSIX: ``flock`` on the lock file, which is removed on release. Removing a
    lock file is only safe when every taker checks, once it holds the lock,
    that the path still names the file it locked; otherwise it starts over.

    Raises:
        LockBusy: ``wait`` is False and another process holds the lock.
        DownloadError: the lock cannot be made, or was held too long.
    """
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        with _locked_windows(path):
            yield
        return
    while True:
        fd = _open_lock(path)
        try:
            _wait_for(fd, path, wait)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the previous holder removed it: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def _locked_windows(path: Path) -> Iterator[None]:  # pragma: no cover - Windows only
    """Windows: ``msvcrt.locking`` on byte 0; the file stays (an open file cannot go)."""
    import msvcrt

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                break
            except OSError:
                time.sleep(0.1)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    finally:
        os.close(fd)
