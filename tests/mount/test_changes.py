"""Changes on the server show up in a mount after --cache-ttl (fresh servers: the data changes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers
from tests.mount.conftest import Mounted, expected_name, run

pytestmark = [pytest.mark.mount, pytest.mark.integration]

TTL = 1.0
# ttl, plus the kernel's attribute/entry cache (attr_timeout=1, entry_timeout=1), plus a margin.
SETTLE = TTL + 1.0 + 0.6


def itemize(src: Path, dest: Path, *extra: str) -> list[str]:
    out = run(["rsync", "-a", "--itemize-changes", *extra, f"{src}/", f"{dest}/"]).stdout.decode()
    return out.splitlines()


def changed_files(lines: list[str]) -> set[str]:
    """Paths rsync transferred as files (`>f...`, `cf...`) from --itemize-changes lines."""
    return {line.split(" ", 1)[1] for line in lines if len(line) > 1 and line[1] == "f"}


@pytest.mark.parametrize("edit", ["same-size", "longer"])
def test_edit_on_server_shows_after_ttl(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path, edit: str) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    item = cal.items["team meeting.ics"]
    m = mount_factory(srv, ttl=TTL)
    path = m.path / "work" / expected_name(item.name)
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"])
    assert path.read_bytes() == item.body
    st0, dir0 = os.stat(path), os.stat(m.path / "work")

    time.sleep(1.1)  # a later second than the seeding, for servers with 1 s getlastmodified
    if edit == "same-size":
        # The hardest case for rsync's quick check: same length, DTSTAMP untouched (many clients do this).
        new = item.sent.replace(b"SUMMARY:Team meeting", b"SUMMARY:Team meetinX")
    else:
        new = servers.make_event(item.uid, "Team meeting, moved to the big room",
                                 extra_lines=["LAST-MODIFIED:20261101T120000Z"])
    assert new != item.sent
    servers.put_item(srv, cal.url, item.name, new, etag=item.etag)
    want = servers.get_item(srv, item.url)
    assert want != item.body
    time.sleep(SETTLE)

    assert path.read_bytes() == want
    st1 = os.stat(path)
    assert st1.st_size == len(want)
    assert (st1.st_size, st1.st_mtime_ns) != (st0.st_size, st0.st_mtime_ns), (
        "a changed item shows the same size and mtime: rsync's quick check would miss it")
    dir1 = os.stat(m.path / "work")
    assert dir1.st_mtime_ns > dir0.st_mtime_ns, "the calendar directory's mtime did not move on an edit"

    lines = itemize(m.path, backup)
    assert changed_files(lines) == {"work/team meeting.ics"}, lines
    for line in lines:  # besides that file, at most directory timestamps
        assert line.split(" ", 1)[1] in ("work/team meeting.ics", "./", "work/"), lines
    assert (backup / "work" / "team meeting.ics").read_bytes() == want
    assert itemize(m.path, backup) == []


def test_delete_and_add_on_server_come_and_go(fresh_server: servers.Server,
                                               mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    srv = fresh_server
    home = srv.dataset["home"]
    gone = home.items["dentist.ics"]
    m = mount_factory(srv, ttl=TTL)
    d = m.path / "home"
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"])
    before = set(os.listdir(d))
    assert "dentist.ics" in before
    dir0 = os.stat(d)

    time.sleep(1.1)
    servers.delete_item(srv, gone.url, gone.etag)
    servers.put_item(srv, home.url, "new one.ics", servers.make_event("new-one@caldavfs.test", "Brand new"))
    new_url = servers.item_url(home.url, "new one.ics")
    new_body = servers.get_item(srv, new_url)
    time.sleep(SETTLE)

    after = set(run(["ls", "-1", str(d)]).stdout.decode().splitlines())
    assert after == (before - {"dentist.ics"}) | {"new one.ics"}
    assert not (d / "dentist.ics").exists()
    assert (d / "new one.ics").read_bytes() == new_body
    assert os.stat(d / "new one.ics").st_size == len(new_body)
    assert os.stat(d).st_mtime_ns > dir0.st_mtime_ns, "the calendar directory's mtime did not move"

    lines = itemize(m.path, backup, "--delete")
    assert changed_files(lines) == {"home/new one.ics"}, lines
    assert "*deleting   home/dentist.ics" in lines, lines
    assert not (backup / "home" / "dentist.ics").exists()
    assert (backup / "home" / "new one.ics").read_bytes() == new_body
    # the other calendars were not touched
    assert not [line for line in lines if line.split(" ", 1)[1].startswith(("work/", "tasks/"))], lines


def test_delete_only_moves_directory_mtime(fresh_server: servers.Server,
                                           mount_factory: Callable[..., Mounted]) -> None:
    """khal takes a calendar folder's mtime as its ctag: a deletion alone must move it too."""
    srv = fresh_server
    work = srv.dataset["work"]
    gone = work.items["alarm.ics"]  # not the newest item: the max of item mtimes would not move
    m = mount_factory(srv, ttl=TTL)
    d = m.path / "work"
    assert "alarm.ics" in os.listdir(d)
    run(["cat", *[str(d / n) for n in os.listdir(d)]])
    dir0 = os.stat(d)
    time.sleep(1.1)
    servers.delete_item(srv, gone.url, gone.etag)
    time.sleep(SETTLE)
    assert "alarm.ics" not in os.listdir(d)
    assert os.stat(d).st_mtime_ns > dir0.st_mtime_ns, "deleting an item did not move the calendar's mtime"
