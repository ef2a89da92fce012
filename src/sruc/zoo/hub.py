"""Pinned weights files on disk: the cache folder, verified downloads, offline mode.

Every file sruc fetches is pinned by its SHA-256. A file is looked for in the
user cache first, then among the weights bundled inside the package, and only
then downloaded; every copy is hashed before use, wherever it comes from.

A download streams into ``NAME.part`` in the cache folder (a name no lookup
ever takes for a finished file), hashes the bytes as they arrive, fsyncs, and
only then renames the file into place, so a reader sees either nothing or the
whole verified file. An interrupted download leaves its ``.part`` behind; the
next attempt resumes it with an HTTP ``Range`` request and still hashes every
byte, old and new, before trusting it. Concurrent downloads of one file are
serialised by a lock file (``.NAME.lock``, removed again when the download
ends): the second process finds the first one's finished file and stops.

Nothing here ever writes inside the installed package. The module imports
``requests`` only when it downloads, so ``import sruc`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

from sruc.errors import ChecksumError, DownloadError, SrucWarning, UsageError

# --- constants -----------------------------------------------------------------------------

#: Where release weights are published; registry URLs are relative to it.
DEFAULT_BASE_URL = "https://github.com/sruc-project/sruc/releases/download/weights-v1/"

#: Environment variables (an explicit argument always wins over them).
ENV_CACHE_DIR = "SRUC_CACHE_DIR"
ENV_OFFLINE = "SRUC_OFFLINE"
ENV_BASE_URL = "SRUC_WEIGHTS_URL"

#: Seconds to wait for a TCP (and TLS) connection to the server.
CONNECT_TIMEOUT_S = 10.0
#: Seconds the server may stay silent (before the headers or between two reads).
READ_TIMEOUT_S = 30.0
#: Bytes per read while hashing a file.
CHUNK_BYTES = 1024 * 1024
#: Bytes per network read while downloading. A read that breaks off loses what
#: it had buffered, so this bounds what a resumed download fetches twice.
READ_BYTES = 64 * 1024
#: Tries per download: connection errors, timeouts and HTTP 5xx are retried.
ATTEMPTS = 5
#: Seconds before the first retry; the wait doubles after each failure...
BACKOFF_S = 1.0
#: ...up to this many seconds.
BACKOFF_MAX_S = 30.0
#: Hex digits of the SHA-256 put into the cache name of a file fetched by URL.
URL_HASH_CHARS = 12

#: Suffix of an unfinished download (never a name a finished file can have).
PART_SUFFIX = ".part"
#: Suffix of the lock file that serialises downloads of one file.
LOCK_SUFFIX = ".lock"

#: Weights shipped inside the package (read only: sruc never writes there).
BUNDLED_DIR = Path(__file__).resolve().with_name("weights")

_TRUE = frozenset({"1", "true", "yes", "on"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_URL = re.compile(r"https?://", re.IGNORECASE)

#: Download progress: called with (bytes done, bytes in total or None if unknown).
ProgressFn = Callable[[int, int | None], None]

#: Where :func:`resolve` found a file.
Origin = Literal["cache", "bundled", "download"]


# --- settings: pure functions of their arguments and the environment -----------------------


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


def is_offline(offline: bool | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether the network is off limits: ``offline`` if given, else ``$SRUC_OFFLINE``."""
    if offline is not None:
        return offline
    env = os.environ if env is None else env
    return env.get(ENV_OFFLINE, "").strip().lower() in _TRUE


def base_url(env: Mapping[str, str] | None = None) -> str:
    """Where registry files are downloaded from: ``$SRUC_WEIGHTS_URL`` or the releases.

    Raises:
        UsageError: the override is not an http(s) URL.
    """
    env = os.environ if env is None else env
    base = env.get(ENV_BASE_URL, "").strip() or DEFAULT_BASE_URL
    if not is_url(base):
        raise UsageError(f"{ENV_BASE_URL}={base!r} is not an http:// or https:// URL")
    # Without the trailing slash urljoin would drop the last folder of the base.
    return base if base.endswith("/") else base + "/"


def weights_url(relative: str, env: Mapping[str, str] | None = None) -> str:
    """A registry URL (relative to the base) made absolute."""
    return urljoin(base_url(env), relative)


def is_url(text: str) -> bool:
    """Whether ``text`` is an http or https URL."""
    return bool(_URL.match(text))


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


def is_inside_package(path: Path) -> bool:
    """Whether ``path`` is in (or is) the installed package folder."""
    package = Path(__file__).resolve().parents[1]  # src/sruc, not this room
    resolved = path.resolve()
    return resolved == package or package in resolved.parents


# --- hashing -------------------------------------------------------------------------------


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


# --- finding a file: cache, bundled, download ----------------------------------------------


@dataclass(frozen=True)
class Pinned:
    """One file pinned by its hash, and where it may be found.

    Attributes:
        label: how messages name it (a registry name or the URL).
        file: its file name in the cache (and among the bundled weights).
        url: the absolute URL to download it from.
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


@dataclass(frozen=True)
class Located:
    """Where :func:`resolve` found a file: its path and how it got there."""

    path: Path
    origin: Origin


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
    skipped with a warning.

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
    folder = cache_dir(cache)
    dest = folder / pinned.file
    if dest.is_file():
        got = file_sha256(dest)
        if got == pinned.sha256:
            return Located(dest, "cache")
        if _discard_if_damaged(dest, pinned.sha256):
            warnings.warn(
                f"cached {dest} is damaged (expected sha256 {pinned.sha256}, got {got}); "
                "removed it, getting a good copy again",
                SrucWarning,
                stacklevel=2,
            )
        elif dest.is_file():  # another process replaced it with a good copy meanwhile
            return Located(dest, "cache")
    if pinned.bundled:
        packaged = BUNDLED_DIR / pinned.file
        if packaged.is_file():
            got = file_sha256(packaged)
            if got == pinned.sha256:
                return Located(packaged, "bundled")
            warnings.warn(
                f"the bundled {packaged} is damaged (expected sha256 {pinned.sha256}, "
                f"got {got}); reinstall sruc",
                SrucWarning,
                stacklevel=2,
            )
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


def _discard_if_damaged(dest: Path, sha256: str) -> bool:
    """Remove a damaged cached file, under the download lock; True if removed.

    The lock makes sure the file is not being replaced by a good download
    while it is hashed again and removed.
    """
    _check_writable_cache(dest.parent)
    with _locked(lock_path(dest)):
        if dest.is_file() and file_sha256(dest) != sha256:
            dest.unlink()
            return True
    return False


# --- downloading ---------------------------------------------------------------------------


class _Retry(Exception):
    """A failure worth another try (connection, timeout, 5xx, short body)."""


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    size: int | None = None,
    progress: ProgressFn | None = None,
    timeout: tuple[float, float] | None = None,
    attempts: int | None = None,
    backoff: float | None = None,
) -> Path:
    """Download ``url`` to ``dest``, verified against ``sha256``, atomically.

    Streams into ``dest.part`` while hashing, retries connection errors,
    timeouts and HTTP 5xx with exponential backoff (never 4xx), resumes a
    partial file with an HTTP Range request when the server allows it
    (``206``; on ``200`` it starts again from zero), and renames the verified
    file into place after an fsync. A ``.part`` whose bytes turn out wrong is
    discarded and the download starts once more from zero. Proxies come from
    the usual environment variables (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``), as requests reads them.

    Args:
        url: http(s) URL of the file.
        dest: the final path; its folder is created if needed.
        sha256: the expected SHA-256, lower-case hex.
        size: the expected size in bytes, if known (lets a complete ``.part``
            be checked without a request).
        progress: called with (bytes done, total bytes or None).
        timeout: (connect, read) in seconds; default the module constants.
        attempts: tries in all; default :data:`ATTEMPTS`.
        backoff: seconds before the first retry; default :data:`BACKOFF_S`.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: an HTTP 4xx, a TLS failure, or every attempt failed.
        ChecksumError: the complete download has another hash (it is deleted).
    """
    dest = Path(dest)
    _check_writable_cache(dest.parent)
    with _locked(lock_path(dest)):
        # Another process may have finished this very file while we waited.
        if dest.is_file() and file_sha256(dest) == sha256:
            return dest
        _download_locked(
            url,
            dest,
            sha256,
            size=size,
            progress=progress,
            timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            attempts=attempts if attempts is not None else ATTEMPTS,
            backoff=backoff if backoff is not None else BACKOFF_S,
        )
    return dest


def _check_writable_cache(folder: Path) -> None:
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


def _download_locked(
    url: str,
    dest: Path,
    sha256: str,
    *,
    size: int | None,
    progress: ProgressFn | None,
    timeout: tuple[float, float],
    attempts: int,
    backoff: float,
) -> None:
    import requests

    part = part_path(dest)
    by_hand = f"or save the file by hand as {dest}"
    session = requests.Session()  # trust_env stays on: proxies and CA bundle from the env
    # Byte offsets must be file offsets for Range requests: no transparent gzip.
    session.headers["Accept-Encoding"] = "identity"
    session.headers["User-Agent"] = f"sruc/{_version()} python-requests/{requests.__version__}"
    failures = 0
    restarted = False  # a resumed .part that hashed wrong gets one fresh start
    last = ""
    with session:
        while failures < attempts:
            if failures:
                time.sleep(min(backoff * 2 ** (failures - 1), BACKOFF_MAX_S))
            try:
                got, resumed = _fetch_once(session, url, part, size, progress, timeout)
            except _Retry as e:
                failures += 1
                last = str(e)
                continue
            except requests.exceptions.SSLError as e:
                # Retrying a certificate problem only wastes the user's time.
                _drop_if_empty(part)
                raise DownloadError(
                    f"could not download {url}: TLS verification failed ({_short(e)}); "
                    f"a proxy that intercepts HTTPS needs REQUESTS_CA_BUNDLE, {by_hand}"
                ) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,  # the body broke off
            ) as e:
                failures += 1
                last = _describe(e, timeout)
                continue
            except requests.exceptions.RequestException as e:  # bad URL, too many redirects
                _drop_if_empty(part)
                raise DownloadError(f"could not download {url}: {_short(e)}") from None
            except OSError as e:  # after RequestException, which is an OSError too
                raise DownloadError(
                    f"cannot write {part}: {e.strerror or e}; free some space or choose "
                    f"another cache folder with --cache-dir or {ENV_CACHE_DIR}"
                ) from None
            if got == sha256:
                try:
                    os.replace(part, dest)
                except OSError as e:  # e.g. the old file held open on Windows
                    raise DownloadError(
                        f"cannot move the verified download into place as {dest}: {e.strerror or e}"
                    ) from None
                _fsync_dir(dest.parent)
                return
            part.unlink(missing_ok=True)
            if resumed and not restarted:
                # The old partial may come from an earlier upstream file or a
                # broken transfer: it is never trusted, start once from zero.
                restarted = True
                continue
            raise ChecksumError(
                f"download of {url} is corrupt: expected sha256 {sha256}, got {got} (deleted); "
                "likely a damaged transfer (try again), a proxy or captive portal answering "
                f"instead of the server, or the file changed upstream ({ENV_BASE_URL} mirrors "
                "must hold the same files)"
            )
    _drop_if_empty(part)
    keep = " (the partial download is kept and resumed next time)" if part.is_file() else ""
    raise DownloadError(
        f"could not download {url} after {attempts} attempt{'s' * (attempts != 1)}: {last}"
        f"{keep}; check the network and proxy settings (HTTPS_PROXY), {by_hand}"
    )


def _fetch_once(
    session: Any,
    url: str,
    part: Path,
    size: int | None,
    progress: ProgressFn | None,
    timeout: tuple[float, float],
) -> tuple[str, bool]:
    """One request: resume or start ``part``; returns (its SHA-256, whether it resumed).

    Raises:
        _Retry: HTTP 5xx, or the body ended early.
        DownloadError: HTTP 4xx (other than 416, which means "nothing left").
    """
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset >= size:
        # Complete already (killed before the rename) or too long to be ours:
        # the hash decides, without asking the server.
        return file_sha256(part), True
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        status = r.status_code
        if status == 416 and offset:
            return file_sha256(part), True  # the server has nothing past our end
        if status >= 500:
            raise _Retry(f"HTTP {status} {r.reason or ''}".strip())
        if status not in (200, 206):
            raise DownloadError(
                f"could not download {url}: HTTP {status} {r.reason or ''}".strip()
                + _http_hint(status)
            )
        if status == 206 and _range_start(r.headers.get("Content-Range", "")) != offset:
            # A range we did not ask for: the partial cannot be continued.
            part.unlink(missing_ok=True)
            raise _Retry("the server answered a different byte range")
        resumed = status == 206
        start = offset if resumed else 0
        length = r.headers.get("Content-Length")
        expected_body = int(length) if length and length.isdigit() else None
        total = start + expected_body if expected_body is not None else size
        h = hashlib.sha256()
        done = start
        with open(part, "ab" if resumed else "wb") as f:
            if resumed:
                with open(part, "rb") as old:  # the old bytes count in the hash too
                    while chunk := old.read(CHUNK_BYTES):
                        h.update(chunk)
            if progress is not None:
                progress(done, total)
            for chunk in r.iter_content(READ_BYTES):
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if size is not None and done > size:
                    # Not our file (a portal page that never ends, a wrong URL):
                    # stop before it fills the disk.
                    break
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
        if size is not None and done > size:
            part.unlink()
            raise ChecksumError(
                f"download of {url} is larger than its pinned size of {size} bytes (deleted); "
                "likely a proxy or captive portal answering instead of the server, or the file "
                "changed upstream"
            )
        if expected_body is not None and done - start < expected_body:
            raise _Retry(f"the connection closed after {done} of {total} bytes")
        return h.hexdigest(), resumed


def _range_start(content_range: str) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", content_range)
    return int(m.group(1)) if m else None


def _http_hint(status: int) -> str:
    if status == 404:
        return f"; the file is not on that server (check the URL, or {ENV_BASE_URL})"
    if status in (401, 403, 407):
        return "; access refused (a proxy needing credentials? see HTTPS_PROXY)"
    return ""


def _describe(e: Exception, timeout: tuple[float, float]) -> str:
    """A short, human account of a requests connection failure or timeout."""
    import requests

    text = str(e)
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return f"could not connect within {timeout[0]:g} s"
    if isinstance(e, requests.exceptions.ReadTimeout) or "Read timed out" in text:
        return f"the server sent nothing for {timeout[1]:g} s"
    if isinstance(e, requests.exceptions.ProxyError):
        return f"the proxy failed ({_short(e)})"
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return "the connection broke during the transfer"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name could not be resolved"
    if "Connection refused" in text:
        return "the connection was refused"
    return f"connection failed ({_short(e)})"


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _drop_if_empty(part: Path) -> None:
    """An empty ``.part`` holds nothing worth resuming."""
    with contextlib.suppress(OSError):
        if part.stat().st_size == 0:
            part.unlink()


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


def _version() -> str:
    from sruc import __version__

    return __version__


# --- locking -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while inside.

    POSIX: ``flock`` on the lock file, which is removed on release. Removing a
    lock file is only safe when every taker checks, once it holds the lock,
    that the path still names the file it locked; otherwise it starts over.
    """
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        with _locked_windows(path):
            yield
        return
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks: the holder's download has timeouts
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
