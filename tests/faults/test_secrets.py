"""Secrets: with --debug neither the password, its Basic form nor an Authorization header reaches the log
or `ps`; --password-command output is not logged; a redirect to another origin carries no credentials."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import subprocess
from pathlib import Path

import pytest
import requests

from caldavfs.client import Client
from caldavfs.dav import DavSession
from tests import servers
from tests.httpstub import Reply, Request, Stub
from tests.mount.conftest import CALDAVFS, mount, run

MS = (b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/x/</D:href>'
      b"<D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop>"
      b"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>")


def _secret_forms(username: str, password: str) -> list[str]:
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    return [password, basic, basic.rstrip("="), "Authorization"]


def _exercise(mnt: Path) -> None:
    names = os.listdir(mnt)
    assert names
    for cal in names:
        for name in os.listdir(mnt / cal):
            (mnt / cal / name).read_bytes()


@pytest.mark.mount
@pytest.mark.integration
def test_debug_log_and_ps_hold_no_secret(radicale: servers.Server, tmp_path: Path) -> None:
    with mount(radicale, extra_args=["-d"], workdir=tmp_path) as m:
        _exercise(m.path)
        ps = run(["ps", "-efww"]).stdout.decode(errors="replace")
        assert str(m.path) in ps  # we do see our daemon
        for form in _secret_forms(radicale.username, radicale.password)[:3]:
            assert form not in ps, f"{form!r} visible in ps"
        log = m.log()
    assert "PROPFIND" in log and "REPORT" in log, "with -d every request should be logged"
    for form in _secret_forms(radicale.username, radicale.password):
        assert form not in log, f"{form!r} in the debug log:\n{log}"


@pytest.mark.mount
@pytest.mark.integration
def test_password_command_output_not_logged(tmp_path: Path) -> None:
    secret = "SECRET123"
    server = servers.start_radicale(tmp_path / "radicale", password=secret)
    try:
        servers.mkcalendar(server, "work")
        servers.put_item(server, server.home_url + "work/", "a.ics", servers.make_event("a@t", "A"))
        # No CALDAVFS_PASSWORD in the environment: the password comes from the command only.
        no_env = dataclasses.replace(server, password=None, session=requests.Session())  # type: ignore[arg-type]
        with mount(no_env, extra_args=["-d", "-v", "--password-command", f"echo {secret}"],
                   workdir=tmp_path / "m") as m:
            _exercise(m.path)
            log = m.log()
        assert "REPORT" in log
        for form in _secret_forms(server.username, secret):
            assert form not in log, f"{form!r} in the log:\n{log}"
    finally:
        server.stop()


def test_failed_password_command_output_not_shown(tmp_path: Path) -> None:
    caldavfs = CALDAVFS
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALDAVFS_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run([caldavfs, "mount", "http://127.0.0.1:9/", str(mnt), "--username", "alice", "-d",
                           "--password-command", "echo SECRET456; exit 3"],
                          capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert b"SECRET456" not in done.stdout + done.stderr


def test_redirect_to_other_origin_carries_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Stub([Reply(207, MS)]) as second:
        def first_handler(req: Request) -> Reply:
            return Reply(302, headers={"Location": f"http://127.0.0.1:{second.port}/x/"})

        with Stub(first_handler) as first:
            session = DavSession(username="alice", password="hunter2-pw", timeout=5)
            session.trust(first.url)
            Client(session).propfind(first.url + "dav/", ("{DAV:}resourcetype",), depth="0")
            assert first.requests[0].headers.get("Authorization", "").startswith("Basic ")
        assert len(second.requests) == 1
        assert not any(k.lower() == "authorization" for k in second.requests[0].headers), second.requests[0].headers
        assert "hunter2-pw" not in repr(second.requests[0])
    for form in _secret_forms("alice", "hunter2-pw"):
        assert form not in caplog.text


def test_redirect_to_other_host_name_carries_no_credentials() -> None:
    """127.0.0.1 and localhost are different origins: no credentials follow the redirect."""
    with Stub([Reply(207, MS)]) as second:
        with Stub([Reply(307, headers={"Location": f"http://localhost:{second.port}/x/"})]) as first:
            session = DavSession(username="alice", password="pw", timeout=5)
            session.trust(first.url)
            session.request("PROPFIND", first.url, body=b"<x/>", depth="0")
        assert len(second.requests) == 1
        assert "Authorization" not in second.requests[0].headers
