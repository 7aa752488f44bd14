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
from collections.abc import Callable
from typing import Any, TypeVar

from mfusepy import FuseOSError, Operations

from caldavfs.errors import (
    CaldavfsError,
    ConflictError,
    ForbiddenError,
    InsufficientStorageError,
    InvalidResponseError,
    MethodNotAllowedError,
    NotCalDAVError,
    NotFoundError,
    PreconditionFailedError,
    ReadOnlyError,
    RejectedError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from caldavfs.tree import Node, Tree

log = logging.getLogger(__name__)

STATS_XATTR = "user.caldavfs.stats"

# The one exception -> errno table (README, "Errors"). Looked up along the class's MRO,
# so the most specific entry wins; anything unlisted is EIO.
ERRNO: dict[type[BaseException], int] = {
    NotFoundError: errno.ENOENT,
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


def _read_only(*_args: Any, **_kwargs: Any) -> int:
    raise FuseOSError(errno.EROFS)


class CaldavFS(Operations):
    """A read-only view of a ``Tree`` (writing comes with the write path)."""

    use_ns = True

    def __init__(self, tree: Tree, *, uid: int | None = None, gid: int | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.tree = tree
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._on_ready = on_ready
        self._handles: dict[int, bytes] = {}
        self._next_fh = itertools.count(1)
        self._lock = threading.Lock()

    def _stat(self, node: Node) -> dict[str, int]:
        if node.kind == "dir":
            mode = stat.S_IFDIR | 0o700
        else:
            mode = stat.S_IFREG | 0o600
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

    # --- lifecycle ------------------------------------------------------------------

    def init(self, path: str) -> None:
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path: str) -> None:
        self.tree.client.session.close()

    # --- read path ------------------------------------------------------------------

    @_errno_guard
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        return self._stat(self.tree.getattr(path))

    @_errno_guard
    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        for name, node in self.tree.readdir(path):
            entries.append((name, {"st_mode": self._stat(node)["st_mode"], "st_ino": node.ino}, 0))
        return entries

    @_errno_guard
    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise FuseOSError(errno.EROFS)
        data = self.tree.read_file(path)
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = data
        return fh

    @_errno_guard
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        data = self._handles.get(fh)
        if data is None:
            data = self.tree.read_file(path)
        return data[offset:offset + size]

    @_errno_guard
    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
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

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        # Counters for `caldavfs status` and the benchmark; asked by name only, never listed,
        # so that `cp -a` and `rsync -X` don't copy them.
        if path == "/" and name == STATS_XATTR:
            return json.dumps(self.tree.stats()).encode()
        raise FuseOSError(errno.ENODATA)

    def listxattr(self, path: str) -> list[str]:
        return []

    # --- writes: refused until the write path exists --------------------------------

    create = write = truncate = unlink = mkdir = rmdir = _read_only
    rename = link = symlink = chmod = chown = utimens = _read_only
    setxattr = removexattr = mknod = _read_only
