"""The `caldavfs mount` command line as a user meets it: failures, foreground mode, signals, secrets."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers
from tests.mount.conftest import (
    CALDAVFS,
    TRACEBACK,
    Mounted,
    cli_env,
    is_mounted,
    proc_mounts_entry,
    require_fuse,
    run,
    unmount,
)

pytestmark = [pytest.mark.mount, pytest.mark.integration]


def run_cli(argv: list[str], password: str | None, cache_home: Path,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CALDAVFS, *argv], capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env=cli_env(password, cache_home))


def assert_one_line_message(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message on stderr, got:\n{stderr}"
    assert TRACEBACK not in stderr
    assert len(lines[0]) > 10


def test_wrong_password_fails_cleanly(radicale: servers.Server, tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = run_cli(["mount", radicale.base_url, str(mnt), "--username", radicale.username,
                        "--log-file", str(tmp_path / "log")], password="not-the-password",
                       cache_home=tmp_path / "cache")
        assert done.returncode != 0
        assert_one_line_message(done.stderr)
        assert "not-the-password" not in done.stderr + done.stdout
        assert not is_mounted(mnt)
        assert os.listdir(mnt) == []
    finally:
        unmount(mnt)


def test_closed_port_fails_fast(tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = servers.free_port()  # nothing listens there
    try:
        t0 = time.monotonic()
        done = run_cli(["mount", f"http://127.0.0.1:{port}/", str(mnt), "--username", "alice",
                        "--log-file", str(tmp_path / "log")], password="pw", cache_home=tmp_path / "cache",
                       timeout=30)
        elapsed = time.monotonic() - t0
        assert done.returncode != 0
        assert elapsed < 10, f"took {elapsed:.1f} s to give up on a closed port"
        assert_one_line_message(done.stderr)
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)


def wait_mounted(proc: subprocess.Popen[str], mnt: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mnt):
            return
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"caldavfs -f exited {proc.returncode} before mounting:\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"{mnt} did not show up in /proc/mounts within {timeout} s")


def end_by_signal(proc: subprocess.Popen[str], mnt: Path, sig: signal.Signals, what: str) -> str:
    """Send ``sig``; the process must exit within 15 s and leave nothing mounted. Returns its stderr."""
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} did not exit within 15 s of {sig.name}") from None
    assert not is_mounted(mnt), f"{mnt} is still mounted after {sig.name}"
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_mount_ends_cleanly_on_signal(radicale: servers.Server, tmp_path: Path,
                                                sig: signal.Signals) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([CALDAVFS, "mount", radicale.base_url, str(mnt), "--username", radicale.username,
                             "-f"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env(radicale.password, tmp_path / "cache"))
    try:
        wait_mounted(proc, mnt)
        assert sorted(os.listdir(mnt)) == sorted(radicale.dataset)
        assert (mnt / "home" / "dentist.ics").read_bytes() == radicale.dataset["home"].items["dentist.ics"].body
        err = end_by_signal(proc, mnt, sig, "caldavfs -f")
        assert proc.returncode >= 0, f"killed by signal {-proc.returncode} instead of exiting"
        assert proc.returncode in (0, 128 + sig), proc.returncode
        assert TRACEBACK not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        unmount(mnt)


def test_proc_mounts_fstype(radicale: servers.Server, mount_factory: Callable[..., Mounted]) -> None:
    m = mount_factory(radicale)
    entry = proc_mounts_entry(m.path)
    assert entry is not None
    assert entry[2] in ("fuse.caldavfs", "fuse"), entry


def test_password_not_in_ps_or_debug_log(radicale: servers.Server, mount_factory: Callable[..., Mounted]) -> None:
    secret = radicale.password
    basic = base64.b64encode(f"{radicale.username}:{secret}".encode()).decode()
    m = mount_factory(radicale, extra_args=["-d"])
    run(["cat", str(m.path / "home" / "dentist.ics")])
    run(["ls", "-lR", str(m.path)])
    for argv in (["ps", "-ef"], ["ps", "-efww"]):  # -ww: full command lines, not cut at 80 columns
        ps = run(argv).stdout.decode(errors="replace")
        assert secret not in ps, argv
    assert str(m.path) in ps, "the daemon is not in ps -efww output"
    log = m.log()
    assert "PROPFIND" in log or "REPORT" in log, f"--debug logged no request lines:\n{log}"
    assert secret not in log
    assert basic not in log
    assert "Authorization" not in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_mounts_sample_calendars_and_ends_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    """The README's first command (`scripts/demo` runs `caldavfs demo`): a local Radicale with sample
    calendars, mounted; Ctrl-C or `kill` unmounts it, stops the server and removes its files."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    scratch = tmp_path / "tmp"  # the demo's server storage goes into $TMPDIR
    scratch.mkdir()
    env = {**cli_env(None, tmp_path / "cache"), "TMPDIR": str(scratch)}
    # Its own session: if the test fails midway, the demo's Radicale goes with it (see finally).
    proc = subprocess.Popen([CALDAVFS, "demo", str(mnt), "--items", "30"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        wait_mounted(proc, mnt)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"Radicale at (http://127\.0\.0\.1:(\d+)/)", first)
        assert match and f"mounted at {mnt}" in first, first
        port = int(match.group(2))
        calendars = sorted(os.listdir(mnt))
        assert calendars == ["home", "tasks", "work"], calendars
        files = [mnt / c / f for c in calendars for f in os.listdir(mnt / c) if f.endswith(".ics")]
        assert len(files) == 30
        for f in files:
            data = f.read_bytes()
            assert data.startswith(b"BEGIN:VCALENDAR") and len(data) == f.stat().st_size, f
        assert any(scratch.iterdir())

        err = end_by_signal(proc, mnt, sig, "caldavfs demo")
        assert proc.returncode == 0, (proc.returncode, err)
        assert TRACEBACK not in err, err
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the demo's Radicale stopped with it
        assert list(scratch.iterdir()) == []  # and its storage is gone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: the demo and its server
        proc.wait(10)
        unmount(mnt)
