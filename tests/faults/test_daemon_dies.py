"""The daemon dying (kill -9) must not look like an empty directory (what `rsync --delete` would see):
the mount point answers ENOTCONN, "Transport endpoint is not connected", until `fusermount -u` turns it
back into the plain empty folder it was."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from tests import servers
from tests.mount.conftest import daemon_pids, fusermount, is_mounted, mount, run

pytestmark = [pytest.mark.mount, pytest.mark.integration]


def test_killed_daemon_gives_enotconn_not_an_empty_folder(radicale: servers.Server, tmp_path: Path) -> None:
    with mount(radicale, workdir=tmp_path) as m:
        assert sorted(os.listdir(m.path)) == sorted(radicale.dataset)
        pids = daemon_pids(m.path)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)  # our own daemon, found by its unique mount point
        deadline = time.monotonic() + 10
        while daemon_pids(m.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not daemon_pids(m.path)

        assert is_mounted(m.path), "the dead mount should stay in /proc/mounts until fusermount -u"
        done = run(["ls", str(m.path)], check=False, timeout=20)
        assert done.returncode != 0, f"ls of a dead mount succeeded: {done.stdout!r}"
        assert done.stdout == b""
        assert "Transport endpoint is not connected" in done.stderr.decode(), done.stderr
        with pytest.raises(OSError) as info:
            os.listdir(m.path)
        assert info.value.errno == errno.ENOTCONN
        done = run(["ls", str(m.path / "work")], check=False, timeout=20)
        assert done.returncode != 0 and done.stdout == b""
        # rsync --delete from the dead mount would fail rather than see an empty source.
        dest = tmp_path / "backup"
        dest.mkdir()
        (dest / "keep.ics").write_bytes(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
        rsync = run(["rsync", "-a", "--delete", f"{m.path}/", f"{dest}/"], check=False, timeout=30)
        assert rsync.returncode != 0
        assert (dest / "keep.ics").exists(), "rsync --delete emptied the backup"

        # Recovery: fusermount -u, then the mount point is the plain empty folder again.
        tool = fusermount() or "fusermount"
        done = run([tool, "-u", str(m.path)], check=False, timeout=20)
        assert done.returncode == 0, done.stderr
        assert not is_mounted(m.path)
        assert os.listdir(m.path) == []
