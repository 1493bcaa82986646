"""A real HTTP server on 127.0.0.1 for download tests, so that no test reaches the internet.

Usage::

    from tests.helpers_http import FileServer, unused_port

    with FileServer() as server:
        url = server.serve("model.pth", b"weights")   # 200 with Content-Length
        server.stall("slow.pth")                        # accepts, then never answers
        ...                                             # any other path: 404
        assert server.requests == ["/model.pth"]

It runs in a thread of the test process on a free port, and counts every request so a test
can prove that a cached file was not fetched again.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

#: How long a stalled request waits at most if a test forgets to stop the server.
_STALL_LIMIT_S = 30


class FileServer:
    """Serves in-memory files; unknown paths answer 404, stalled paths never answer."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.stalled: set[str] = set()
        self.requests: list[str] = []
        self._release_stalled = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval makes shutdown (once per test) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def serve(self, name: str, content: bytes) -> str:
        """Serve ``content`` at ``/name``; returns its URL."""
        self.files["/" + name] = content
        return self.base_url + name

    def stall(self, name: str) -> str:
        """Accept requests for ``/name`` but send nothing until the server stops."""
        self.stalled.add("/" + name)
        return self.base_url + name

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._release_stalled.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path in server.stalled:
                    server._release_stalled.wait(_STALL_LIMIT_S)
                    return
                content = server.files.get(self.path)
                if content is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        return Handler


def unused_port() -> int:
    """A local port nothing listens on, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
