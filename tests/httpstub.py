"""A tiny scripted HTTP server on 127.0.0.1 for cases a real CalDAV server can't produce.

    with Stub(lambda req: Reply(207, body=b"...")) as stub:
        ... stub.url ... stub.requests ...

The handler gets every request (any method) as a ``Request`` and returns a ``Reply``; a
list of replies is answered in order (the last one repeats). ``Reply(hang=True)`` accepts
the request and never answers (until the stub is closed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


Handler = Callable[[Request], Reply]


class Stub:
    def __init__(self, handler: Handler | Sequence[Reply]) -> None:
        if callable(handler):
            self._handler: Handler = handler
        else:
            replies = list(handler)
            self._handler = lambda req: replies[min(len(self.requests), len(replies)) - 1]
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        stub = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, self.path, dict(self.headers.items()), body)
                with stub._lock:
                    stub.requests.append(req)
                    reply = stub._handler(req)
                if reply.hang:
                    stub._stop.wait(60)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
