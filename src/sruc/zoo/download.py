"""Verified downloads over HTTP: where from, resumed, retried, hashed, moved into place.

A download streams into ``NAME.part`` in the cache folder (a name no lookup
ever takes for a finished file), hashes the bytes as they arrive, fsyncs, and
only then renames the file into place, so a reader sees either nothing or the
whole verified file. An interrupted download leaves its ``.part`` behind; the
next attempt resumes it with an HTTP ``Range`` request and still hashes every
byte, old and new, before trusting it. Concurrent downloads of one file are
serialised by a lock file (see :mod:`sruc.zoo.cache`): the second process
finds the first one's finished file and stops.

The module imports ``requests`` only when it downloads, so ``import sruc``
stays fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from sruc.errors import ChecksumError, DownloadError, UsageError
from sruc.zoo.cache import (
    CHUNK_BYTES,
    ENV_CACHE_DIR,
    check_writable,
    drop_if_empty,
    file_sha256,
    lock_path,
    locked,
    move_into_place,
    part_path,
)

#: Where release weights are published; registry URLs are relative to it.
DEFAULT_BASE_URL = "https://github.com/sruc-project/sruc/releases/download/weights-v1/"
#: The environment variable naming a mirror of the release folder.
ENV_BASE_URL = "SRUC_WEIGHTS_URL"

#: Seconds to wait for a TCP (and TLS) connection to the server.
CONNECT_TIMEOUT_S = 10.0
#: Seconds the server may stay silent (before the headers or between two reads).
READ_TIMEOUT_S = 30.0
#: Bytes per network read while downloading. A read that breaks off loses what
#: it had buffered, so this bounds what a resumed download fetches twice.
READ_BYTES = 64 * 1024
#: Tries per download: connection errors, timeouts and HTTP 5xx are retried.
ATTEMPTS = 5
#: Seconds before the first retry; the wait doubles after each failure...
BACKOFF_S = 1.0
#: ...up to this many seconds.
BACKOFF_MAX_S = 30.0

_URL = re.compile(r"https?://", re.IGNORECASE)

#: Download progress: called with (bytes done, bytes in total or None if unknown).
ProgressFn = Callable[[int, int | None], None]


# --- where from ----------------------------------------------------------------------------


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
    check_writable(dest.parent)
    with locked(lock_path(dest)):
        # Another process may have finished this very file while we waited.
        if dest.is_file() and file_sha256(dest) == sha256:
            return dest
        job = _Job(
            url, dest, sha256, size, progress, timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        )
        _download_locked(
            job,
            attempts=attempts if attempts is not None else ATTEMPTS,
            backoff=backoff if backoff is not None else BACKOFF_S,
        )
    return dest


@dataclass(frozen=True)
class _Job:
    """One download, as every attempt at it sees it (see :func:`download`)."""

    url: str
    dest: Path
    sha256: str
    size: int | None
    progress: ProgressFn | None
    timeout: tuple[float, float]

    @property
    def part(self) -> Path:
        return part_path(self.dest)

    @property
    def by_hand(self) -> str:
        return f"or save the file by hand as {self.dest}"


def _download_locked(job: _Job, *, attempts: int, backoff: float) -> None:
    """The attempts of one download, under its lock: retried, and restarted at most once."""
    failures = 0
    restarted = False  # a resumed .part that hashed wrong gets one fresh start
    last = ""
    with _session() as session:
        while failures < attempts:
            if failures:
                time.sleep(min(backoff * 2 ** (failures - 1), BACKOFF_MAX_S))
            try:
                got, resumed = _attempt(session, job)
            except _Retry as e:
                failures += 1
                last = str(e)
                continue
            if got == job.sha256:
                move_into_place(job.part, job.dest)
                return
            job.part.unlink(missing_ok=True)
            if resumed and not restarted:
                # The old partial may come from an earlier upstream file or a
                # broken transfer: it is never trusted, start once from zero.
                restarted = True
                continue
            raise ChecksumError(
                f"download of {job.url} is corrupt: expected sha256 {job.sha256}, got {got} "
                "(deleted); likely a damaged transfer (try again), a proxy or captive portal "
                f"answering instead of the server, or the file changed upstream ({ENV_BASE_URL} "
                "mirrors must hold the same files)"
            )
    drop_if_empty(job.part)
    keep = " (the partial download is kept and resumed next time)" if job.part.is_file() else ""
    raise DownloadError(
        f"could not download {job.url} after {attempts} attempt{'s' * (attempts != 1)}: {last}"
        f"{keep}; check the network and proxy settings (HTTPS_PROXY), {job.by_hand}"
    )


def _session() -> Any:
    """A requests session for downloads: identity encoding, sruc's User-Agent."""
    import requests

    session = requests.Session()  # trust_env stays on: proxies and CA bundle from the env
    # Byte offsets must be file offsets for Range requests: no transparent gzip.
    session.headers["Accept-Encoding"] = "identity"
    session.headers["User-Agent"] = f"sruc/{_version()} python-requests/{requests.__version__}"
    return session


def _attempt(session: Any, job: _Job) -> tuple[str, bool]:
    """:func:`_fetch_once`, its failures sorted into worth a retry or final.

    Raises:
        _Retry: a connection error, a timeout, or a body that broke off.
        DownloadError: a TLS failure, a bad request, or the ``.part`` cannot be written.
    """
    import requests

    try:
        return _fetch_once(session, job)
    except requests.exceptions.SSLError as e:
        # Retrying a certificate problem only wastes the user's time.
        drop_if_empty(job.part)
        raise DownloadError(
            f"could not download {job.url}: TLS verification failed ({_short(e)}); "
            f"a proxy that intercepts HTTPS needs REQUESTS_CA_BUNDLE, {job.by_hand}"
        ) from None
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,  # the body broke off
    ) as e:
        raise _Retry(_describe(e, job.timeout)) from None
    except requests.exceptions.RequestException as e:  # bad URL, too many redirects
        drop_if_empty(job.part)
        raise DownloadError(f"could not download {job.url}: {_short(e)}") from None
    except OSError as e:  # after RequestException, which is an OSError too
        raise DownloadError(
            f"cannot write {job.part}: {e.strerror or e}; free some space or choose "
            f"another cache folder with --cache-dir or {ENV_CACHE_DIR}"
        ) from None


def _fetch_once(session: Any, job: _Job) -> tuple[str, bool]:
    """One request: resume or start the ``.part``; returns (its SHA-256, whether it resumed).

    Raises:
        _Retry: HTTP 5xx, or the body ended early.
        DownloadError: HTTP 4xx (other than 416, which means "nothing left").
    """
    part, size = job.part, job.size
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset >= size:
        # Complete already (killed before the rename) or too long to be ours:
        # the hash decides, without asking the server.
        return file_sha256(part), True
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(job.url, headers=headers, stream=True, timeout=job.timeout) as r:
        status = r.status_code
        if status == 416 and offset:
            return file_sha256(part), True  # the server has nothing past our end
        if status >= 500:
            raise _Retry(f"HTTP {status} {r.reason or ''}".strip())
        if status not in (200, 206):
            raise DownloadError(
                f"could not download {job.url}: HTTP {status} {r.reason or ''}".strip()
                + _http_hint(status)
            )
        if status == 206 and _range_start(r.headers.get("Content-Range", "")) != offset:
            # A range we did not ask for: the partial cannot be continued.
            part.unlink(missing_ok=True)
            raise _Retry("the server answered a different byte range")
        resumed = status == 206
        return _receive(r, job, offset if resumed else 0), resumed


def _receive(r: Any, job: _Job, start: int) -> str:
    """Write the body of ``r`` to the ``.part`` after its first ``start`` bytes; the SHA-256.

    Raises:
        _Retry: the body ended before its Content-Length.
        ChecksumError: more bytes than the pinned size came (the ``.part`` is deleted).
    """
    part, size, progress = job.part, job.size, job.progress
    length = r.headers.get("Content-Length")
    expected_body = int(length) if length and length.isdigit() else None
    total = start + expected_body if expected_body is not None else size
    h = hashlib.sha256()
    done = start
    with open(part, "ab" if start else "wb") as f:
        if start:
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
            f"download of {job.url} is larger than its pinned size of {size} bytes (deleted); "
            "likely a proxy or captive portal answering instead of the server, or the file "
            "changed upstream"
        )
    if expected_body is not None and done - start < expected_body:
        raise _Retry(f"the connection closed after {done} of {total} bytes")
    return h.hexdigest()


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


def _version() -> str:
    from sruc import __version__

    return __version__
