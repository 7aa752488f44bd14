"""fs: the mfusepy Operations called directly (no mount) over a Tree on a real server."""

from __future__ import annotations

import errno
import inspect
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from caldavfs import errors as E
from caldavfs.client import Client
from caldavfs.dav import DavSession
from caldavfs.fs import CaldavFS, errno_for
from caldavfs.fuselib import FuseOSError
from caldavfs.tree import Tree
from caldavfs.writer import Writer
from tests import servers


@pytest.fixture
def fs(server: servers.Server, tmp_path: Path) -> CaldavFS:
    """A read-only mount's operations (the write path is tested elsewhere)."""
    client = Client(DavSession(username=server.username, password=server.password, timeout=10))
    found = client.discover(server.base_url)
    tree = Tree(client, found.home_url)
    return CaldavFS(tree, Writer(tree, tmp_path / "conflicts", read_only=True))


def _file_name(seeded: str) -> str:
    return seeded if seeded.endswith(".ics") else seeded + ".ics"


def _errno(call: Callable[[], Any]) -> int:
    with pytest.raises(FuseOSError) as info:
        call()
    return int(info.value.errno)


def _read_all(fs: CaldavFS, path: str) -> bytes:
    fh = fs.open(path, os.O_RDONLY)
    try:
        chunks, offset = [], 0
        while chunk := fs.read(path, 65536, offset, fh):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        fs.release(path, fh)


def test_getattr_modes(fs: CaldavFS) -> None:
    for path in ("/", "/work", "/tasks"):
        st = fs.getattr(path)
        assert stat.S_ISDIR(st["st_mode"]) and stat.S_IMODE(st["st_mode"]) == 0o700
        assert st["st_uid"] == os.getuid()
    for path in ("/work/weekly.ics", "/work/displayname", "/work/color"):
        st = fs.getattr(path)
        assert stat.S_ISREG(st["st_mode"]) and stat.S_IMODE(st["st_mode"]) == 0o600


def test_item_sizes_blocks_and_bytes(fs: CaldavFS, server: servers.Server) -> None:
    for cal in server.dataset.values():
        for item in cal.items.values():
            path = f"/{cal.name}/{_file_name(item.name)}"
            st = fs.getattr(path)
            data = _read_all(fs, path)
            assert data == item.body, path
            assert st["st_size"] == len(data)
            assert st["st_blocks"] == math.ceil(len(data) / 512)
            assert st["st_mtime"] > 0


def test_metadata_files(fs: CaldavFS) -> None:
    assert _read_all(fs, "/work/displayname") == "직장".encode()
    assert _read_all(fs, "/work/color") == b"#FF8800"
    assert fs.getattr("/work/displayname")["st_size"] == len("직장".encode())
    assert _read_all(fs, "/tasks/displayname") == "미리 알림".encode()
    assert _errno(lambda: fs.getattr("/home/color")) == errno.ENOENT


def test_readdir_root(fs: CaldavFS) -> None:
    entries = fs.readdir("/", 0)
    assert entries[:2] == [".", ".."]
    assert sorted(e[0] for e in entries[2:]) == ["home", "tasks", "work"]
    assert all(stat.S_ISDIR(e[1]["st_mode"]) for e in entries[2:])


def test_readdir_calendar(fs: CaldavFS, server: servers.Server) -> None:
    for cal in server.dataset.values():
        entries = fs.readdir(f"/{cal.name}", 0)
        assert entries[:2] == [".", ".."]
        got = sorted(e[0] for e in entries[2:])
        expected = {_file_name(n) for n in cal.items} | {"displayname"}
        if cal.color:
            expected.add("color")
        assert got == sorted(expected)
        inos = {e[1]["st_ino"] for e in entries[2:]}
        assert len(inos) == len(got)


def test_inode_stable_and_matches_readdir(fs: CaldavFS) -> None:
    by_name = {e[0]: e[1]["st_ino"] for e in fs.readdir("/work", 0)[2:]}
    assert fs.getattr("/work/weekly.ics")["st_ino"] == by_name["weekly.ics"]
    assert fs.getattr("/work/weekly.ics")["st_ino"] == fs.getattr("/work/weekly.ics")["st_ino"]


@pytest.mark.parametrize("path", ["/nope", "/work/nope.ics", "/work/weekly.ics/x", "/work/x/y/z"])
def test_missing_path_enoent(fs: CaldavFS, path: str) -> None:
    assert _errno(lambda: fs.getattr(path)) == errno.ENOENT
    assert _errno(lambda: fs.open(path, os.O_RDONLY)) == errno.ENOENT


def test_readdir_of_file_or_missing_enoent(fs: CaldavFS) -> None:
    assert _errno(lambda: fs.readdir("/nope", 0)) == errno.ENOENT
    assert _errno(lambda: fs.readdir("/work/weekly.ics", 0)) == errno.ENOENT


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND])
def test_open_for_writing_erofs(fs: CaldavFS, flags: int) -> None:
    assert _errno(lambda: fs.open("/work/weekly.ics", flags)) == errno.EROFS


@pytest.mark.parametrize(("op", "args"), [
    ("create", ("/work/new.ics", 0o600)),
    ("truncate", ("/work/weekly.ics", 0)),
    ("unlink", ("/work/weekly.ics",)),
    ("mkdir", ("/new", 0o700)),
    ("rmdir", ("/work",)),
    ("rename", ("/work/weekly.ics", "/work/w.ics")),
    ("link", ("/work/w.ics", "/work/weekly.ics")),
    ("chmod", ("/work/weekly.ics", 0o644)),
    ("chown", ("/work/weekly.ics", 0, 0)),
    ("utimens", ("/work/weekly.ics", None)),
])
def test_write_ops_erofs(fs: CaldavFS, op: str, args: tuple[Any, ...]) -> None:
    assert _errno(lambda: getattr(fs, op)(*args)) == errno.EROFS


def test_symlink_and_xattr_writes_refused(fs: CaldavFS) -> None:
    assert _errno(lambda: fs.symlink("/work/s", "/work/weekly.ics")) in (errno.EPERM, errno.EROFS)
    assert _errno(lambda: fs.setxattr("/work/weekly.ics", "user.x", b"1", 0)) in (errno.ENOTSUP, errno.EROFS)
    assert not (Path(fs.writer.conflicts_dir)).exists()


def test_read_at_offsets(fs: CaldavFS, server: servers.Server) -> None:
    body = server.dataset["work"].items["big.ics"].body
    fh = fs.open("/work/big.ics", os.O_RDONLY)
    assert fs.read("/work/big.ics", 100, 1000, fh) == body[1000:1100]
    assert fs.read("/work/big.ics", 100, len(body) + 5, fh) == b""
    fs.release("/work/big.ics", fh)


# --- errno table --------------------------------------------------------------------------------

ERROR_CLASSES = [c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, E.CaldavfsError)]
EXPECTED = {
    E.NotFoundError: errno.ENOENT,
    E.UnauthorizedError: errno.EACCES,
    E.ForbiddenError: errno.EACCES,
    E.ReadOnlyError: errno.EROFS,
    E.InsufficientStorageError: errno.ENOSPC,
    E.RejectedError: errno.EINVAL,
    E.TransportError: errno.EIO,
    E.InvalidResponseError: errno.EIO,
    E.ServerError: errno.EIO,
    E.AlreadyExistsError: errno.EEXIST,
    E.DirectoryNotEmptyError: errno.ENOTEMPTY,
}


def test_every_error_class_is_listed() -> None:
    assert len(ERROR_CLASSES) >= 15


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_errno_for_every_error_class(cls: type[E.CaldavfsError]) -> None:
    code = errno_for(cls("boom"))
    assert code in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EIO, errno.EINVAL, errno.ENOSPC, errno.EROFS,
                    errno.EEXIST, errno.ENOTEMPTY)
    assert (code == errno.EINVAL) == (cls is E.RejectedError)
    if cls in EXPECTED:
        assert code == EXPECTED[cls]


class _Broken:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def getattr(self, path: str) -> None:
        raise self.exc


@pytest.mark.parametrize(("exc", "code"), [
    (E.TransportError("down"), errno.EIO),
    (E.NotFoundError("gone"), errno.ENOENT),
    (E.UnauthorizedError("no"), errno.EACCES),
    (ValueError("a bug"), errno.EIO),
    (KeyError("a bug"), errno.EIO),
])
def test_guard_turns_every_exception_into_a_deliberate_errno(exc: BaseException, code: int) -> None:
    fs = CaldavFS(_Broken(exc), None)  # type: ignore[arg-type]
    assert _errno(lambda: fs.getattr("/x")) == code


def test_statfs_and_unknown_xattrs(fs: CaldavFS) -> None:
    assert fs.statfs("/")["f_namemax"] == 255
    assert _errno(lambda: fs.getxattr("/work/weekly.ics", "security.selinux")) == errno.ENODATA
    assert _errno(lambda: fs.getxattr("/work/weekly.ics", "system.posix_acl_access")) == errno.ENODATA


@pytest.mark.parametrize("temp", ["sedAb12Cd", ".team meeting.ics.Xy12Zq"])  # sed -i's, rsync's
def test_a_temp_file_released_after_its_rename_is_not_uploaded_again(
        fresh_server: servers.Server, tmp_path: Path, temp: str) -> None:
    """close(2) returns after FLUSH; the kernel sends RELEASE later, and after a rename it names the
    file by its new name. The bytes the rename uploaded must not be uploaded a second time then (as a
    new file: 412, and a copy in the conflicts folder although nothing failed)."""
    srv = fresh_server
    client = Client(DavSession(username=srv.username, password=srv.password, timeout=10))
    tree = Tree(client, client.discover(srv.base_url).home_url)
    ops = CaldavFS(tree, Writer(tree, tmp_path / "conflicts"))
    target = "/work/team meeting.ics"
    body = _read_all(ops, target).replace(b"SUMMARY:Team meeting", b"SUMMARY:Team lunch")
    assert b"SUMMARY:Team lunch" in body

    fh = ops.create(f"/work/{temp}", 0o600)
    assert ops.write(f"/work/{temp}", body, 0, fh) == len(body)
    ops.flush(f"/work/{temp}", fh)  # close(2)
    ops.rename(f"/work/{temp}", target)
    ops.release(target, fh)  # the kernel's late RELEASE, under the new name

    assert not (tmp_path / "conflicts").exists()
    stored = servers.get_item(srv, servers.item_url(srv.dataset["work"].url, "team meeting.ics"))
    assert b"SUMMARY:Team lunch" in stored
    assert _read_all(ops, target) == stored
    listed = {e if isinstance(e, str) else e[0] for e in ops.readdir("/work", 0)}
    assert "team meeting.ics" in listed and temp not in listed
