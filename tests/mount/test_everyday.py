"""Everyday use of a real mount: the mount helper and fstab-style options, extended attributes,
`caldavfs status` / `prefetch` / `umount`, and systemd's Type=notify handshake (issue 6).

About `mount -t fuse.caldavfs`: util-linux mount(8) (2.38 here) looks for /sbin/mount.fuse.caldavfs,
then runs /sbin/mount.fuse (libfuse's mount.fuse3) as
``mount.fuse URL MNT -o rw,OPTS -t fuse.caldavfs`` and *removes PATH from the helper's environment*;
mount.fuse3 then runs ``/bin/sh -c 'caldavfs URL MNT -o OPTS,dev,suid'``, so /bin/sh falls back to its
built-in default PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin). `mount -t
fuse.caldavfs` therefore only finds a `caldavfs` installed in one of those system directories,
whatever PATH the caller has, and a test must not install anything there. The tests below run
mount.fuse3 exactly the way mount(8) does (same argv, including the `rw` mount(8) prepends), with
.venv/bin first on PATH, and check the PATH-stripping of mount(8) itself separately.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from lxml import etree

from tests import servers
from tests.mount.conftest import (
    CALDAVFS,
    MOUNT_TIMEOUT,
    TRACEBACK,
    Mounted,
    cli_env,
    daemon_pids,
    expected_name,
    is_mounted,
    mount,
    proc_mounts_entry,
    require_fuse,
    run,
    unmount,
)

pytestmark = [pytest.mark.mount, pytest.mark.integration]

MOUNT_HELPER = str(Path(sys.executable).with_name("mount.caldavfs"))
VENV_BIN = str(Path(sys.executable).parent)
MOUNT_FUSE = shutil.which("mount.fuse3") or shutil.which("mount.fuse") or "/sbin/mount.fuse3"
HARMLESS = "_netdev,noauto,x-systemd.automount"


# --- helpers ------------------------------------------------------------------------------


def password_file(tmp_path: Path, password: str) -> Path:
    pw = tmp_path / "password"
    pw.write_text(password + "\n", encoding="utf-8")
    pw.chmod(0o600)
    return pw


def helper_env(tmp_path: Path) -> dict[str, str]:
    """No CALDAVFS_* variables (so the password can only come from the options), a private cache
    and .venv/bin first on PATH (for mount.fuse3, which runs `caldavfs` through /bin/sh)."""
    env = cli_env(None, tmp_path / "xdg-cache")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def wait_gone(mnt: Path, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while daemon_pids(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon_pids(mnt)


@contextlib.contextmanager
def helper_mounted(argv: Sequence[str], mnt: Path, log_file: Path, env: dict[str, str]) -> Iterator[None]:
    """Run a mount command that returns once the mount is live; always unmount afterwards."""
    require_fuse()
    done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=MOUNT_TIMEOUT, check=False)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    try:
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{output}\n{_read(log_file)}"
        assert is_mounted(mnt), f"{argv} returned 0 but {mnt} is not mounted:\n{output}\n{_read(log_file)}"
        yield
    finally:
        unmount(mnt)
        left = wait_gone(mnt)
        for pid in left:  # our own daemon, found by its unique mount point
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"the caldavfs daemon (pids {left}) did not exit after the unmount"
        log = output + _read(log_file)
        assert TRACEBACK not in log, log


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def fstab_options(server: servers.Server, pw: Path, log_file: Path, *extra: str) -> str:
    return ",".join([f"username={server.username}", f"password_file={pw}", HARMLESS, *extra,
                     f"log_file={log_file}"])


def assert_lists_calendars(server: servers.Server, mnt: Path) -> None:
    assert sorted(os.listdir(mnt)) == sorted(server.dataset)
    item = server.dataset["home"].items["dentist.ics"]
    assert (mnt / "home" / "dentist.ics").read_bytes() == item.body


def assert_secret_hidden(secret: str, mnt: Path) -> None:
    ps = run(["ps", "-efww"]).stdout.decode(errors="replace")
    assert str(mnt) in ps, "the daemon is not in ps -efww output"
    assert secret not in ps
    pids = daemon_pids(mnt)
    assert pids, f"no caldavfs daemon found for {mnt}"
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline, cmdline


# --- the mount helper, fstab style -----------------------------------------------------------


def test_mount_helper_with_fstab_options(radicale: servers.Server, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pw = password_file(tmp_path, radicale.password)
    log_file = tmp_path / "daemon.log"
    argv = [MOUNT_HELPER, radicale.base_url, str(mnt), "-o",
            fstab_options(radicale, pw, log_file, "allow_other")]
    with helper_mounted(argv, mnt, log_file, helper_env(tmp_path)):
        assert_lists_calendars(radicale, mnt)
        entry = proc_mounts_entry(mnt)
        assert entry is not None
        assert "allow_other" in entry[3], entry  # a FUSE option goes through to the mount
        for harmless in ("_netdev", "noauto", "x-systemd"):
            assert harmless not in entry[3], entry
        assert_secret_hidden(radicale.password, mnt)


def test_mount_helper_refuses_password_option(radicale: servers.Server, tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [MOUNT_HELPER, radicale.base_url, str(mnt), "-o",
            f"username={radicale.username},password={radicale.password},{HARMLESS}"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=helper_env(tmp_path), timeout=MOUNT_TIMEOUT, check=False)
        assert done.returncode != 0
        assert not is_mounted(mnt)
        assert "password" in done.stderr, done.stderr
        assert radicale.password not in done.stderr + done.stdout
        assert TRACEBACK not in done.stderr
        assert not daemon_pids(mnt)
    finally:
        unmount(mnt)


def test_caldavfs_url_first_form(radicale: servers.Server, tmp_path: Path) -> None:
    """`caldavfs URL MNT -o ...`: what mount.fuse3 runs for `mount -t fuse.caldavfs`."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pw = password_file(tmp_path, radicale.password)
    log_file = tmp_path / "daemon.log"
    argv = [CALDAVFS, radicale.base_url, str(mnt), "-o", fstab_options(radicale, pw, log_file)]
    with helper_mounted(argv, mnt, log_file, helper_env(tmp_path)):
        assert_lists_calendars(radicale, mnt)
        assert_secret_hidden(radicale.password, mnt)


def test_mount_fuse3_type_fuse_caldavfs(radicale: servers.Server, tmp_path: Path) -> None:
    """mount.fuse3 invoked exactly as `mount -t fuse.caldavfs URL MNT -o OPTS` invokes it."""
    if not os.path.exists(MOUNT_FUSE):
        pytest.skip("mount.fuse3 (Debian package fuse3) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pw = password_file(tmp_path, radicale.password)
    log_file = tmp_path / "daemon.log"
    argv = [MOUNT_FUSE, radicale.base_url, str(mnt), "-o", "rw," + fstab_options(radicale, pw, log_file),
            "-t", "fuse.caldavfs"]
    with helper_mounted(argv, mnt, log_file, helper_env(tmp_path)):
        assert_lists_calendars(radicale, mnt)
        entry = proc_mounts_entry(mnt)
        assert entry is not None and entry[2] == "fuse.caldavfs", entry
        assert_secret_hidden(radicale.password, mnt)


def test_mount8_hands_mount_fuse_no_path(tmp_path: Path) -> None:
    """Why the test above calls mount.fuse3 itself: mount(8) strips PATH before running it, so
    `mount -t fuse.caldavfs` finds `caldavfs` only in /bin:/usr/bin:/usr/local/bin and the like."""
    if shutil.which("mount") is None or shutil.which("strace") is None or os.geteuid() != 0:
        pytest.skip("needs mount(8), strace and root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = helper_env(tmp_path)
    done = subprocess.run(["strace", "-f", "-v", "-s", "4096", "-e", "trace=execve", "mount", "-t", "fuse.caldavfs",
                           "http://127.0.0.1:9/", str(mnt), "-o", "username=nobody,password_file=/nonexistent"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    unmount(mnt)
    helper = [line for line in done.stderr.splitlines() if re.search(r'execve\("/s?bin/mount\.fuse3?"', line)]
    assert helper, done.stderr
    assert VENV_BIN in env["PATH"]
    assert '"PATH=' not in helper[0].split("], [", 1)[1], helper[0]


# --- extended attributes -----------------------------------------------------------------------


def xattrs(path: Path) -> dict[str, bytes]:
    """getfattr -d (user.* attributes), values decoded from hex."""
    out = run(["getfattr", "-d", "-e", "hex", "--absolute-names", str(path)]).stdout.decode()
    values: dict[str, bytes] = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert value.startswith("0x"), line
            values[name] = bytes.fromhex(value[2:])
    return values


def calendar_props(server: servers.Server, url: str) -> dict[str, str]:
    body = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
            b'xmlns:CS="http://calendarserver.org/ns/"><D:prop><CS:getctag/><D:sync-token/></D:prop></D:propfind>')
    r = server.request("PROPFIND", url, data=body, headers={"Depth": "0", "Content-Type": "application/xml"})
    assert r.status_code == 207, r.status_code
    root = etree.fromstring(r.content)
    out: dict[str, str] = {}
    for ps in root.iter("{DAV:}propstat"):
        if " 200 " not in (ps.findtext("{DAV:}status") or ""):
            continue
        ctag = ps.findtext("{DAV:}prop/{http://calendarserver.org/ns/}getctag")
        token = ps.findtext("{DAV:}prop/{DAV:}sync-token")
        if ctag:
            out["user.caldav.ctag"] = ctag
        if token:
            out["user.caldav.sync-token"] = token
    return out


def test_getfattr_item_and_calendar(server: servers.Server, tmp_path: Path) -> None:
    with mount(server, workdir=tmp_path) as m:
        for cal in server.dataset.values():
            listed = servers.list_hrefs(server, cal.url)
            by_path = {urlsplit(urljoin(server.base_url, href)).path: (href, etag) for href, etag in listed.items()}
            for item in cal.items.values():
                path = m.path / cal.name / expected_name(item.name)
                text = run(["getfattr", "-d", "--absolute-names", str(path)]).stdout.decode()
                for name in ("user.caldav.href", "user.caldav.etag", "user.caldav.url"):
                    assert name in text, text
                got = xattrs(path)
                assert set(got) == {"user.caldav.href", "user.caldav.etag", "user.caldav.url"}, got
                href = got["user.caldav.href"].decode()
                assert href in by_path, (href, listed)
                server_href, etag = by_path[href]
                assert href == urlsplit(urljoin(server.base_url, server_href)).path
                assert got["user.caldav.etag"].decode() == etag
                url = got["user.caldav.url"].decode()
                assert urlsplit(url).scheme == "http" and urlsplit(url).netloc == urlsplit(server.base_url).netloc, url
                assert url == urljoin(server.base_url, server_href)

            got = xattrs(m.path / cal.name)
            assert got["user.caldav.href"].decode() == urlsplit(urljoin(server.base_url, cal.href)).path
            assert got["user.caldav.url"].decode() == urljoin(server.base_url, cal.href)
            assert "user.caldav.ctag" in got or "user.caldav.sync-token" in got, got
            expected = calendar_props(server, cal.url)
            for name in ("user.caldav.ctag", "user.caldav.sync-token"):
                assert (got[name].decode() if name in got else None) == expected.get(name), (name, got, expected)
            assert set(got["user.caldav.components"].decode().split(",")) == set(cal.components), got
            assert set(got) <= {"user.caldav.href", "user.caldav.url", "user.caldav.ctag",
                                "user.caldav.sync-token", "user.caldav.components"}, got


def test_setfattr_fails_with_enotsup(radicale: servers.Server, tmp_path: Path) -> None:
    with mount(radicale, workdir=tmp_path) as m:
        item = m.path / "home" / "dentist.ics"
        for target in (item, m.path / "home"):
            before = xattrs(target)
            done = run(["setfattr", "-n", "user.caldav.etag", "-v", "forged", str(target)], check=False)
            assert done.returncode != 0
            assert "Operation not supported" in done.stderr.decode(), done.stderr
            done = run(["setfattr", "-n", "user.note", "-v", "x", str(target)], check=False)
            assert done.returncode != 0
            assert "Operation not supported" in done.stderr.decode(), done.stderr
            with pytest.raises(OSError) as info:
                os.setxattr(target, "user.caldav.href", b"/elsewhere")
            assert info.value.errno == errno.ENOTSUP
            with pytest.raises(OSError) as info:
                os.removexattr(target, "user.caldav.href")
            assert info.value.errno == errno.ENOTSUP
            assert xattrs(target) == before


# --- caldavfs status / prefetch / umount ----------------------------------------------------------


def stats(m: Mounted) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(os.getxattr(m.path, "user.caldavfs.stats"))
    return data


def test_status_of_a_mount(radicale: servers.Server, tmp_path: Path) -> None:
    with mount(radicale, workdir=tmp_path) as m:
        run(["ls", "-R", str(m.path)])
        done = run([CALDAVFS, "status", str(m.path)])
        out = done.stdout.decode()
        assert radicale.base_url.rstrip("/") in out, out
        for name in radicale.dataset:
            assert name in out, out
        requests = re.search(r"requests:\s+(\d+)", out)
        assert requests is not None and int(requests.group(1)) > 0, out
        assert "reachable" in out, out


def test_status_of_a_plain_folder(tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        done = run([CALDAVFS, "status", str(target)], check=False)
        err = done.stderr.decode()
        assert done.returncode == 1, (done.returncode, err)
        assert len(err.strip().splitlines()) == 1, err
        assert str(target) in err, err
        assert TRACEBACK not in err


def test_prefetch_fills_the_cache(radicale: servers.Server, tmp_path: Path) -> None:
    total = sum(len(cal.items) for cal in radicale.dataset.values())
    with mount(radicale, workdir=tmp_path) as m:
        done = run([CALDAVFS, "prefetch", str(m.path)], timeout=120)
        err = done.stderr.decode()
        assert f"{total} of {total} items" in err, err
        assert f"{total}/{total}" in err, err
        after = stats(m)
        assert after["cache_entries"] == total, after
        before_methods = dict(after["by_method"])
        for cal in radicale.dataset.values():
            for item in cal.items.values():
                assert (m.path / cal.name / expected_name(item.name)).read_bytes() == item.body
        methods = stats(m)["by_method"]
        for method in ("REPORT", "GET"):
            assert methods.get(method, 0) == before_methods.get(method, 0), (before_methods, methods)


def test_caldavfs_umount(radicale: servers.Server, tmp_path: Path) -> None:
    with mount(radicale, workdir=tmp_path) as m:
        assert daemon_pids(m.path)
        done = run([CALDAVFS, "umount", str(m.path)])
        assert done.returncode == 0
        assert not is_mounted(m.path)
        assert not wait_gone(m.path), "the daemon did not exit after caldavfs umount"


# --- systemd Type=notify --------------------------------------------------------------------------


def test_notify_socket_ready_then_sigterm(radicale: servers.Server, tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(15)
    env = cli_env(radicale.password, tmp_path / "cache")
    env["NOTIFY_SOCKET"] = str(sock_path)
    proc = subprocess.Popen([CALDAVFS, "mount", "-f", radicale.base_url, str(mnt), "--username", radicale.username],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        started = time.monotonic()
        try:
            message = sock.recv(4096)
        except TimeoutError:
            proc.kill()
            _out, err = proc.communicate(timeout=10)
            raise AssertionError(f"no READY=1 within 15 s:\n{err}") from None
        mounted_then = is_mounted(mnt)
        assert b"READY=1" in message.split(b"\n"), message
        assert time.monotonic() - started < 15
        assert mounted_then, "READY=1 arrived before the mount was in /proc/mounts"
        assert sorted(os.listdir(mnt)) == sorted(radicale.dataset)
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("caldavfs -f did not exit within 15 s of SIGTERM") from None
        assert not is_mounted(mnt)
        assert proc.returncode in (0, 128 + signal.SIGTERM), proc.returncode
        assert TRACEBACK not in err, err
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        unmount(mnt)
