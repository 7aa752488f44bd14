"""Server gone (stopped, port closed) or silent: every call returns within the timeout, cached data stays
readable, uncached paths give EIO, the log says "unreachable" once and "reachable again" once, and the
mount recovers by itself."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from caldavfs.dav import DavSession
from caldavfs.errors import TransportError
from tests import servers
from tests.faults.stubdav import FakeCalDAV, FakeItem, ics
from tests.httpstub import Reply, Stub
from tests.mount.conftest import mount

TIMEOUT = 3.0
TTL = 1.0


def timed(argv: list[str], limit: float) -> tuple[int, bytes, bytes, float]:
    """Run a tool; fail (after killing it) if it does not finish within `limit` seconds."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.communicate(timeout=5)
            state = "killed"
        except subprocess.TimeoutExpired:
            state = "could not even be killed (uninterruptible sleep?)"
        raise AssertionError(f"{argv} hung for more than {limit} s; {state}") from None
    return proc.returncode, out, err, time.monotonic() - started


def restart_radicale(old: servers.Server) -> servers.Server:
    """Start Radicale again on the same port with the same storage (the config start_radicale wrote)."""
    root = old.storage.parent
    log_path = root / "radicale-restarted.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(servers.radicale_argv(root / "radicale.conf"), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=root, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    new = dataclasses.replace(old, proc=proc, log_path=log_path, session=requests.Session())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            r = new.request("PROPFIND", new.principal_url, headers={"Depth": "0", **servers.XML_HEADERS},
                            timeout=1.0)
            if r.status_code == 207:
                return new
        except requests.RequestException:
            pass
        time.sleep(0.1)
    new.stop()
    raise RuntimeError(f"radicale did not come back on {old.base_url}:\n{new.log()}")


@pytest.mark.mount
@pytest.mark.integration
def test_server_stopped_then_back(tmp_path: Path) -> None:
    server = servers.start_radicale(tmp_path / "radicale")
    restarted: servers.Server | None = None
    try:
        work = servers.mkcalendar(server, "work", "Work")
        for i in range(4):
            servers.put_item(server, work, f"w{i}.ics", servers.make_event(f"w{i}@t", f"Work {i}" + "!" * i))
        # Listing a calendar fetches its data (sizes come from it), so only a calendar never
        # listed has nothing cached: two after "work" in name order (the root's first listing
        # sends the next one's ahead), and listed by no walk (the root is read after "work"
        # was), so nothing lists it before the server stops.
        servers.mkcalendar(server, "x-middle", "Middle")
        other = servers.mkcalendar(server, "zother", "Other")
        servers.put_item(server, other, "never-read.ics", servers.make_event("nr@t", "never read"))

        with mount(server, ttl=TTL, extra_args=["--timeout", str(TIMEOUT)], workdir=tmp_path / "m") as m:
            mnt = m.path
            names = sorted(os.listdir(mnt / "work"))
            assert sorted(os.listdir(mnt)) == ["work", "x-middle", "zother"]
            assert [n for n in names if n.endswith(".ics")] == [f"w{i}.ics" for i in range(4)]
            cached = {n: (mnt / "work" / n).read_bytes() for n in names}

            server.stop()
            time.sleep(TTL + 0.2)  # the listings' TTL has passed: the mount has to ask the server

            budget = TIMEOUT + 2
            for _round in range(2):
                rc, out, err, took = timed(["ls", "-1", str(mnt)], budget)
                assert rc == 0, err
                assert sorted(out.decode().split()) == ["work", "x-middle", "zother"]
                rc, out, err, took = timed(["ls", "-1", str(mnt / "work")], budget)
                assert rc == 0, err
                assert sorted(out.decode().split()) == names, "a cached listing changed while the server was away"
                for name, data in cached.items():
                    rc, out, err, took = timed(["cat", str(mnt / "work" / name)], budget)
                    assert rc == 0, f"cat {name} while the server is away: {err.decode()}"
                    assert out == data
                # Never listed: nothing of it is cached, so EIO within the timeout.
                rc, out, err, took = timed(["cat", str(mnt / "zother" / "never-read.ics")], budget)
                assert rc != 0 and out == b""
                assert os.strerror(errno.EIO) in err.decode(), err.decode()
                assert took < budget
                time.sleep(TTL + 0.2)

            log = m.log()
            assert log.count("is unreachable") == 1, log
            assert "reachable again" not in log

            restarted = restart_radicale(server)
            servers.put_item(restarted, work, "new.ics", servers.make_event("new@t", "Back again"))
            deadline = time.monotonic() + 15
            listing: list[str] = []
            while time.monotonic() < deadline:
                rc, out, err, _ = timed(["ls", "-1", str(mnt / "work")], budget)
                listing = out.decode().split()
                if "new.ics" in listing:
                    break
                time.sleep(0.3)
            assert "new.ics" in listing, f"the mount did not recover: {listing}\n{m.log()}"
            assert (mnt / "work" / "new.ics").read_bytes() == servers.get_item(restarted, work + "new.ics")
            assert (mnt / "zother" / "never-read.ics").read_bytes().startswith(b"BEGIN:VCALENDAR")
            log = m.log()
            assert log.count("reachable again") == 1, log
            assert log.count("is unreachable") == 1, log
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


# --- a silent server (accepts, never answers) ------------------------------------------------------


@pytest.mark.parametrize("method", ["PROPFIND", "REPORT", "GET"])
def test_silent_server_times_out_within_budget(method: str) -> None:
    with Stub([Reply(hang=True)]) as stub:
        session = DavSession(timeout=2, retries=2)
        started = time.monotonic()
        with pytest.raises(TransportError):
            session.request(method, stub.url + "alice/work/", body=b"<x/>" if method != "GET" else None,
                            depth="1" if method != "GET" else None)
        assert time.monotonic() - started < 4


def test_tree_keeps_serving_when_server_goes_silent() -> None:
    items = [FakeItem(f"/alice/work/s{i}.ics", ics(f"s{i}", pad=i)) for i in range(3)]
    with FakeCalDAV(items) as dav:
        tree = dav.tree(ttl=0.3, timeout=1.5)
        before = [n for n, _ in tree.readdir("/work")]
        data = {n: tree.read_file(f"/work/{n}") for n in before if n.endswith(".ics")}
        dav.silent = True
        time.sleep(0.4)
        for _ in range(3):
            started = time.monotonic()
            assert [n for n, _ in tree.readdir("/work")] == before
            assert {n: tree.read_file(f"/work/{n}") for n in data} == data
            assert [c for c in tree.readdir("/")] and tree.getattr("/work").kind == "dir"
            assert time.monotonic() - started < 1.5 + 2
        assert tree.client.session.reachable is False


def test_a_cold_listing_of_a_silent_server_fails_within_one_timeout() -> None:
    # The calendar's query goes first: when it gets no answer, the server is away, and the
    # listing says so (EIO) instead of sending its PROPFIND into the same silence.
    items = [FakeItem(f"/alice/work/s{i}.ics", ics(f"s{i}", pad=i)) for i in range(3)]
    with FakeCalDAV(items) as dav:
        tree = dav.tree(ttl=60, timeout=1.5)
        assert [n for n, _ in tree.readdir("/")] == ["work"]
        dav.silent = True
        started = time.monotonic()
        with pytest.raises(TransportError):
            tree.readdir("/work")
        assert time.monotonic() - started < 1.5 + 1
