"""A throwaway local Radicale for the demo and the benchmark.

Standard library only (http.client, not requests): dav.py stays the one requests user.
Items are seeded by writing Radicale's multifilesystem storage directly, which is much faster than
one PUT per item (a PUT costs ~150 ms in a 2,000-item calendar).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from calendar import timegm
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from caldavfs.sample import SampleCalendar

__all__ = ["LocalRadicale"]

_LAST_MODIFIED = re.compile(rb"\r\nLAST-MODIFIED:(\d{8}T\d{6})Z\r\n")
_PROPFIND_LISTING = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontentlength/><D:getlastmodified/>'
    b"</D:prop></D:propfind>"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRadicale:
    """Radicale on 127.0.0.1 with one htpasswd user, storing under `storage_dir`.

    Use as a context manager (start on enter, stop on exit) or call start()/stop().
    """

    def __init__(self, storage_dir: Path, username: str = "demo", password: str | None = None,
                 port: int | None = None) -> None:
        self.storage_dir = Path(storage_dir)
        self._username = username
        self._password = password if password is not None else secrets.token_urlsafe(12)
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self.collections = self.storage_dir / "collections"
        self.log_path = self.storage_dir / "radicale.log"
        self._htpasswd = self.storage_dir / "htpasswd"
        self._slugs: list[str] = []

    # -- properties ------------------------------------------------------------------------------

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalRadicale has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        """The server root; discovery from here finds the user's home-set."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def home_url(self) -> str:
        return f"{self.url}{quote(self._username)}/"

    def calendar_url(self, slug: str) -> str:
        return f"{self.home_url}{quote(slug)}/"

    # -- seeding ---------------------------------------------------------------------------------

    def seed(self, calendars: list[SampleCalendar]) -> None:
        """Write `calendars` straight into the storage (replacing same-named ones).

        Call it while the server is stopped: Radicale keeps no state in memory, but a request racing
        the writes could see half a calendar.
        """
        home = self.collections / "collection-root" / self._username
        home.mkdir(parents=True, exist_ok=True)
        for cal in calendars:
            folder = home / cal.slug
            if folder.exists():
                shutil.rmtree(folder)  # drop old items and Radicale's caches of them
            folder.mkdir()
            props = {
                "tag": "VCALENDAR",
                "D:displayname": cal.displayname,
                "ICAL:calendar-color": cal.color,
                "C:supported-calendar-component-set": ",".join(cal.components),
            }
            # Radicale writes this file with sort_keys; do the same so a later PROPPATCH diff is small.
            (folder / ".Radicale.props").write_text(json.dumps(props, sort_keys=True), encoding="utf-8")
            for name, data in cal.items:
                path = folder / name
                path.write_bytes(data)
                # Radicale's getlastmodified is the file's mtime: make it the item's own LAST-MODIFIED,
                # so it is stable and plausible instead of "the moment of seeding".
                m = _LAST_MODIFIED.search(data)
                if m:
                    t = timegm(time.strptime(m.group(1).decode(), "%Y%m%dT%H%M%S"))
                    os.utime(path, (t, t))
            if cal.slug not in self._slugs:
                self._slugs.append(cal.slug)

    # -- process ---------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The Radicale command line; `--config ""` keeps /etc/radicale and ~/.config out of it."""
        return [
            sys.executable, "-m", "radicale",
            "--config", "",
            "--server-hosts", f"127.0.0.1:{self.port}",
            "--auth-type", "htpasswd",
            "--auth-htpasswd-filename", str(self._htpasswd),
            "--auth-htpasswd-encryption", "plain",
            "--rights-type", "owner_only",
            "--storage-filesystem-folder", str(self.collections),
            "--web-type", "none",
            "--logging-level", "info",
        ]

    def start(self, timeout: float = 30.0) -> None:
        if self._proc is not None:
            raise RuntimeError("LocalRadicale already started")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.collections.mkdir(exist_ok=True)
        self._htpasswd.write_text(f"{self._username}:{self._password}\n", encoding="utf-8")
        os.chmod(self._htpasswd, 0o600)
        if self._port is None:
            self._port = _free_port()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"radicale exited with {code} during start:\n{self._log_tail()}")
            try:
                status, _ = self.request("PROPFIND", self.home_url, depth="0", timeout=2.0)
                if status == 207:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"radicale did not answer within {timeout} s:\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LocalRadicale:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------------------------

    def request(self, method: str, url: str, body: bytes | None = None, depth: str | None = None,
                timeout: float = 60.0) -> tuple[int, bytes]:
        """One request with Basic credentials sent up front (Radicale delays a 401 by about a second)."""
        path = url.split(f"127.0.0.1:{self.port}", 1)[-1] or "/"
        token = base64.b64encode(f"{self._username}:{self._password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        if depth is not None:
            headers["Depth"] = depth
        if body is not None:
            headers["Content-Type"] = "application/xml; charset=utf-8"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def warm_up(self, timeout: float = 600.0) -> None:
        """One PROPFIND Depth 1 per seeded calendar: Radicale parses every item on its first listing."""
        for slug in self._slugs:
            status, _ = self.request("PROPFIND", self.calendar_url(slug), _PROPFIND_LISTING, depth="1",
                                     timeout=timeout)
            if status != 207:
                raise RuntimeError(f"warm-up PROPFIND on {slug!r} answered {status}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
