"""Real FUSE mounts through the real CLI (`caldavfs mount`), for tests/mount.

`mount(server, ttl=..., extra_args=...)` runs `caldavfs mount URL MNT --username ... --log-file ...` with the
password in CALDAVFS_PASSWORD, checks that MNT is in /proc/mounts, yields a `Mounted`, and always unmounts
(`fusermount -u`, then `fusermount -uz`). Teardown fails the test when the daemon's log or the CLI's
stderr holds a Python traceback, or when the daemon does not end after the unmount.

Mount tests never skip when $CI is set: a missing /dev/fuse or fusermount fails them there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers

CALDAVFS = str(Path(sys.executable).with_name("caldavfs"))
MOUNT_TIMEOUT = 60.0
TRACEBACK = "Traceback (most recent call last)"


def fusermount() -> str | None:
    return shutil.which("fusermount") or shutil.which("fusermount3")


def require_fuse() -> None:
    """Skip without FUSE on a developer machine; fail in CI, where mount tests must run."""
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    if fusermount() is None:
        missing.append("fusermount (Debian package fuse3)")
    if not os.path.exists(CALDAVFS):
        missing.append(f"the caldavfs console script at {CALDAVFS} (pip install -e .)")
    if missing:
        msg = "FUSE mount tests need " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so mount tests must not be skipped", pytrace=False)
        pytest.skip(msg)


def _unescape_mounts_field(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def proc_mounts_entry(path: str | os.PathLike[str]) -> list[str] | None:
    """The /proc/mounts fields (device, mountpoint, fstype, options, ...) for `path`, or None."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and _unescape_mounts_field(fields[1]) == target:
                found = [_unescape_mounts_field(x) for x in fields]
    return found


def is_mounted(path: str | os.PathLike[str]) -> bool:
    return proc_mounts_entry(path) is not None


def unmount(path: str | os.PathLike[str]) -> None:
    """fusermount -u; fusermount -uz as the fallback. Raises AssertionError if still mounted."""
    tool = fusermount() or "fusermount"
    if not is_mounted(path):
        return
    for _ in range(20):
        subprocess.run([tool, "-u", str(path)], capture_output=True, timeout=30, check=False)
        if not is_mounted(path):
            return
        time.sleep(0.1)
    subprocess.run([tool, "-uz", str(path)], capture_output=True, timeout=30, check=False)
    assert not is_mounted(path), f"{path} is still mounted after fusermount -u and -uz"
    raise AssertionError(f"{path}: fusermount -u failed; had to fall back to a lazy unmount (-uz)")


def daemon_pids(mountpoint: str | os.PathLike[str]) -> list[int]:
    """PIDs of caldavfs processes whose command line names this (unique, temporary) mount point."""
    target = os.fsencode(str(mountpoint))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if target in argv and any(b"caldavfs" in a for a in argv):
            pids.append(int(entry))
    return pids


def cli_env(password: str | None, cache_home: str | os.PathLike[str]) -> dict[str, str]:
    """The CLI's environment: the password in CALDAVFS_PASSWORD, and XDG_CACHE_HOME pointing into the
    test's temporary folder (never the user's ~/.cache; a fresh one per mount: state comes from the server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALDAVFS_")}
    env["XDG_CACHE_HOME"] = str(cache_home)
    if password is not None:
        env["CALDAVFS_PASSWORD"] = password
    return env


@dataclass
class Mounted:
    path: Path
    log_file: Path
    stderr_file: Path
    argv: list[str]
    started: float  # time.time() just before the CLI ran

    def log(self) -> str:
        parts = []
        for p in (self.stderr_file, self.log_file):
            with contextlib.suppress(OSError):
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)


@contextlib.contextmanager
def mount(server: servers.Server, *, ttl: float = 60, extra_args: Sequence[str] = (),
          workdir: str | os.PathLike[str] | None = None, url: str | None = None) -> Iterator[Mounted]:
    """Mount `server` through the real CLI in the background; always unmounted afterwards."""
    require_fuse()
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="caldavfs-mnt-") if workdir is None else workdir)
    base.mkdir(parents=True, exist_ok=True)
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=base))
    log_file = base / f"{mnt.name}.log"
    stderr_file = base / f"{mnt.name}.stderr"
    argv = [CALDAVFS, "mount", url or server.base_url, str(mnt), "--username", server.username,
            "--log-file", str(log_file), "--cache-ttl", str(ttl), *extra_args]
    m = Mounted(mnt, log_file, stderr_file, argv, time.time())
    try:
        with open(stderr_file, "wb") as err:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                  env=cli_env(server.password, base / f"{mnt.name}.cache"), timeout=MOUNT_TIMEOUT,
                                  check=False)
        assert done.returncode == 0, f"caldavfs mount exited {done.returncode}:\n{m.log()}"
        assert is_mounted(mnt), f"caldavfs mount returned 0 but {mnt} is not in /proc/mounts:\n{m.log()}"
        yield m
    finally:
        try:
            unmount(mnt)
            deadline = time.monotonic() + 10
            while daemon_pids(mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = daemon_pids(mnt)
            for pid in left:  # our own daemon, found by its unique mount point
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            assert not left, f"the caldavfs daemon (pids {left}) did not exit after the unmount"
            log = m.log()
            assert TRACEBACK not in log, f"Python traceback in the caldavfs log or stderr:\n{log}"
        finally:
            with contextlib.suppress(OSError):
                mnt.rmdir()
            if own_dir:
                shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., Mounted]]:
    """`mount_factory(server, ttl=..., extra_args=...)` -> Mounted; unmounted at teardown."""
    with contextlib.ExitStack() as stack:
        def factory(server: servers.Server, *, ttl: float = 60, extra_args: Sequence[str] = ()) -> Mounted:
            return stack.enter_context(mount(server, ttl=ttl, extra_args=extra_args, workdir=tmp_path))
        yield factory


def run(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None, timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a plain tool (ls, cat, rsync, ...) and capture its output."""
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {done.returncode}:\n"
                             f"{done.stderr.decode(errors='replace')}")
    return done


def expected_name(item_name: str) -> str:
    """The file name a mount shows for an item PUT as `item_name` (.ics added where missing)."""
    return item_name if item_name.endswith(".ics") else item_name + ".ics"

