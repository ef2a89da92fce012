"""A scriptable file server on 127.0.0.1 for the download tests.

Each test starts its own :class:`FileServer` on a free port. It serves the
bytes given to :meth:`FileServer.serve`; :meth:`FileServer.then` queues
scripted answers for a path (an error status, a body cut short, silence longer
than the client's read timeout, Range requests ignored, a slow body), used one
per request before the normal answer resumes. Every request is logged with its
``Range`` header, so tests can count requests and see what was resumed.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

#: Bytes written per ``write`` of a body (and per pause of a slow body).
CHUNK_BYTES = 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        status: the HTTP status; anything but 200 sends a short text body.
        body: bytes to serve instead of the path's file.
        delay_s: seconds of silence before the status line.
        cut_after: send only this many body bytes (with the full
            Content-Length), then close the connection.
        stall_s: seconds of silence after the cut, before closing.
        ranges: honour ``Range: bytes=N-`` (206); False answers 200 with
            the whole file, as servers without range support do.
        chunk_delay_s: seconds of pause after every chunk (a slow transfer).
    """

    status: int = 200
    body: bytes | None = None
    delay_s: float = 0.0
    cut_after: int | None = None
    stall_s: float = 0.0
    ranges: bool = True
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class Hit:
    """A request the server received."""

    path: str
    range: str | None


class FileServer:
    """A threaded HTTP server for one test; use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.script: dict[str, list[Reply]] = {}
        self.log: list[Hit] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends every pause at shutdown
        self.first_hit = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # stalled handlers must not hold up the test
        self._httpd.owner = self  # type: ignore[attr-defined]
        # A short poll interval: shutdown() waits for one, after every test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def root(self) -> str:
        """The server's base URL, ending in a slash."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def url(self, path: str) -> str:
        return self.root + path.lstrip("/")

    def serve(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``path`` (e.g. ``/w/vdsr.pt``)."""
        self.files["/" + path.lstrip("/")] = data

    def then(self, path: str, *replies: Reply) -> None:
        """Answer the next requests for ``path`` with ``replies``, in order."""
        self.script.setdefault("/" + path.lstrip("/"), []).extend(replies)

    def hits(self, path: str | None = None) -> list[Hit]:
        """Requests received so far (for ``path`` only, if given)."""
        with self.lock:
            return [h for h in self.log if path is None or h.path == "/" + path.lstrip("/")]

    def _next(self, path: str, range_header: str | None) -> Reply:
        with self.lock:
            self.log.append(Hit(path, range_header))
            queue = self.script.get(path)
            reply = queue.pop(0) if queue else Reply()
        self.first_hit.set()
        return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def do_GET(self) -> None:
        server: FileServer = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        reply = server._next(path, self.headers.get("Range"))
        if reply.delay_s and server.stopping.wait(reply.delay_s):
            return
        data = reply.body if reply.body is not None else server.files.get(path)
        if reply.status != 200 or data is None:
            self._text(reply.status if reply.status != 200 else 404)
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and reply.ranges:
            start, status = int(m.group(1)), 206
            if start >= len(data):
                self._text(416, {"Content-Range": f"bytes */{len(data)}"})
                return
        payload = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes" if reply.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = payload if reply.cut_after is None else payload[: reply.cut_after]
        try:
            for i in range(0, len(sent), CHUNK_BYTES):
                self.wfile.write(sent[i : i + CHUNK_BYTES])
                self.wfile.flush()
                if reply.chunk_delay_s and server.stopping.wait(reply.chunk_delay_s):
                    return
            if reply.cut_after is not None and reply.stall_s:
                server.stopping.wait(reply.stall_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to do
        self.close_connection = True

    def _text(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
