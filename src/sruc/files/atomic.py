"""Atomic file writes: a temporary file beside the target, then a rename.

A crash, a full disk or Ctrl-C while writing leaves the previous file (or no
file) in place, never a half-written one. Temporary files are hidden and end
in ``.part``, so no tool mistakes them for finished outputs.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sruc.errors import OutputError


def _default_mode() -> int:
    """The mode a newly created file would get: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: Bytes of the target's name kept in the temporary name: with the dot, mkstemp's
#: 8 random characters and ".part", it stays under the 255-byte limit of most file
#: systems even when the target's own name is at that limit.
_NAME_BYTES = 200


def _short(name: str) -> str:
    raw = os.fsencode(name)
    return name if len(raw) <= _NAME_BYTES else os.fsdecode(raw[:_NAME_BYTES]).rstrip("\udcff")


#: A temporary file of the same target older than this was left by a run that was
#: killed (SIGKILL, a power cut): sruc's writes take seconds, as the data is encoded
#: in memory first.
STALE_SECONDS = 600


def _remove_stale(parent: Path, stem: str) -> None:
    """Remove sruc's own leftover temporary files of this target (``.NAME.XXXXXXXX.part``)."""
    now = time.time()
    try:
        leftovers = list(parent.glob(f".{glob.escape(stem)}.????????.part"))
    except OSError:
        return
    for leftover in leftovers:
        try:
            if now - leftover.lstat().st_mtime > STALE_SECONDS and leftover.is_file():
                leftover.unlink()
        except OSError:
            continue  # another process's, or gone already


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The temporary file is created empty; write to it by name. On any exception
    it is removed and the exception propagates. The final file gets the mode
    of the file it replaces, or the usual mode for a new file (mkstemp's 0600
    would hide outputs from other users).

    Raises:
        OSError: creating, writing or renaming failed (the caller words it).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    _remove_stale(parent, _short(path.name))
    fd, name = tempfile.mkstemp(prefix=f".{_short(path.name)}.", suffix=".part", dir=parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = _default_mode()
        os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CheckedFile:
    """A write-only file whose every write is checked: unbuffered, short writes
    retried, so a full disk surfaces as ``OSError``; it counts what it wrote."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        while view:
            written = os.write(self.fd, view)
            if written <= 0:  # pragma: no cover - os.write raises instead
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
        self.written += n
        return n

    def flush(self) -> None:
        """Nothing is buffered; here for encoders that call it."""


@contextmanager
def atomic_stream(path: str | os.PathLike[str]) -> Iterator[CheckedFile]:
    """Yield a :class:`CheckedFile` on a temporary file beside ``path``; on success
    fsync it, compare the size on disk with the bytes written, and rename it to
    ``path``. For encoders that write a large file piece by piece, so it never
    has to be held in memory whole; the guarantees are those of :func:`write_bytes`.

    Raises:
        OSError: a write failed or came up short (ENOSPC, EFBIG, EIO...); the
            temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path, fsync=False) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            f = CheckedFile(fd)
            yield f
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != f.written:
            raise OSError(errno.EIO, f"only {size} of {f.written} bytes reached the disk")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and check that every byte reached the disk.

    The bytes go out with unbuffered writes (a short write is retried, so a full
    disk or a file-size limit surfaces as ``OSError``, never as a silently short
    file), are fsynced, and the size on disk is compared before the rename.

    Raises:
        OSError: the write failed or came up short (ENOSPC, EFBIG, EIO...);
            the temporary file is removed and ``path`` is untouched.
    """
    with atomic_stream(path) as f:
        f.write(data)
    return Path(path)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def check_still_free(path: Path, overwrite: bool) -> None:
    """Refuse to replace ``path`` unless ``overwrite``: checked again at the last
    moment, since another process may have written it while this one worked.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false.
    """
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")


@contextmanager
def output_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn the ``OSError`` of writing ``path`` into one :class:`OutputError` line."""
    try:
        yield
    except PermissionError:
        raise OutputError(f"cannot write {path}: permission denied") from None
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def write_output(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write a finished output's bytes atomically and checked (:func:`write_bytes`),
    refusing to replace an existing file without ``overwrite``.

    Raises:
        OutputError: ``path`` exists (without ``overwrite``), or the write failed.
    """
    with output_errors(path):
        check_still_free(path, overwrite)
        write_bytes(path, data)
    return path
