"""The disk cache: folders 0700, files 0600 (the SQLite database and its -wal/-shm too), no temporary files
left; a corrupt or truncated entry is detected, fetched again and never served; a remount with nothing changed
downloads and lists nothing."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from caldavfs.client import Client
from caldavfs.dav import DavSession
from tests import servers
from tests.mount.conftest import expected_name, mount

pytestmark = [pytest.mark.mount, pytest.mark.integration]


def _stats(mnt: Path) -> dict[str, object]:
    return json.loads(os.getxattr(mnt, "user.caldavfs.stats"))


def _expected(server: servers.Server) -> dict[str, bytes]:
    return {f"{cal.name}/{expected_name(i.name)}": i.body for cal in server.dataset.values()
            for i in cal.items.values()}


def _read_all(mnt: Path, expected: dict[str, bytes]) -> None:
    for rel, body in expected.items():
        assert (mnt / rel).read_bytes() == body, rel


def test_disk_cache_modes_damage_and_quiet_remount(radicale: servers.Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # does not exist yet: caldavfs creates it
    args = ["--cache-dir", str(cache)]
    expected = _expected(radicale)

    with mount(radicale, extra_args=args, workdir=tmp_path / "m1") as m:
        _read_all(m.path, expected)

    # Modes: every folder 0700, every file 0600; no temporary files left behind.
    databases: list[Path] = []
    for root, dirs, files in os.walk(cache):
        for d in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
            assert mode == 0o700, f"{root}/{d}: {oct(mode)}"
        for f in files:
            path = Path(root) / f
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == 0o600, f"{path}: {oct(mode)}"
            assert not f.startswith(".tmp-"), f"temporary file left behind: {path}"
            if f == "data.sqlite3":
                databases.append(path)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(databases) == 1, databases
    # No per-entry files (data/) any more; the -wal/-shm, if there, were among the files checked above.
    assert set(os.listdir(databases[0].parent)) <= {"account", "listings", "data.sqlite3", "data.sqlite3-wal",
                                                    "data.sqlite3-shm"}, os.listdir(databases[0].parent)

    # One row per item, each holding an item's exact bytes. Damage two rows: a flipped byte inside the
    # data, and a truncation (the stored digest is left as it was).
    bodies = set(expected.values())
    with contextlib.closing(sqlite3.connect(databases[0], isolation_level=None)) as db:
        rows = db.execute("SELECT seq, body FROM entries ORDER BY key").fetchall()
        assert len(rows) == len(expected), len(rows)
        assert {body for _, body in rows} == bodies
        (first, first_body), (second, second_body) = rows[:2]
        flipped = bytearray(first_body)
        flipped[len(flipped) // 3] ^= 0x01
        db.execute("UPDATE entries SET body = ? WHERE seq = ?", (bytes(flipped), first))
        db.execute("UPDATE entries SET body = ? WHERE seq = ?", (second_body[: len(second_body) // 2], second))

    with mount(radicale, extra_args=args, workdir=tmp_path / "m2") as m:
        _read_all(m.path, expected)  # exact server bytes, also for the two damaged entries
        by_method = _stats(m.path)["by_method"]
        assert isinstance(by_method, dict)
        assert by_method.get("REPORT", 0) + by_method.get("GET", 0) >= 1, by_method
        log = m.log()
    assert log.count("damaged") >= 2, log

    # Nothing changed: a third mount reads everything without a REPORT or GET, and lists no calendar.
    probe = Client(DavSession(username=radicale.username, password=radicale.password, timeout=10))
    found = probe.discover(radicale.base_url)
    probe.list_calendars(found.home_url)
    baseline = probe.session.stats.snapshot()["by_method"]
    assert isinstance(baseline, dict)
    with mount(radicale, extra_args=args, workdir=tmp_path / "m3") as m:
        for cal in radicale.dataset:
            os.listdir(m.path / cal)
            for name in os.listdir(m.path / cal):
                os.stat(m.path / cal / name)
        _read_all(m.path, expected)
        by_method = _stats(m.path)["by_method"]
        assert isinstance(by_method, dict)
    assert by_method.get("REPORT", 0) == 0, by_method
    assert by_method.get("GET", 0) == 0, by_method
    assert by_method.get("PROPFIND", 0) <= baseline.get("PROPFIND", 0), (by_method, baseline)
