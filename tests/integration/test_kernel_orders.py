"""The write path under the call orders the kernel and libfuse really produce, on real servers.

close(2) returns after FLUSH; the kernel sends RELEASE later, on its own, and libfuse names the file
by its path at that moment: after a rename, the new one; after an unlink or a rename onto it (the
mount runs with hard_remove), none. A read-only open has no FLUSH at all. Each test calls the
operations directly in one such order, then checks the server (plain HTTP), the listing and
the conflicts folder.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from caldavfs.client import Client
from caldavfs.dav import DavSession
from caldavfs.fs import CaldavFS
from caldavfs.fuselib import FuseOSError
from caldavfs.tree import Tree
from caldavfs.writer import Writer
from tests import servers

pytestmark = pytest.mark.integration

TARGET = "/work/team meeting.ics"
WHEN = 1_600_000_000 * 10**9


def _ops(srv: servers.Server, tmp_path: Path) -> CaldavFS:
    client = Client(DavSession(username=srv.username, password=srv.password, timeout=10))
    tree = Tree(client, client.discover(srv.base_url).home_url)
    return CaldavFS(tree, Writer(tree, tmp_path / "conflicts"))


def _read_all(fs: CaldavFS, path: str) -> bytes:
    fh = fs.open(path, os.O_RDONLY)
    try:
        return fs.read(path, 1 << 20, 0, fh)
    finally:
        fs.release(path, fh)


def _listed(fs: CaldavFS, folder: str = "/work") -> set[str]:
    return {e if isinstance(e, str) else e[0] for e in fs.readdir(folder, 0)} - {".", ".."}


def _kept(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "conflicts"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _on_server(srv: servers.Server) -> set[str]:
    return {unquote(h.rstrip("/").rsplit("/", 1)[-1]) for h in servers.list_hrefs(srv, srv.dataset["work"].url)}


def _stored(srv: servers.Server, name: str = "team meeting.ics") -> bytes:
    return servers.get_item(srv, servers.item_url(srv.dataset["work"].url, name))


def _edited(fs: CaldavFS, summary: bytes = b"Team lunch") -> bytes:
    body = _read_all(fs, TARGET).replace(b"SUMMARY:Team meeting", b"SUMMARY:" + summary)
    assert b"SUMMARY:" + summary in body
    return body


def _errno(call: Callable[[], Any]) -> int:
    with pytest.raises(FuseOSError) as info:
        call()
    return int(info.value.errno)


def _requests(fs: CaldavFS, method: str) -> int:
    return fs.tree.client.session.stats.by_method[method]


# --- renamed or removed between close(2) and the kernel's RELEASE -----------------------------------


def test_a_new_file_moved_before_its_release_leaves_nothing_under_the_old_name(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """`cp a.ics mnt/new.ics && mv mnt/new.ics mnt/moved.ics`."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    fh = fs.create("/work/new.ics", 0o600)
    fs.write("/work/new.ics", servers.make_event("moved@caldavfs.test", "Moved"), 0, fh)
    fs.flush("/work/new.ics", fh)
    fs.rename("/work/new.ics", "/work/moved.ics")
    fs.release("/work/moved.ics", fh)

    assert "moved.ics" in _on_server(srv) and "new.ics" not in _on_server(srv)
    assert "moved.ics" in _listed(fs) and "new.ics" not in _listed(fs)
    assert _errno(lambda: fs.getattr("/work/new.ics")) == errno.ENOENT
    # The name is free: a new file under it is new on the server too (If-None-Match: *).
    fh = fs.create("/work/new.ics", 0o600)
    fs.write("/work/new.ics", servers.make_event("again@caldavfs.test", "Again"), 0, fh)
    fs.flush("/work/new.ics", fh)
    fs.release("/work/new.ics", fh)
    assert b"UID:again@caldavfs.test" in _stored(srv, "new.ics")
    assert _kept(tmp_path) == []


def test_an_item_removed_before_its_release_is_gone(fresh_server: servers.Server, tmp_path: Path) -> None:
    """`cat edited > mnt/x.ics && rm mnt/x.ics`: RELEASE comes with no path (hard_remove)."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.write(TARGET, body, 0, fh)
    fs.flush(TARGET, fh)
    fs.unlink(TARGET)
    assert fs.getattr(None, fh)["st_nlink"] == 0  # fstat(2) of the open, removed file
    fs.release(None, fh)

    assert "team meeting.ics" not in _on_server(srv) and "team meeting.ics" not in _listed(fs)
    assert _errno(lambda: fs.getattr(TARGET)) == errno.ENOENT
    assert _kept(tmp_path) == []


def test_writes_to_a_removed_open_file_go_nowhere(fresh_server: servers.Server, tmp_path: Path) -> None:
    """As on a disk: what is written after the unlink is neither uploaded nor kept."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.unlink(TARGET)
    fs.write(None, body, 0, fh)  # type: ignore[arg-type]  # libfuse names a removed file None
    fs.flush(None, fh)
    fs.release(None, fh)
    assert "team meeting.ics" not in _on_server(srv) and "team meeting.ics" not in _listed(fs)
    assert _kept(tmp_path) == []


def test_a_time_set_after_close_and_before_release_is_kept(fresh_server: servers.Server, tmp_path: Path) -> None:
    """shutil.copy2, curl -R, unzip: write, close, then utime(path), maybe before RELEASE."""
    fs = _ops(fresh_server, tmp_path)
    fh = fs.create("/work/copied.ics", 0o600)
    fs.write("/work/copied.ics", servers.make_event("copy2@caldavfs.test", "Copied"), 0, fh)
    fs.flush("/work/copied.ics", fh)
    fs.utimens("/work/copied.ics", (WHEN, WHEN))
    fs.release("/work/copied.ics", fh)
    assert fs.getattr("/work/copied.ics")["st_mtime"] == WHEN


def test_touch_of_an_item_opened_for_writing_sets_its_time(fresh_server: servers.Server, tmp_path: Path) -> None:
    """GNU touch opens the file (O_WRONLY|O_CREAT), then futimens(fd), then closes: nothing written."""
    fs = _ops(fresh_server, tmp_path)
    before = _read_all(fs, TARGET)
    fh = fs.open(TARGET, os.O_WRONLY | os.O_CREAT)
    fs.utimens(TARGET, (WHEN, WHEN))
    fs.flush(TARGET, fh)
    fs.release(TARGET, fh)
    assert fs.getattr(TARGET)["st_mtime"] == WHEN
    assert _read_all(fs, TARGET) == before


def test_stat_between_close_and_release_is_the_stored_version(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """vim stats the file after writing it to remember its mtime; the stat may beat RELEASE. It must
    say what it says after: the server's version (servers rewrite what they store)."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.write(TARGET, body, 0, fh)
    fs.fsync(TARGET, 0, fh)
    fs.flush(TARGET, fh)
    before = fs.getattr(TARGET)
    shown = _read_all(fs, TARGET)
    fs.release(TARGET, fh)
    after = fs.getattr(TARGET)
    assert (before["st_mtime"], before["st_size"]) == (after["st_mtime"], after["st_size"])
    assert shown == _stored(srv) and len(shown) == before["st_size"]


def test_saving_twice_before_the_first_release(fresh_server: servers.Server, tmp_path: Path) -> None:
    """vim's default save (backup by rename, write anew, fsync) done twice in quick succession."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    backup = "/work/team meeting.ics~"
    first = _edited(fs)
    fs.rename(TARGET, backup)
    fh1 = fs.create(TARGET, 0o600)
    fs.write(TARGET, first, 0, fh1)
    fs.fsync(TARGET, 0, fh1)
    fs.flush(TARGET, fh1)
    fs.unlink(backup)
    fs.rename(TARGET, backup)  # the second :w, while fh1's RELEASE is still on its way
    assert _errno(lambda: fs.getattr(TARGET)) == errno.ENOENT  # so the kernel sends CREATE
    fh2 = fs.create(TARGET, 0o600)
    fs.write(TARGET, first.replace(b"Team lunch", b"Team dinner"), 0, fh2)
    fs.fsync(TARGET, 0, fh2)
    fs.flush(TARGET, fh2)
    fs.release(backup, fh1)
    fs.release(TARGET, fh2)
    fs.unlink(backup)
    assert b"SUMMARY:Team dinner" in _stored(srv)
    assert _listed(fs) >= {"team meeting.ics"} and "team meeting.ics~" not in _listed(fs)
    assert _kept(tmp_path) == []


# --- open while renamed, or while replaced ---------------------------------------------------------


def test_an_item_moved_while_open_for_writing_is_saved_under_its_new_name(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    fh = fs.open(TARGET, os.O_RDWR)
    fs.write(TARGET, body, 0, fh)
    fs.rename(TARGET, "/work/lunch.ics")
    later = body.replace(b"Team lunch", b"Team brunch")
    fs.truncate("/work/lunch.ics", 0, fh)
    fs.write("/work/lunch.ics", later, 0, fh)
    fs.flush("/work/lunch.ics", fh)
    fs.release("/work/lunch.ics", fh)

    assert "team meeting.ics" not in _on_server(srv) and "team meeting.ics" not in _listed(fs)
    assert b"SUMMARY:Team brunch" in _stored(srv, "lunch.ics")
    assert _read_all(fs, "/work/lunch.ics") == _stored(srv, "lunch.ics")
    assert _kept(tmp_path) == []


def test_a_temp_file_written_after_its_rename_saves_the_last_bytes(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """write, fsync, rename into place, rewrite shorter, ftruncate(fd), close."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    tmp = "/work/.team meeting.ics.new"
    fh = fs.create(tmp, 0o600)
    fs.write(tmp, body, 0, fh)
    fs.fsync(tmp, 0, fh)
    fs.rename(tmp, TARGET)
    shorter = body.replace(b"SUMMARY:Team lunch", b"SUMMARY:Lunch")
    fs.write(TARGET, shorter, 0, fh)
    fs.truncate(TARGET, len(shorter), fh)
    fs.flush(TARGET, fh)
    fs.release(TARGET, fh)
    stored = _stored(srv)
    assert b"SUMMARY:Lunch" in stored and stored.count(b"END:VCALENDAR") == 1
    assert _kept(tmp_path) == []


def test_replacing_an_item_open_for_reading_updates_it(fresh_server: servers.Server, tmp_path: Path) -> None:
    """`sed -i` while the file is open for reading (less, or sed's own input, whose RELEASE comes
    late): one PUT with If-Match, no DELETE; the reader keeps the version it opened."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    original = _read_all(fs, TARGET)
    reader = fs.open(TARGET, os.O_RDONLY)
    deletes = _requests(fs, "DELETE")
    fh = fs.create("/work/sedAb12Cd", 0o600)
    fs.write("/work/sedAb12Cd", original.replace(b"SUMMARY:Team meeting", b"SUMMARY:Team lunch"), 0, fh)
    fs.flush("/work/sedAb12Cd", fh)
    fs.rename("/work/sedAb12Cd", TARGET)
    fs.release(TARGET, fh)
    assert fs.read(None, 1 << 20, 0, reader) == original  # type: ignore[arg-type]
    fs.release(None, reader)

    assert _requests(fs, "DELETE") == deletes
    assert b"SUMMARY:Team lunch" in _stored(srv) and _read_all(fs, TARGET) == _stored(srv)
    assert _listed(fs) == {n if n.endswith(".ics") else n + ".ics" for n in srv.dataset["work"].items} | {
        "displayname", "color"}
    assert _kept(tmp_path) == []


def test_a_refused_replacement_keeps_the_original(fresh_server: servers.Server, tmp_path: Path) -> None:
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    original = _stored(srv)
    reader = fs.open(TARGET, os.O_RDONLY)
    fh = fs.create("/work/sedAb12Cd", 0o600)
    fs.write("/work/sedAb12Cd", b"SUMMARY:not a calendar\n", 0, fh)
    fs.flush("/work/sedAb12Cd", fh)
    assert _errno(lambda: fs.rename("/work/sedAb12Cd", TARGET)) == errno.EINVAL
    fs.release("/work/sedAb12Cd", fh)
    fs.unlink("/work/sedAb12Cd")
    fs.release(TARGET, reader)
    assert _stored(srv) == original
    assert [p.read_bytes() for p in _kept(tmp_path)] == [b"SUMMARY:not a calendar\n"]


def test_replacing_an_item_open_for_writing_shows_the_new_version(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """x.ics held open for writing elsewhere while sed/rsync rename a temp onto it: the holder's
    file is replaced (its later writes go nowhere), and the mount shows what was saved."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    holder = fs.open(TARGET, os.O_RDWR)
    fh = fs.create("/work/sedAb12Cd", 0o600)
    fs.write("/work/sedAb12Cd", body, 0, fh)
    fs.flush("/work/sedAb12Cd", fh)
    fs.rename("/work/sedAb12Cd", TARGET)
    fs.release(TARGET, fh)
    assert _read_all(fs, TARGET) == _stored(srv) and b"SUMMARY:Team lunch" in _stored(srv)
    fs.write(None, b"late", 0, holder)  # type: ignore[arg-type]
    fs.flush(None, holder)
    fs.release(None, holder)
    assert _read_all(fs, TARGET) == _stored(srv) and b"SUMMARY:Team lunch" in _stored(srv)
    # the next edit is based on the saved version: no 412
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.write(TARGET, _stored(srv).replace(b"Team lunch", b"Team dinner"), 0, fh)
    fs.flush(TARGET, fh)
    fs.release(TARGET, fh)
    assert b"SUMMARY:Team dinner" in _stored(srv)
    assert _kept(tmp_path) == []


# --- several FLUSHes on one open file; empty files ---------------------------------------------------


def test_a_calendar_written_through_two_descriptors_is_one_upload(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """`{ echo BEGIN:VCALENDAR; cat events; echo END:VCALENDAR; } > x.ics`: cat's exit closes its copy
    of the file (a FLUSH) before the end is written."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    cut = body.index(b"END:VCALENDAR")
    puts = _requests(fs, "PUT")
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.flush(TARGET, fh)  # the shell closes the descriptor it dup2'd
    fs.write(TARGET, body[:cut], 0, fh)
    fs.flush(TARGET, fh)  # cat exits
    fs.write(TARGET, body[cut:], cut, fh)
    fs.flush(TARGET, fh)  # the shell closes the redirection
    fs.release(TARGET, fh)
    assert _requests(fs, "PUT") == puts + 1
    assert b"SUMMARY:Team lunch" in _stored(srv)
    assert _kept(tmp_path) == []


def test_an_unfinished_calendar_is_kept_at_the_last_close(fresh_server: servers.Server, tmp_path: Path) -> None:
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    original = _stored(srv)
    body = _read_all(fs, TARGET)
    half = body[:body.index(b"END:VCALENDAR")]
    fh = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.write(TARGET, half, 0, fh)
    fs.flush(TARGET, fh)
    _errno(lambda: fs.release(TARGET, fh))  # nobody waits for RELEASE's answer; the log says it
    assert _stored(srv) == original
    assert [p.read_bytes() for p in _kept(tmp_path)] == [half]
    assert _read_all(fs, TARGET) == original


def test_an_empty_file_moves_and_cannot_replace_an_item(fresh_server: servers.Server, tmp_path: Path) -> None:
    """`touch a.ics; mv a.ics b.ics` renames a placeholder; `mv a.ics existing.ics` is refused."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    original = _stored(srv)
    fh = fs.create("/work/a.ics", 0o600)
    fs.flush("/work/a.ics", fh)
    fs.release("/work/a.ics", fh)
    fs.rename("/work/a.ics", "/work/b.ics")
    assert "b.ics" in _listed(fs) and "a.ics" not in _listed(fs)
    assert fs.getattr("/work/b.ics")["st_size"] == 0
    assert _errno(lambda: fs.rename("/work/b.ics", TARGET)) == errno.EINVAL
    assert _stored(srv) == original and "b.ics" in _listed(fs)
    assert _kept(tmp_path) == []


def test_truncate_by_path_that_cuts_the_end_is_kept(fresh_server: servers.Server, tmp_path: Path) -> None:
    """`truncate -s N x.ics` on a closed item: nothing else holds it, so an unfinished calendar is
    refused now (EINVAL, the bytes kept), not held back for a close that never comes."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    original = _stored(srv)
    body = _read_all(fs, TARGET)
    cut = body.index(b"END:VCALENDAR")
    assert _errno(lambda: fs.truncate(TARGET, cut)) == errno.EINVAL
    assert "team meeting.ics" not in fs.tree.calendar("work").local
    assert _read_all(fs, TARGET) == original == _stored(srv)
    assert [p.read_bytes() for p in _kept(tmp_path)] == [body[:cut]]


def test_one_writers_release_leaves_another_writers_calendar_alone(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """Two opens of one file (`exec 3>x.ics`, then a `>>`): the first RELEASE is not the last
    close, so its unfinished calendar waits for the other writer."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = _edited(fs)
    cut = body.index(b"END:VCALENDAR")
    fh1 = fs.open(TARGET, os.O_WRONLY | os.O_TRUNC)
    fs.write(TARGET, body[:cut], 0, fh1)
    fh2 = fs.open(TARGET, os.O_WRONLY | os.O_APPEND)
    fs.flush(TARGET, fh1)
    fs.release(TARGET, fh1)
    fs.write(TARGET, body[cut:], cut, fh2)
    fs.flush(TARGET, fh2)
    fs.release(TARGET, fh2)
    assert b"SUMMARY:Team lunch" in _stored(srv)
    assert _kept(tmp_path) == []


def test_a_write_open_before_the_last_release_starts_from_what_the_mount_shows(
        fresh_server: servers.Server, tmp_path: Path) -> None:
    """Uploaded, RELEASE still on its way: stat shows the stored version (servers rewrite LF as
    CRLF), so a second open for writing reads that too; an O_APPEND write lands at its end."""
    srv, fs = fresh_server, _ops(fresh_server, tmp_path)
    body = servers.make_event("lf@caldavfs.test", "LF only").replace(b"\r\n", b"\n")
    fh1 = fs.create("/work/lf.ics", 0o600)
    fs.write("/work/lf.ics", body, 0, fh1)
    fs.flush("/work/lf.ics", fh1)
    shown = fs.getattr("/work/lf.ics")["st_size"]
    fh2 = fs.open("/work/lf.ics", os.O_RDWR)
    assert fs.read("/work/lf.ics", 1 << 20, 0, fh2) == _stored(srv, "lf.ics")
    assert len(_stored(srv, "lf.ics")) == shown
    fs.release("/work/lf.ics", fh2)
    fs.release("/work/lf.ics", fh1)
    assert _kept(tmp_path) == []
