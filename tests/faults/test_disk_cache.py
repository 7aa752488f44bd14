"""The disk cache: folders 0700, files 0600, written atomically; a corrupt or truncated entry is detected,
fetched again and never served; a remount with nothing changed downloads and lists nothing."""

from __future__ import annotations

import json
import os
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
    data_files: list[Path] = []
    for root, dirs, files in os.walk(cache):
        for d in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
            assert mode == 0o700, f"{root}/{d}: {oct(mode)}"
        for f in files:
            path = Path(root) / f
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == 0o600, f"{path}: {oct(mode)}"
            assert not f.startswith(".tmp-"), f"temporary file left behind: {path}"
            if path.parent.parent.name == "data":
                data_files.append(path)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(data_files) == len(expected), sorted(p.name for p in data_files)

    # Damage two entries: a flipped byte inside the data, and a truncation.
    bodies = set(expected.values())
    damaged: list[bytes] = []
    for path in sorted(data_files)[:2]:
        raw = path.read_bytes()
        assert raw[:-32] in bodies
        damaged.append(raw[:-32])
    first, second = sorted(data_files)[:2]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    first.write_bytes(bytes(raw))
    second.write_bytes(second.read_bytes()[: len(second.read_bytes()) // 2])

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
