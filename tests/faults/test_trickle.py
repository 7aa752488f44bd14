"""A server that trickles its answer one byte at a time must not hold a call past the timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from caldavfs.dav import DavSession
from caldavfs.errors import TransportError


@pytest.fixture
def trickler() -> Iterator[str]:
    """Answers every connection with headers, then one body byte every 0.2 s (never finishing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: 100000\r\n\r\n<")
                while not stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(0.2)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    stop.set()
    server.close()


@pytest.mark.parametrize("method", ["PROPFIND", "REPORT", "GET"])
def test_a_trickled_answer_ends_at_the_timeout(trickler: str, method: str) -> None:
    session = DavSession(timeout=2.0, retries=0)
    started = time.monotonic()
    with pytest.raises(TransportError, match="within 2 s"):
        session.request(method, trickler, body=b"<x/>" if method != "GET" else None)
    assert time.monotonic() - started < 3.5
