"""The kernel's attribute cache over a real mount: what it holds is taken back when an item changes
(libfuse 3, ``fuse_invalidate_path``), and what readdirplus hands it is what the daemon answers later.

The invalidation tests cache names and attributes for 30 s (``-o attr_timeout=30,entry_timeout=30``):
with a 1 s entry timeout, any ``stat`` after a second makes the kernel LOOKUP the name again, and a
LOOKUP's reply carries fresh attributes, so a broken invalidation would go unnoticed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers
from tests.mount.conftest import Mounted, daemon_pids, expected_name, run

pytestmark = [pytest.mark.mount, pytest.mark.integration]

TTL = 1.0
LONG_CACHE = ["-o", "attr_timeout=30,entry_timeout=30"]
META = ("displayname", "color")


def _change_size(srv: servers.Server, cal: servers.SeededCalendar, item: servers.SeededItem) -> bytes:
    """Give ``item`` a body of another length on the server; returns the server's new bytes."""
    new = servers.make_event(item.uid, "Team meeting, moved to the big room on the third floor")
    servers.put_item(srv, cal.url, item.name, new, etag=item.etag)
    want = servers.get_item(srv, item.url)
    assert len(want) != len(item.body), "the test's edit must change the item's size"
    return want


@pytest.mark.parametrize("relist_by", ["listdir", "reading-a-sibling"])
def test_changed_item_shows_its_new_size_despite_cached_attributes(
        fresh_server: servers.Server, mount_factory: Callable[..., Mounted], relist_by: str) -> None:
    srv = fresh_server
    work = srv.dataset["work"]
    item = work.items["team meeting.ics"]
    m = mount_factory(srv, ttl=TTL, extra_args=LONG_CACHE)
    folder = m.path / "work"
    path, sibling = folder / item.name, folder / "alarm.ics"

    dir0, st0 = os.stat(folder), os.stat(path)  # both now cached by the kernel for 30 s
    os.stat(sibling)
    assert st0.st_size == len(item.body)
    time.sleep(1.1)  # a later second than the seeding, for servers with 1 s getlastmodified
    want = _change_size(srv, work, item)
    time.sleep(TTL + 0.5)  # past --cache-ttl: the daemon asks the server on its next call

    if relist_by == "listdir":
        # Lists the calendar again (the daemon invalidates the changed item, the folder and "/").
        assert item.name in os.listdir(folder)
    else:
        # The daemon lists the calendar again while opening the sibling; the item itself is not
        # asked: only the invalidation can make the kernel drop its cached size.
        assert sibling.read_bytes() == work.items["alarm.ics"].body

    st1 = os.stat(path)
    assert st1.st_size == len(want), (
        f"expected the new size {len(want)} after the daemon listed the change, got {st1.st_size} "
        f"(the old one was {st0.st_size}): the kernel kept cached attributes the daemon should have invalidated")
    assert path.read_bytes() == want
    assert os.stat(path).st_size == len(want)
    dir1 = os.stat(folder)
    assert dir1.st_mtime_ns > dir0.st_mtime_ns, (
        f"expected the calendar folder's mtime to move past {dir0.st_mtime_ns} on an edit, got {dir1.st_mtime_ns}")


def _snapshot(paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in paths:
        st = os.stat(p)
        out[p.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def test_readdirplus_attributes_match_the_daemons(server: servers.Server,
                                                  mount_factory: Callable[..., Mounted]) -> None:
    m = mount_factory(server)
    names = sorted(os.listdir(m.path))
    assert names == sorted(server.dataset), f"expected the calendars {sorted(server.dataset)}, listed {names}"
    # Entries of "/" carry only their mode: a calendar's attributes come from a LOOKUP.
    roots = _snapshot([m.path / n for n in names])
    firsts: dict[str, dict[str, tuple[int, int, int]]] = {}
    lengths: dict[str, dict[str, int]] = {}
    for cal in names:
        folder = m.path / cal
        entries = [folder / n for n in os.listdir(folder)]
        firsts[cal] = _snapshot(entries)  # straight after the listing: the readdirplus attributes
        lengths[cal] = {p.name: len(p.read_bytes()) for p in entries}
        sizes = {n: size for n, (_, size, _) in firsts[cal].items()}
        assert sizes == lengths[cal], f"{cal}: sizes from the listing differ from the bytes read"

    time.sleep(1.2)  # past attr_timeout and entry_timeout (1 s): now the daemon answers each stat
    assert _snapshot([m.path / n for n in names]) == roots, "a calendar's (ino, size, mtime) changed by itself"
    for cal in names:
        folder = m.path / cal
        again = _snapshot([folder / n for n in firsts[cal]])
        assert again == firsts[cal], (
            f"{cal}: (ino, size, mtime) from readdirplus differ from the daemon's answer 1.2 s later:\n"
            f"{firsts[cal]}\n{again}")

        listing = run(["ls", "-l", "--time-style=+%s", "--quoting-style=literal", str(folder)]).stdout.decode()
        shown: dict[str, tuple[int, int]] = {}
        for line in listing.splitlines():
            if line.startswith("total "):
                continue
            fields = line.split(None, 6)
            assert len(fields) == 7, f"unexpected ls -l line {line!r}"
            shown[fields[6]] = (int(fields[4]), int(fields[5]))
        want = {n: (lengths[cal][n], firsts[cal][n][2] // 1_000_000_000) for n in firsts[cal]}
        assert shown == want, f"{cal}: ls -l shows (size, mtime) {shown}, expected the lengths read {want}"


def test_listing_the_root_hands_out_no_stale_calendar_attributes(
        fresh_server: servers.Server, mount_factory: Callable[..., Mounted]) -> None:
    """The root's listing knows a changed calendar only as stale, with its old mtime: the kernel must
    take the calendar's attributes from a LOOKUP (which lists it), not from the root's readdirplus."""
    srv = fresh_server
    work = srv.dataset["work"]
    attr_timeout = 3.0
    m = mount_factory(srv, ttl=TTL, extra_args=["-o", f"attr_timeout={attr_timeout:g}"])
    dir0 = os.stat(m.path / "work")
    time.sleep(attr_timeout + 0.2)  # the kernel forgets the calendar's attributes ...
    started = time.monotonic()
    os.stat(m.path)  # ... and holds the root's anew, so that listing the root asks for no GETATTR of it
    _change_size(srv, work, work.items["team meeting.ics"])
    time.sleep(TTL + 0.2)  # past --cache-ttl: listing the root asks the server, which marks "work" stale

    assert sorted(os.listdir(m.path)) == sorted(srv.dataset)
    dir1 = os.stat(m.path / "work")
    assert time.monotonic() - started < attr_timeout, "too slow: the root's attributes expired meanwhile"
    assert dir1.st_mtime_ns > dir0.st_mtime_ns, (
        f"after listing the root, the changed calendar shows its old mtime {dir1.st_mtime_ns}; "
        f"expected it past {dir0.st_mtime_ns}: the root's readdirplus gave the kernel stale attributes")


def test_a_second_rsync_finds_nothing_to_do(server: servers.Server, mount_factory: Callable[..., Mounted],
                                            tmp_path: Path) -> None:
    m = mount_factory(server)
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"])
    for cal in server.dataset.values():
        for item in cal.items.values():
            name = item.name if item.name.endswith(".ics") else item.name + ".ics"
            assert (backup / cal.name / name).read_bytes() == item.body, f"{cal.name}/{name} copied wrong"
    for when in ("at once", "after the kernel's caches expired"):
        out = run(["rsync", "-a", "--itemize-changes", f"{m.path}/", f"{backup}/"]).stdout.decode()
        assert out == "", f"a repeated rsync -a ({when}) found changes in an unchanged mount:\n{out}"
        time.sleep(1.2)


def test_libfuse2_fallback_reads_writes_and_backs_up(fresh_radicale: servers.Server, monkeypatch: pytest.MonkeyPatch,
                                                     mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    """Where only libfuse 2 is installed the mount still works: no readdirplus, no invalidation, so
    the kernel caches no attributes (attr_timeout=0), and O_TRUNC arrives with open (atomic_o_trunc)."""
    radicale = fresh_radicale  # it writes
    monkeypatch.setenv("FUSE_LIBRARY_NAME", "fuse")  # what a machine without libfuse 3 would load
    m = mount_factory(radicale, ttl=60)
    pids = daemon_pids(m.path)
    assert pids, "no daemon found for the mount"
    with open(f"/proc/{pids[0]}/maps", encoding="utf-8") as f:
        maps = f.read()
    assert "libfuse.so.2" in maps and "libfuse3" not in maps, "the daemon did not run on libfuse 2"

    for cal in radicale.dataset.values():
        for item in cal.items.values():
            path = m.path / cal.name / expected_name(item.name)
            assert path.read_bytes() == item.body, path
            assert os.stat(path).st_size == len(item.body), path
    backup = tmp_path / "backup"
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"])
    again = run(["rsync", "-a", "--itemize-changes", f"{m.path}/", f"{backup}/"]).stdout.decode()
    assert again == "", f"a second rsync on libfuse 2 found changes:\n{again}"

    # Replacing an item's content with O_TRUNC: one upload of the new bytes, read back at once.
    target = m.path / "work" / "team meeting.ics"
    new = servers.make_event(radicale.dataset["work"].items["team meeting.ics"].uid, "Moved on libfuse 2")
    with open(target, "wb") as f:
        f.write(new)
    assert b"Moved on libfuse 2" in target.read_bytes()
    assert os.stat(target).st_size == len(target.read_bytes())
