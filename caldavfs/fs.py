"""The mfusepy adapter: nodes -> stat dicts, file handles, and ONE exception -> errno table.

Everything that reaches libfuse goes through ``_errno_guard``: mfusepy turns any exception
that is not an OSError into EINVAL, which would tell users "Invalid argument" for a
network failure. No XML, no HTTP and no caching here.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from caldavfs.errors import (
    AlreadyExistsError,
    CaldavfsError,
    ConflictError,
    DirectoryNotEmptyError,
    ForbiddenError,
    InsufficientStorageError,
    InvalidResponseError,
    KeptError,
    MethodNotAllowedError,
    NotCalDAVError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ReadOnlyError,
    RejectedError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from caldavfs.fuselib import WRITE_FLAGS, FuseOSError, Invalidator, Operations
from caldavfs.model import Node
from caldavfs.tree import Tree
from caldavfs.writer import LocalFile, Writer

log = logging.getLogger(__name__)

# libfuse passes {0, UTIME_NOW/UTIME_OMIT}; mfusepy (use_ns) makes them these nanosecond counts.
_UTIME_NOW, _UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2

STATS_XATTR = "user.caldavfs.stats"

# The one exception -> errno table (README, "Errors"). Looked up along the class's MRO,
# so the most specific entry wins; anything unlisted is EIO.
ERRNO: dict[type[BaseException], int] = {
    NotFoundError: errno.ENOENT,
    AlreadyExistsError: errno.EEXIST,
    DirectoryNotEmptyError: errno.ENOTEMPTY,
    PermissionDeniedError: errno.EPERM,
    UnauthorizedError: errno.EACCES,
    ForbiddenError: errno.EACCES,
    MethodNotAllowedError: errno.EPERM,
    PreconditionFailedError: errno.EIO,
    ConflictError: errno.EIO,
    RejectedError: errno.EINVAL,
    InsufficientStorageError: errno.ENOSPC,
    ReadOnlyError: errno.EROFS,
    TransportError: errno.EIO,
    InvalidResponseError: errno.EIO,
    ServerError: errno.EIO,
    NotCalDAVError: errno.EIO,
    CaldavfsError: errno.EIO,
}


def errno_for(exc: BaseException) -> int:
    if isinstance(exc, KeptError) and exc.cause is not None:
        exc = exc.cause  # the bytes are safe; the errno tells why the server did not take them
    for cls in type(exc).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return errno.EIO


F = TypeVar("F", bound=Callable[..., Any])


def _errno_guard(func: F) -> F:
    @functools.wraps(func)
    def wrapper(self: CaldavFS, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except FuseOSError:
            raise
        except NotFoundError as exc:
            log.debug("%s%r: %s", func.__name__, args[:1], exc)
            raise FuseOSError(errno.ENOENT) from exc
        except CaldavfsError as exc:
            code = errno_for(exc)
            log.warning("%s %s: %s", func.__name__, args[0] if args else "", exc)
            raise FuseOSError(code) from exc
        except Exception as exc:  # a bug: say so loudly, but give the caller a real errno
            log.exception("%s %s failed unexpectedly", func.__name__, args[0] if args else "")
            raise FuseOSError(errno.EIO) from exc

    return wrapper  # type: ignore[return-value]


def _unsupported(*_args: Any, **_kwargs: Any) -> int:
    raise FuseOSError(errno.EPERM)


# (name, attributes, offset of the next entry, whether the attributes are whole): readdir_plus.
DirEntry = tuple[str, dict[str, int], int, bool]


@dataclass
class Handle:
    """An open file: a snapshot of bytes to read, or a file held by the write path."""

    data: bytes = b""
    local: LocalFile | None = None
    started: bool = False  # the first read takes the version of that moment (see read)
    changes: int = -1  # the tree's change count when ``data`` was read
    ino: int = 0  # its inode, once stat'ed: fstat(2) after the file was removed (hard_remove)

    @property
    def size(self) -> int:
        """The size of the bytes this open file reads."""
        return len(self.local.data) if self.local is not None else len(self.data)


class CaldavFS(Operations):
    """The mount: reads from a ``Tree``, writes through a ``Writer``."""

    use_ns = True

    def __init__(self, tree: Tree, writer: Writer, *, uid: int | None = None, gid: int | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.tree = tree
        self.writer = writer
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._on_ready = on_ready
        self._handles: dict[int, Handle] = {}
        # Open folders: the listing each one reads, taken at its first readdir (readdir_plus).
        self._dirs: dict[int, list[DirEntry]] = {}
        self._next_fh = itertools.count(1)
        self._lock = threading.Lock()
        self._invalidator = Invalidator()

    def _stat(self, node: Node) -> dict[str, int]:
        mode = stat.S_IFDIR | 0o700 if node.kind == "dir" else stat.S_IFREG | 0o600
        return {
            "st_mode": mode,
            "st_ino": node.ino,
            "st_nlink": node.nlink,
            "st_size": node.size,
            "st_blocks": (node.size + 511) // 512,
            "st_blksize": 65536,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
            "st_atime": node.mtime_ns,
        }

    def _new_handle(self, handle: Handle) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = handle
        return fh

    def _local(self, fh: int | None) -> LocalFile | None:
        handle = self._handles.get(fh) if fh is not None else None
        return handle.local if handle is not None else None

    # --- lifecycle ------------------------------------------------------------------

    def init(self, path: str) -> None:
        if self._invalidator.attach():
            self.tree.invalidate = self._invalidator
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path: str) -> None:
        self._invalidator.stop()
        if self.tree.disk is not None:
            self.tree.disk.flush()
        self.tree.client.session.close()

    # --- read path ------------------------------------------------------------------

    @_errno_guard
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        handle = self._handles.get(fh) if fh is not None else None
        if path is None:
            return self._removed_stat(handle)
        attrs = self._stat(self.tree.getattr(path))
        if handle is not None:
            handle.ino = attrs["st_ino"]
            # fstat(2) on an open file: the size of the bytes this open file reads, even when
            # the item changed on the server since (the kernel re-asks before reading past it).
            size = handle.size
            if size != attrs["st_size"] and handle.local is None:
                # This answer is this open file's alone: the kernel must not keep it for the
                # path (invalidating now makes it drop the reply that is on its way).
                self.tree.invalidate([path])
            attrs["st_size"], attrs["st_blocks"] = size, (size + 511) // 512
        return attrs

    def _removed_stat(self, handle: Handle | None) -> dict[str, int]:
        """fstat(2) of an open file removed or replaced since (libfuse gives no path then)."""
        if handle is None:
            raise FuseOSError(errno.EBADF)
        mtime = handle.local.mtime_ns if handle.local is not None else 0
        return {**self._stat(Node("file", handle.ino, handle.size, mtime)), "st_nlink": 0}

    @_errno_guard
    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        for name, node in self.tree.readdir(path):
            entries.append((name, {"st_mode": self._stat(node)["st_mode"], "st_ino": node.ino}, 0))
        return entries

    @_errno_guard
    def opendir(self, path: str) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._dirs[fh] = []
        return fh

    @_errno_guard
    def readdir_plus(self, path: str, offset: int, fh: int) -> list[DirEntry]:
        """Entries from ``offset`` on, with attributes and the next offset; one listing per
        open folder, so that a big folder read in many calls is listed once."""
        entries = self._dirs.get(fh)
        if offset == 0 or not entries:
            # A calendar's attributes in the root's listing may predate its own listing (its
            # mtime does not): the kernel takes them by LOOKUP instead, from a listed calendar.
            whole = path != "/"
            folder = {"st_mode": stat.S_IFDIR | 0o700}  # not the root's whole stat: it lists everything
            entries = [(".", folder, 1, False), ("..", folder, 2, False)]
            for name, node in self.tree.readdir(path):
                entries.append((name, self._stat(node), len(entries) + 1, whole))
            with self._lock:
                if fh in self._dirs:
                    self._dirs[fh] = entries
        return entries[offset:]

    @_errno_guard
    def releasedir(self, path: str, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    @_errno_guard
    def open(self, path: str, flags: int) -> int:
        if flags & WRITE_FLAGS:
            opened = self.writer.open(path, truncate=bool(flags & os.O_TRUNC))
            return self._new_handle(Handle(local=opened))
        held = self.writer.local(path)
        if held is not None:
            return self._new_handle(Handle(data=bytes(held.data)))
        changes = self.tree.changes  # before the read: a change during it counts
        return self._new_handle(Handle(data=self.tree.read_file(path), changes=changes))

    @_errno_guard
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles.get(fh)
        if handle is None:
            if path is None:
                raise FuseOSError(errno.EBADF)
            return self.tree.read_file(path)[offset:offset + size]
        if handle.local is not None:
            return bytes(handle.local.data[offset:offset + size])
        if not handle.started:
            # An item may change on the server between open and the first read; a reader that
            # looked at st_size in between expects the new version. From here on this open file
            # keeps the version it started reading, whole.
            handle.started = True
            if path is not None and handle.changes != self.tree.changes and self.writer.local(path) is None:
                handle.data = self.tree.read_file(path)
        return handle.data[offset:offset + size]

    @_errno_guard
    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is not None and handle.local is not None:
            try:
                self.writer.flush(path, handle.local, last=handle.local.refs <= 1)
            finally:
                self.writer.release(path, handle.local)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": 0,
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": 0,
            "f_ffree": 0,
            "f_namemax": 255,
        }

    @_errno_guard
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        # Counters for `caldavfs status` and the benchmark; asked by name only, never listed,
        # so that `cp -a` and `rsync -X` don't copy them.
        if path == "/" and name == STATS_XATTR:
            return json.dumps(self.tree.stats()).encode()
        if not name.startswith("user.caldav."):
            raise FuseOSError(errno.ENODATA)  # ls asks for ACLs and SELinux labels on every file
        value = self.tree.xattrs(path).get(name)
        if value is None:
            raise FuseOSError(errno.ENODATA)
        return value.encode("utf-8", "surrogateescape")

    @_errno_guard
    def listxattr(self, path: str) -> list[str]:
        return list(self.tree.xattrs(path))

    # --- write path -----------------------------------------------------------------

    @_errno_guard
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        return self._new_handle(Handle(local=self.writer.create(path)))

    @_errno_guard
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        local = self._local(fh)
        if local is None:
            raise FuseOSError(errno.EBADF)
        return self.writer.write(local, data, offset)

    @_errno_guard
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.writer.truncate(path, length, self._local(fh))
        return 0

    @_errno_guard
    def flush(self, path: str | None, fh: int) -> int:
        # close(2) returns what flush returns: a failed upload reaches the program here.
        local = self._local(fh)
        if local is not None:
            self.writer.flush(path, local)
        return 0

    @_errno_guard
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        return self.flush(path, fh)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # khal fsyncs the calendar folder after writing

    @_errno_guard
    def unlink(self, path: str) -> int:
        self.writer.unlink(path)
        return 0

    @_errno_guard
    def rename(self, old: str, new: str) -> int:
        self.writer.rename(old, new)
        return 0

    @_errno_guard
    def link(self, target: str, source: str) -> int:
        self.writer.link(source, target)
        return 0

    @_errno_guard
    def mkdir(self, path: str, mode: int) -> int:
        self.writer.mkdir(path)
        return 0

    @_errno_guard
    def rmdir(self, path: str) -> int:
        self.writer.rmdir(path)
        return 0

    @_errno_guard
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        if self.writer.read_only:
            raise FuseOSError(errno.EROFS)
        if times is not None and path is not None and times[1] != _UTIME_OMIT:
            self.writer.set_mtime(path, time.time_ns() if times[1] == _UTIME_NOW else times[1])
        return 0

    @_errno_guard
    def chmod(self, path: str, mode: int) -> int:
        # Permissions are the mount's; accepting keeps `rsync -a` and `cp -p` quiet.
        if self.writer.read_only:
            raise FuseOSError(errno.EROFS)
        return 0

    @_errno_guard
    def chown(self, path: str, uid: int, gid: int) -> int:
        if self.writer.read_only:
            raise FuseOSError(errno.EROFS)
        return 0

    symlink = mknod = _unsupported

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        # ENOTSUP, not EPERM: sed -i and cp -a then skip copying ACLs instead of failing.
        raise FuseOSError(errno.ENOTSUP)

    def removexattr(self, path: str, name: str) -> int:
        raise FuseOSError(errno.ENOTSUP)
