"""A tiny threaded HTTP server on 127.0.0.1 for tests that download files.

It serves in-memory files, supports ``Range: bytes=<start>-[<end>]`` requests
(``206`` + ``Content-Range``), records every request, and can inject faults
per path:

* ``fail_first=N``: answer the first *N* requests with ``fail_status``
  (default 503);
* ``truncate_first_at=K``: on the first ``truncate_times`` (default 1)
  successful requests, send the full ``Content-Length`` header but close the
  connection after *K* body bytes;
* ``stall_first_at=K, stall_s=S``: on the first successful request, send *K*
  body bytes then stall for *S* seconds before closing (to trigger client
  read time-outs);
* ``ignore_range=True``: always answer ``200`` with the whole body.

Usage::

    from tests.support.http_server import LoopbackServer

    with LoopbackServer() as srv:
        srv.add_file("/grid.fits", b"...", fail_first=2)
        url = srv.url("/grid.fits")
        ...
        assert srv.request_count("/grid.fits") == 3
        assert srv.requests_for("/grid.fits")[-1].range is None

or, in a test module, ``from tests.support.http_server import loopback_server`` and
use the ``loopback_server`` fixture.  Unknown paths answer ``404``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["LoopbackServer", "RecordedRequest", "ServedFile", "loopback_server"]

_RANGE_RE = re.compile(r"^\s*bytes=(\d+)-(\d*)\s*$")


@dataclass
class RecordedRequest:
    """One request received by the server."""

    method: str
    path: str
    range: str | None  # the raw Range header, or None
    headers: dict[str, str]
    status: int | None = None  # status code sent back


@dataclass
class ServedFile:
    """An in-memory file and its fault programme."""

    data: bytes
    fail_first: int = 0
    fail_status: int = 503
    truncate_first_at: int | None = None
    truncate_times: int = 1
    stall_first_at: int | None = None
    stall_s: float = 0.0
    ignore_range: bool = False
    content_type: str = "application/octet-stream"
    # counters (mutated by the handler under the server lock)
    n_requests: int = 0
    n_served: int = 0
    extra_headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: simple and explicit

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def do_GET(self):  # noqa: N802
        self._serve(send_body=True)

    def do_HEAD(self):  # noqa: N802
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        record = RecordedRequest(
            method=self.command,
            path=path,
            range=self.headers.get("Range"),
            headers={k: v for k, v in self.headers.items()},
        )
        with owner._lock:
            owner._requests.append(record)
            entry = owner._files.get(path)
            if entry is not None:
                entry.n_requests += 1
                failing = entry.n_requests <= entry.fail_first
                if not failing:
                    entry.n_served += 1
                served_index = entry.n_served

        if entry is None:
            record.status = 404
            self.send_error(404, "Not Found")
            return
        if failing:
            record.status = entry.fail_status
            self.send_error(entry.fail_status)
            return

        data = entry.data
        start, end = 0, len(data) - 1
        status = 200
        if record.range and not entry.ignore_range:
            match = _RANGE_RE.match(record.range)
            if match:
                start = int(match.group(1))
                if match.group(2):
                    end = min(int(match.group(2)), len(data) - 1)
                if start >= len(data) or start > end:
                    record.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        body = data[start : end + 1]

        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", entry.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if entry.ignore_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        for key, value in entry.extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not send_body:
            return

        if entry.truncate_first_at is not None and served_index <= entry.truncate_times:
            self.wfile.write(body[: entry.truncate_first_at])
            self.wfile.flush()
            self.close_connection = True
            return
        if entry.stall_first_at is not None and served_index == 1:
            self.wfile.write(body[: entry.stall_first_at])
            self.wfile.flush()
            time.sleep(entry.stall_s)
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for stalled handler threads on stop()
    allow_reuse_address = True
    owner: LoopbackServer


class LoopbackServer:
    """Threaded HTTP server on ``127.0.0.1`` (random free port).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, ServedFile] = {}
        self._requests: list[RecordedRequest] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> LoopbackServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="LoopbackServer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content -----------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of *path* (which should start with ``/``)."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def add_file(self, path: str, data: bytes, **faults) -> str:
        """Serve *data* at *path*; keyword arguments as in :class:`ServedFile`.

        Returns the file's URL.
        """
        if not path.startswith("/"):
            path = "/" + path
        with self._lock:
            self._files[path] = ServedFile(data=bytes(data), **faults)
        return self.url(path)

    # -- inspection --------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """All requests received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Requests received for *path*, in order."""
        if not path.startswith("/"):
            path = "/" + path
        return [r for r in self.requests if r.path == path]

    def request_count(self, path: str | None = None) -> int:
        """Number of requests for *path* (all paths if None)."""
        return len(self.requests if path is None else self.requests_for(path))

    def ranges_for(self, path: str) -> list[str | None]:
        """Range headers of the requests for *path*, in order."""
        return [r.range for r in self.requests_for(path)]


try:  # the fixture is optional so that this module also works without pytest
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def loopback_server():
        """A started :class:`LoopbackServer`, stopped after the test."""
        with LoopbackServer() as server:
            yield server
