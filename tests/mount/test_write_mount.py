"""Writing through a real mount, on fresh Radicale and Xandikos servers (issue 5).

Every check compares with what a plain HTTP GET / PROPFIND of the server says (tests.servers), never
with what was written: both servers re-serialise what they are sent.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from lxml import etree

from tests import servers
from tests.mount.conftest import Mounted, expected_name, run

pytestmark = [pytest.mark.mount, pytest.mark.integration]

TTL = 1.0
# ttl, plus the kernel's attribute/entry cache (attr_timeout=1, entry_timeout=1), plus a margin.
SETTLE = TTL + 1.0 + 0.6


# --- helpers ---------------------------------------------------------------------------------------


def mount_rw(mount_factory: Callable[..., Mounted], srv: servers.Server, tmp_path: Path, *,
             ttl: float = 60, extra_args: Sequence[str] = ()) -> tuple[Mounted, Path]:
    """A mount with its own --cache-dir (so the conflicts folder is known); returns (mount, cache dir)."""
    cache = tmp_path / "cache"
    m = mount_factory(srv, ttl=ttl, extra_args=["--cache-dir", str(cache), *extra_args])
    return m, cache


def server_names(srv: servers.Server, cal_url: str) -> set[str]:
    """Decoded last segments of every member of a calendar on the server."""
    return {unquote(urlsplit(h).path.rstrip("/").rsplit("/", 1)[-1]) for h in servers.list_hrefs(srv, cal_url)}


def server_body(srv: servers.Server, cal_url: str, name: str) -> bytes:
    return servers.get_item(srv, servers.item_url(cal_url, name))


def server_status(srv: servers.Server, url: str) -> int:
    return srv.request("GET", url, headers={"Accept-Encoding": "identity"}).status_code


def server_calendars(srv: servers.Server) -> set[str]:
    """Decoded names of the collections in the calendar home-set (Xandikos answers 207 to a PROPFIND of a
    deleted calendar, so existence is judged from the home-set's listing)."""
    return server_names(srv, srv.home_url)


def cal_url_for(srv: servers.Server, name: str) -> str:
    return srv.home_url.rstrip("/") + "/" + name + "/"


def propfind_prop(srv: servers.Server, url: str, ns: str, prop: str) -> tuple[int, str | None]:
    body = (f'<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" xmlns:X="{ns}">'
            f"<D:prop><X:{prop}/></D:prop></D:propfind>").encode()
    r = srv.request("PROPFIND", url, data=body, headers={"Depth": "0", **servers.XML_HEADERS})
    if r.status_code != 207:
        return r.status_code, None
    root = etree.fromstring(r.content, etree.XMLParser(resolve_entities=False, no_network=True))
    for ps in root.iter(f"{{{servers.NS_DAV}}}propstat"):
        if " 200 " in (ps.findtext(f"{{{servers.NS_DAV}}}status") or ""):
            el = ps.find(f"{{{servers.NS_DAV}}}prop/{{{ns}}}{prop}")
            if el is not None:
                return 207, el.text or ""
    return 207, None


def conflict_files(cache: Path, cal: str) -> list[Path]:
    folder = cache / "conflicts" / cal
    return sorted(folder.iterdir()) if folder.is_dir() else []


def normalised(ics: bytes) -> list[bytes]:
    """Unfolded content lines, sorted: equal for two serialisations of the same data."""
    text = ics.replace(b"\r\n", b"\n").replace(b"\n ", b"").replace(b"\n\t", b"")
    return sorted(line for line in text.split(b"\n") if line)


def write_and_close(path: Path, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    """open/write/close with os calls, so that close()'s error reaches the caller unmasked."""
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)


def assert_mount_shows_server(path: Path, want: bytes) -> None:
    assert os.stat(path).st_size == len(want), f"{path}: size {os.stat(path).st_size}, server has {len(want)}"
    assert path.read_bytes() == want


def assert_valid_ics(data: bytes, *must: bytes) -> None:
    assert data.startswith(b"BEGIN:VCALENDAR"), data[:200]
    assert data.rstrip().endswith(b"END:VCALENDAR"), data[-200:]
    for m in must:
        assert m in data, (m, data)


def itemize(src: Path, dest: Path) -> list[str]:
    out = run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{dest}/"], timeout=120).stdout.decode()
    return out.splitlines()


# --- creating, appending, editing ------------------------------------------------------------------


def test_cp_new_event(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                      tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    src = tmp_path / "invite.ics"
    src.write_bytes(servers.make_event("invite@caldavfs.test", "Invitation from a mail", line_ending="\n"))
    run(["cp", str(src), str(m.path / "work" / "invite.ics")])

    assert server_names(srv, cal.url) == set(cal.items) | {"invite.ics"}
    want = server_body(srv, cal.url, "invite.ics")
    assert_valid_ics(want, b"UID:invite@caldavfs.test", b"SUMMARY:Invitation from a mail")
    assert_mount_shows_server(m.path / "work" / "invite.ics", want)
    assert "invite.ics" in os.listdir(m.path / "work")


def test_append_with_shell_redirection(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                       tmp_path: Path) -> None:
    """`echo >> file.ics`: what a user appends by mistake or on purpose (a trailing blank line) must end in
    one upload the server accepts, and the mount then shows the server's bytes."""
    srv = fresh_server
    cal = srv.dataset["work"]
    item = cal.items["team meeting.ics"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    assert path.read_bytes() == item.body
    run(["sh", "-c", 'echo >> "$1"', "sh", str(path)])

    assert server_names(srv, cal.url) == set(cal.items)
    want = server_body(srv, cal.url, item.name)
    assert_valid_ics(want, b"UID:team-meeting@caldavfs.test", b"SUMMARY:Team meeting")
    assert_mount_shows_server(path, want)
    assert conflict_files(cache, "work") == []


def test_append_event_to_a_copy_then_cp(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    """Appending to a scratch copy (`cat a >> notes.txt`) stays local; copying it in as .ics uploads."""
    srv = fresh_server
    cal = srv.dataset["home"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    scratch = m.path / "home" / "notes.txt"
    run(["sh", "-c", 'cat "$1" >> "$2"', "sh", str(m.path / "home" / "dentist.ics"), str(scratch)])
    assert scratch.read_bytes() == cal.items["dentist.ics"].body
    assert server_names(srv, cal.url) == set(cal.items)
    body = cal.items["dentist.ics"].body.replace(b"dentist@caldavfs.test", b"dentist-2@caldavfs.test")
    scratch.write_bytes(body)
    run(["cp", str(scratch), str(m.path / "home" / "dentist-2.ics")])
    scratch.unlink()
    assert server_names(srv, cal.url) == set(cal.items) | {"dentist-2.ics"}
    want = server_body(srv, cal.url, "dentist-2.ics")
    assert_valid_ics(want, b"UID:dentist-2@caldavfs.test")
    assert_mount_shows_server(m.path / "home" / "dentist-2.ics", want)
    assert "notes.txt" not in os.listdir(m.path / "home")


def test_sed_in_place(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                      tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    run(["sed", "-i", "s/^SUMMARY:Team meeting/SUMMARY:Team lunch/", str(path)])

    want = server_body(srv, cal.url, "team meeting.ics")
    assert b"SUMMARY:Team lunch" in want and b"SUMMARY:Team meeting" not in want
    assert server_names(srv, cal.url) == set(cal.items)  # sed's temp file never reached the server
    assert_mount_shows_server(path, want)
    listed = set(os.listdir(m.path / "work"))
    assert listed == {expected_name(n) for n in cal.items} | {"displayname", "color"}, listed
    assert conflict_files(cache, "work") == []


def _requests(m: Mounted, method: str) -> int:
    return int(json.loads(os.getxattr(m.path, "user.caldavfs.stats"))["by_method"].get(method, 0))


def test_sed_in_place_while_the_file_is_open(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                             tmp_path: Path) -> None:
    """`sed -i` on a file another program holds open (less, tail -f): an update (PUT with If-Match),
    not a DELETE and a new item; the open file keeps reading the version it opened, as on a disk."""
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    before = path.read_bytes()
    with open(path, "rb") as reader:
        deletes = _requests(m, "DELETE")
        run(["sed", "-i", "s/^SUMMARY:Team meeting/SUMMARY:Team lunch/", str(path)])
        assert _requests(m, "DELETE") == deletes
        assert reader.read() == before
        assert reader.seek(0, os.SEEK_END) == len(before)  # a GETATTR with the open file's handle
    want = server_body(srv, cal.url, "team meeting.ics")
    assert b"SUMMARY:Team lunch" in want
    assert_mount_shows_server(path, want)
    assert set(os.listdir(m.path / "work")) == {expected_name(n) for n in cal.items} | {"displayname", "color"}
    assert conflict_files(cache, "work") == []


def test_writes_to_a_removed_open_file_go_nowhere(fresh_server: servers.Server,
                                                  mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    body = path.read_bytes().replace(b"SUMMARY:Team meeting", b"SUMMARY:Team lunch")
    puts = _requests(m, "PUT")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.unlink(path)
        assert os.write(fd, body) == len(body)
        os.ftruncate(fd, 10)  # reaches caldavfs with its open file: libfuse knows it by no name now
    finally:
        os.close(fd)
    assert _requests(m, "PUT") == puts
    assert "team meeting.ics" not in server_names(srv, cal.url)
    assert "team meeting.ics" not in os.listdir(m.path / "work")
    assert conflict_files(cache, "work") == []


def test_a_temp_file_cut_short_after_its_rename(fresh_server: servers.Server,
                                                mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    """write, fsync, rename into place, rewrite shorter, ftruncate(fd), close: the last bytes are
    saved (ftruncate reaches caldavfs with its open file, not by a name that moved)."""
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    body = path.read_bytes().replace(b"SUMMARY:Team meeting", b"SUMMARY:Team lunch")
    shorter = body.replace(b"SUMMARY:Team lunch", b"SUMMARY:Lunch")
    temp = m.path / "work" / ".team meeting.ics.new"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
        os.rename(temp, path)
        os.pwrite(fd, shorter, 0)
        os.ftruncate(fd, len(shorter))
    finally:
        os.close(fd)
    want = server_body(srv, cal.url, "team meeting.ics")
    assert b"SUMMARY:Lunch" in want and want.count(b"END:VCALENDAR") == 1
    assert_mount_shows_server(path, want)
    assert conflict_files(cache, "work") == []


def test_append_before_the_last_release(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                       tmp_path: Path) -> None:
    """A file written with LF (servers store CRLF, which is longer), its RELEASE held back by a
    second descriptor, then `>>`: the append lands at the end of what the mount shows."""
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "lf.ics"
    body = servers.make_event("lf@caldavfs.test", "LF only").replace(b"\r\n", b"\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, body)
    held = os.dup(fd)
    os.close(fd)  # FLUSH: uploaded; no RELEASE while `held` is open
    try:
        stored = server_body(srv, cal.url, "lf.ics")
        assert os.stat(path).st_size == len(stored)
        appender = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(appender, b"X-NOTE:appended\n")
        finally:
            with contextlib.suppress(OSError):  # a line after END:VCALENDAR: the server may refuse it
                os.close(appender)
    finally:
        os.close(held)
    now = server_body(srv, cal.url, "lf.ics")
    assert b"\0" not in now
    assert_mount_shows_server(path, now)
    kept = [p.read_bytes() for p in conflict_files(cache, "work")]
    assert kept in ([], [stored + b"X-NOTE:appended\n"]), kept  # refused: kept as written, no gap


def test_touch_sets_and_leaves_an_items_time(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                            tmp_path: Path) -> None:
    """GNU touch opens the file for writing and sets times through it (futimens): `touch -d` sets
    the mtime; `touch -a` (UTIME_OMIT for the mtime) leaves it alone."""
    srv = fresh_server
    m, _cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "team meeting.ics"
    before = os.stat(path).st_mtime_ns
    run(["touch", "-a", str(path)])
    time.sleep(SETTLE)
    assert os.stat(path).st_mtime_ns == before
    run(["touch", "-d", "@1600000000", str(path)])
    time.sleep(SETTLE)
    assert os.stat(path).st_mtime_ns == 1_600_000_000 * 10**9


def test_vim_style_save_temp_and_rename(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    item = cal.items["alarm.ics"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    folder = m.path / "work"
    new = (folder / "alarm.ics").read_bytes().replace(b"SUMMARY:With a reminder", b"SUMMARY:Edited in vim")
    tmp = folder / ".alarm.ics.tmp"
    write_and_close(tmp, new)
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, folder / "alarm.ics")

    want = server_body(srv, cal.url, item.name)
    assert b"SUMMARY:Edited in vim" in want
    assert server_names(srv, cal.url) == set(cal.items)
    assert_mount_shows_server(folder / "alarm.ics", want)
    assert ".alarm.ics.tmp" not in os.listdir(folder)


def test_backupcopy_yes_style_save_truncate_and_write(fresh_server: servers.Server,
                                                      mount_factory: Callable[..., Mounted],
                                                      tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "a+b.ics"
    # No bare comma in the new text: Radicale (vobject) silently drops a TEXT value after an unescaped one.
    new = path.read_bytes().replace(b"SUMMARY:a+b", b"SUMMARY:a+b rewritten in place")
    write_and_close(path, new, os.O_WRONLY | os.O_TRUNC)

    want = server_body(srv, cal.url, "a+b.ics")
    assert b"SUMMARY:a+b rewritten in place" in want, want
    assert server_names(srv, cal.url) == set(cal.items)
    assert_mount_shows_server(path, want)


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
@pytest.mark.parametrize("backupcopy", ["auto", "yes", "no"])
def test_real_vim_save(fresh_server: servers.Server, mount_factory: Callable[..., Mounted], tmp_path: Path,
                       backupcopy: str) -> None:
    """vim itself: its 4913 probe, .swp swap file and `file~` backup are scratch; the item ends up edited."""
    srv = fresh_server
    cal = srv.dataset["home"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "home" / "dentist.ics"
    done = subprocess.run(["vim", "-E", "-s", "-u", "NONE", "-i", "NONE", "-c", "set nocompatible",
                           "-c", f"set backupcopy={backupcopy}", "-c", "%s/^SUMMARY:Dentist/SUMMARY:Dentist at 4/",
                           "-c", "wq", str(path)], capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, HOME=str(tmp_path)), check=False)
    assert done.returncode == 0, (done.stdout, done.stderr, m.log())
    want = server_body(srv, cal.url, "dentist.ics")
    assert b"SUMMARY:Dentist at 4" in want
    assert server_names(srv, cal.url) == set(cal.items)
    assert_mount_shows_server(path, want)
    assert set(os.listdir(m.path / "home")) == {expected_name(n) for n in cal.items} | {"displayname"}
    assert conflict_files(cache, "home") == []


def test_khal_pattern_temp_link_unlink(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                       tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["tasks"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    folder = m.path / "tasks"
    final = folder / "khal-made.ics"
    fd, tmp = tempfile.mkstemp(prefix=final.name, dir=folder)
    try:
        data = servers.make_todo("khal-made@caldavfs.test", "Made by khal")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    assert os.path.basename(tmp) in os.listdir(folder)
    os.link(tmp, final)
    os.unlink(tmp)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)

    assert server_names(srv, cal.url) == set(cal.items) | {"khal-made.ics"}
    want = server_body(srv, cal.url, "khal-made.ics")
    assert_valid_ics(want, b"UID:khal-made@caldavfs.test", b"SUMMARY:Made by khal")
    assert_mount_shows_server(final, want)
    listed = set(os.listdir(folder))
    assert os.path.basename(tmp) not in listed
    assert listed == {expected_name(n) for n in cal.items} | {"displayname", "khal-made.ics"}, listed


def test_rm_deletes_on_server(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                              tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["home"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    run(["rm", str(m.path / "home" / "dentist.ics")])
    assert server_names(srv, cal.url) == set(cal.items) - {"dentist.ics"}
    assert server_status(srv, cal.items["dentist.ics"].url) == 404
    assert "dentist.ics" not in os.listdir(m.path / "home")
    assert not (m.path / "home" / "dentist.ics").exists()


# --- calendars ----------------------------------------------------------------------------------


def test_mkdir_then_copy_items_in(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                  tmp_path: Path) -> None:
    srv = fresh_server
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    os.mkdir(m.path / "newcal")
    assert "newcal" in os.listdir(m.path)
    url = cal_url_for(srv, "newcal")
    assert "newcal" in server_calendars(srv), "MKCALENDAR did not create the calendar on the server"
    assert server_names(srv, url) == set()

    src = tmp_path / "src"
    src.mkdir()
    (src / "one.ics").write_bytes(servers.make_event("one@caldavfs.test", "One"))
    (src / "two.ics").write_bytes(servers.make_todo("two@caldavfs.test", "Two"))
    run(["cp", str(src / "one.ics"), str(src / "two.ics"), str(m.path / "newcal")])

    assert server_names(srv, url) == {"one.ics", "two.ics"}
    for name in ("one.ics", "two.ics"):
        want = server_body(srv, url, name)
        assert_valid_ics(want, f"UID:{name[:-4]}@caldavfs.test".encode())
        assert_mount_shows_server(m.path / "newcal" / name, want)


def test_rmdir_empty_calendar(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                              tmp_path: Path) -> None:
    srv = fresh_server
    url = servers.mkcalendar(srv, "empty", "Empty one")
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    assert "empty" in os.listdir(m.path)
    assert "empty" in server_calendars(srv)
    os.rmdir(m.path / "empty")
    assert "empty" not in server_calendars(srv)
    assert srv.request("PROPFIND", url, headers={"Depth": "1", **servers.XML_HEADERS}).status_code in (207, 404)
    assert "empty" not in os.listdir(m.path)
    assert set(os.listdir(m.path)) == set(srv.dataset)


def test_rmdir_non_empty_calendar_fails(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["home"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    with pytest.raises(OSError) as exc:
        os.rmdir(m.path / "home")
    assert exc.value.errno == errno.ENOTEMPTY
    assert server_names(srv, cal.url) == set(cal.items)
    assert "home" in server_calendars(srv)
    assert "home" in os.listdir(m.path)


def test_write_displayname(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                           tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    path = m.path / "work" / "displayname"
    assert path.read_bytes().decode() == cal.displayname
    write_and_close(path, "Büro 2\n".encode())

    status, value = propfind_prop(srv, cal.url, servers.NS_DAV, "displayname")
    assert (status, value) == (207, "Büro 2")
    assert_mount_shows_server(path, "Büro 2".encode())
    assert server_names(srv, cal.url) == set(cal.items)


# --- nothing lost -------------------------------------------------------------------------------


def test_412_keeps_local_bytes(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                               tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    item = cal.items["team meeting.ics"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)  # ttl 60: the mount still believes the old etag
    path = m.path / "work" / "team meeting.ics"
    old = path.read_bytes()
    assert old == item.body

    theirs = item.sent.replace(b"SUMMARY:Team meeting", b"SUMMARY:Changed on the phone")
    servers.put_item(srv, cal.url, item.name, theirs, etag=item.etag)
    server_version = server_body(srv, cal.url, item.name)
    assert b"Changed on the phone" in server_version

    mine = old.replace(b"SUMMARY:Team meeting", b"SUMMARY:Changed in the mount")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.write(fd, mine) == len(mine)
    except BaseException:
        os.close(fd)
        raise
    with pytest.raises(OSError) as exc:
        os.close(fd)
    assert exc.value.errno == errno.EIO, exc.value

    kept = conflict_files(cache, "work")
    assert len(kept) == 1, kept
    assert kept[0].name.endswith("-team meeting.ics"), kept
    assert kept[0].read_bytes() == mine
    assert server_body(srv, cal.url, item.name) == server_version
    assert server_names(srv, cal.url) == set(cal.items)


def test_412_after_the_listing_caught_up(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    """The user read version 1; the server got version 2 and the mount has listed it since (short
    TTL); writing over it must still be a conflict (If-Match the version read), and a deliberate
    second write then wins."""
    srv = fresh_server
    cal = srv.dataset["work"]
    item = cal.items["team meeting.ics"]
    m, cache = mount_rw(mount_factory, srv, tmp_path, ttl=1)
    path = m.path / "work" / "team meeting.ics"
    old = path.read_bytes()
    servers.put_item(srv, cal.url, item.name, item.sent.replace(b"SUMMARY:Team meeting", b"SUMMARY:Phone"),
                     etag=item.etag)
    server_version = server_body(srv, cal.url, item.name)
    time.sleep(2.5)
    os.listdir(m.path / "work")  # the mount lists the calendar again and sees version 2
    mine = old.replace(b"SUMMARY:Team meeting", b"SUMMARY:Mount")
    with pytest.raises(OSError) as exc:
        write_and_close(path, mine, os.O_WRONLY | os.O_TRUNC)
    assert exc.value.errno == errno.EIO, exc.value
    assert server_body(srv, cal.url, item.name) == server_version
    assert [k.read_bytes() for k in conflict_files(cache, "work")] == [mine]

    write_and_close(path, mine, os.O_WRONLY | os.O_TRUNC)  # told once, the user insists
    assert b"SUMMARY:Mount" in server_body(srv, cal.url, item.name)


def test_invalid_data_rejected_and_kept(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path)
    junk = b"this is not a calendar\njust some notes\n"
    with pytest.raises(OSError) as exc:
        write_and_close(m.path / "work" / "x.ics", junk)
    assert exc.value.errno == errno.EINVAL, exc.value
    kept = conflict_files(cache, "work")
    assert len(kept) == 1 and kept[0].name.endswith("-x.ics"), kept
    assert kept[0].read_bytes() == junk
    assert server_names(srv, cal.url) == set(cal.items)
    assert "not saved on the server" in m.log()


def test_scratch_files_listed_never_uploaded(fresh_server: servers.Server,
                                             mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    folder = m.path / "work"
    swp, tmp = folder / ".team meeting.ics.swp", folder / "foo.tmp"
    swp.write_bytes(b"\x00vim swap\x00" * 100)
    tmp.write_bytes(servers.make_event("scratch@caldavfs.test", "Never uploaded"))
    listed = set(os.listdir(folder))
    assert {swp.name, tmp.name} <= listed
    assert swp.read_bytes() == b"\x00vim swap\x00" * 100
    assert os.stat(tmp).st_size == len(tmp.read_bytes())
    assert server_names(srv, cal.url) == set(cal.items)
    swp.unlink()
    tmp.unlink()
    listed = set(os.listdir(folder))
    assert swp.name not in listed and tmp.name not in listed
    assert server_names(srv, cal.url) == set(cal.items)


def test_read_only_mount_refuses_writes(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                        tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path, extra_args=["--read-only"])
    folder = m.path / "work"
    event = servers.make_event("ro@caldavfs.test", "Read-only")
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: write_and_close(folder / "new.ics", event)),
        ("rewrite", lambda: write_and_close(folder / "team meeting.ics", event, os.O_WRONLY | os.O_TRUNC)),
        ("append", lambda: write_and_close(folder / "team meeting.ics", b"\n", os.O_WRONLY | os.O_APPEND)),
        ("scratch", lambda: write_and_close(folder / ".x.swp", b"x")),
        ("unlink", lambda: os.unlink(folder / "team meeting.ics")),
        ("rename", lambda: os.rename(folder / "team meeting.ics", folder / "moved.ics")),
        ("truncate", lambda: os.truncate(folder / "team meeting.ics", 0)),
        ("mkdir", lambda: os.mkdir(m.path / "newcal")),
        ("rmdir", lambda: os.rmdir(m.path / "home")),
        ("displayname", lambda: write_and_close(folder / "displayname", b"x\n")),
    ]
    for what, attempt in attempts:
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno == errno.EROFS, (what, exc.value)
    assert server_names(srv, cal.url) == set(cal.items)
    assert server_body(srv, cal.url, "team meeting.ics") == cal.items["team meeting.ics"].body
    assert set(os.listdir(m.path)) == set(srv.dataset)
    assert conflict_files(cache, "work") == []


# --- the full round trip --------------------------------------------------------------------------


def test_rsync_backup_restore_round_trip(fresh_server: servers.Server, mount_factory: Callable[..., Mounted],
                                         tmp_path: Path) -> None:
    srv = fresh_server
    cal = srv.dataset["work"]
    m, cache = mount_rw(mount_factory, srv, tmp_path, ttl=TTL)
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"], timeout=120)
    saved = {p.name: p.read_bytes() for p in (backup / "work").iterdir()}
    assert set(saved) == {expected_name(n) for n in cal.items} | {"displayname", "color"}

    # The calendar goes away on the server (plain HTTP, behind the mount's back).
    r = srv.request("DELETE", cal.url)
    assert r.status_code in (200, 204), r.status_code
    assert "work" not in server_calendars(srv)
    time.sleep(SETTLE)
    assert "work" not in os.listdir(m.path)

    os.mkdir(m.path / "work")
    run(["rsync", "-a", f"{backup}/work/", f"{m.path}/work/"], timeout=120)

    items = {n for n in saved if n.endswith(".ics")}
    # "no-extension" comes back as "no-extension.ics": the name the mount showed is what is restored.
    assert server_names(srv, cal.url) == items
    for name in sorted(items):
        got = server_body(srv, cal.url, name)
        if got != saved[name]:
            # Radicale and Xandikos re-serialise what they are sent (property order, line folding): the
            # same content may come back in other bytes, so compare unfolded, sorted content lines.
            assert normalised(got) == normalised(saved[name]), name
        assert_mount_shows_server(m.path / "work" / name, got)
    assert propfind_prop(srv, cal.url, servers.NS_DAV, "displayname") == (207, cal.displayname)
    status, color = propfind_prop(srv, cal.url, servers.NS_APPLE, "calendar-color")
    assert status == 207 and color is not None and color.upper().startswith(cal.color or "#"), color
    assert conflict_files(cache, "work") == []

    # rsync sets the mtime on its temp file (.NAME.XXXXXX) and then renames it onto NAME: the mount must
    # show that mtime for NAME afterwards, or the next rsync finds every file changed.
    times = {n: (os.stat(backup / "work" / n).st_mtime_ns, os.stat(m.path / "work" / n).st_mtime_ns)
             for n in sorted(saved)}
    lines = itemize(backup / "work", m.path / "work")
    copied = [line for line in lines if line.startswith(">f")]
    assert copied == [], (lines, {n: t for n, t in times.items() if t[0] != t[1]})
    assert server_names(srv, cal.url) == items


def test_touch_sets_mtime_on_items_and_metadata(fresh_server: servers.Server,
                                                mount_factory: Callable[..., Mounted], tmp_path: Path) -> None:
    """utimens (touch -d, rsync -a, cp -p) on an existing item is remembered; on `displayname` and `color`
    (existing files) it must not fail with ENOENT."""
    srv = fresh_server
    cal = srv.dataset["work"]
    m, _ = mount_rw(mount_factory, srv, tmp_path)
    when = 1_600_000_000 * 1_000_000_000
    item = m.path / "work" / "team meeting.ics"
    os.utime(item, ns=(when, when))
    time.sleep(1.2)  # past the kernel's attr_timeout: the daemon's answer, not the kernel's memory
    assert os.stat(item).st_mtime_ns == when
    for meta in ("displayname", "color"):
        os.utime(m.path / "work" / meta, ns=(when, when))  # an OSError here is the failure
    assert server_body(srv, cal.url, "team meeting.ics") == cal.items["team meeting.ics"].body
