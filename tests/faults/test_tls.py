"""TLS: certificates are verified by default. Against a self-signed HTTPS server on 127.0.0.1 the mount is
refused with a message naming the certificate; --ca-cert FILE makes it work; --insecure works and says so
loudly."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import servers
from tests.mount.conftest import CALDAVFS, cli_env, mount

pytestmark = [pytest.mark.mount, pytest.mark.integration]

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def make_cert(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a self-signed certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class HttpsProxy:
    """HTTPS on 127.0.0.1 (self-signed) forwarding every request to a plain-HTTP backend."""

    def __init__(self, backend: str, cert: Path, key: Path) -> None:
        target = urlsplit(backend)
        proxy = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):
                    return self._forward
                raise AttributeError(name)

            def _forward(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=20)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.url = f"https://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def https(radicale: servers.Server, tmp_path: Path) -> Iterator[tuple[HttpsProxy, Path]]:
    cert, key = make_cert(tmp_path)
    proxy = HttpsProxy(radicale.base_url, cert, key)
    try:
        yield proxy, cert
    finally:
        proxy.close()


def test_self_signed_refused_by_default(radicale: servers.Server, https: tuple[HttpsProxy, Path],
                                        tmp_path: Path) -> None:
    proxy, _cert = https
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for extra_env in ({}, {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "PYTHONHTTPSVERIFY": "0"}):
        env = {**cli_env(radicale.password, tmp_path / "cache"), **extra_env}
        done = subprocess.run([CALDAVFS, "mount", proxy.url, str(mnt), "--username", radicale.username],
                              capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 1, err
        assert "certificate" in err.lower(), err
        assert "--ca-cert" in err, err
        assert not os.path.ismount(mnt)
        assert os.listdir(mnt) == []


def test_ca_cert_mounts(radicale: servers.Server, https: tuple[HttpsProxy, Path], tmp_path: Path) -> None:
    proxy, cert = https
    with mount(radicale, url=proxy.url, extra_args=["--ca-cert", str(cert)], workdir=tmp_path / "m") as m:
        assert sorted(os.listdir(m.path)) == sorted(radicale.dataset)
        item = next(iter(radicale.dataset["work"].items.values()))
        name = item.name if item.name.endswith(".ics") else item.name + ".ics"
        assert (m.path / "work" / name).read_bytes() == item.body
        assert "verification is OFF" not in m.log()
    assert proxy.requests > 0


def test_insecure_mounts_and_says_so_loudly(radicale: servers.Server, https: tuple[HttpsProxy, Path],
                                            tmp_path: Path) -> None:
    proxy, _cert = https
    with mount(radicale, url=proxy.url, extra_args=["--insecure"], workdir=tmp_path / "m") as m:
        assert sorted(os.listdir(m.path)) == sorted(radicale.dataset)
        log = m.log()
    assert "WARNING" in log and "--insecure" in log, log
