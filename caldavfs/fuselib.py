"""Which libfuse caldavfs runs on, and the one call it makes into libfuse itself.

libfuse 3 is preferred: its ``fuse_invalidate_path`` lets the daemon drop the kernel's cached
attributes of a file whose item changed, so the kernel may cache attributes at all (one round
trip per ``stat`` saved, about a third of an ``rsync -a``'s). mfusepy picks the library when it
is imported, from $FUSE_LIBRARY_NAME; import mfusepy only through this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import threading
from typing import Any

log = logging.getLogger(__name__)


def _import_mfusepy() -> None:
    if os.environ.get("FUSE_LIBRARY_PATH") or os.environ.get("FUSE_LIBRARY_NAME"):
        return  # the user's choice
    if ctypes.util.find_library("fuse3") is None:
        return  # libfuse 2 only: mfusepy finds it; the kernel then caches no attributes
    os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy  # noqa: F401  (reads the variable now, once)
    finally:
        del os.environ["FUSE_LIBRARY_NAME"]  # not for the programs the user runs from here


_import_mfusepy()

import mfusepy  # noqa: E402

FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
LIBFUSE_MAJOR: int = mfusepy.fuse_version_major

# open(2) flags that make an open file one that writes (``CaldavFS.open``).
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
FUSE_READDIR_PLUS = 1  # enum fuse_readdir_flags: the kernel asks for attributes too
FUSE_FILL_DIR_PLUS = 2  # enum fuse_fill_dir_flags: this entry carries them


_pinned = threading.local()


def _pin_thread_state() -> None:
    """Keep this libfuse worker thread's Python thread state from one callback to the next.

    ctypes makes a thread state for each callback on a thread Python did not start and deletes
    it on return: an mmap, a munmap and a page fault per FUSE request (Python 3.11, measured with
    strace). One PyGILState_Ensure never released keeps it alive. A worker that ended would leave
    its state behind, so the mount keeps its idle workers (``IDLE_WORKERS``): libfuse 3 then has
    no more of them than requests it ever served at once (3.12 on: at most max_threads, 10).
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


# libfuse 3's max_idle_threads for the mount: workers are never ended (see _pin_thread_state).
IDLE_WORKERS = "100000"


class PlusFUSE(mfusepy.FUSE):
    """mfusepy's FUSE for libfuse 3, whose readdir hands the kernel every entry's attributes
    (readdirplus), and whose worker threads each make their Python state once.

    Then ``ls -l``, ``find`` and ``rsync`` stat a listed file without a LOOKUP round trip.
    The operations give ``readdir_plus(path, offset, fh)`` -> [(name, stat dict, next offset,
    whether the stat is whole)]. Offsets are never 0: libfuse 3 drops the attributes of
    entries it buffers itself.
    """

    def _wrapper(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        _pin_thread_state()
        return super()._wrapper(func, *args, **kwargs)

    def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any,
                       flags: int) -> int:
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        plus = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
        st = mfusepy.c_stat()
        for name, attrs, off, whole in self.operations.readdir_plus(decoded, offset, fip.contents.fh):
            ctypes.memset(ctypes.byref(st), 0, ctypes.sizeof(st))
            mfusepy.set_st_attrs(st, attrs, use_ns=True)
            if filler(buf, name.encode(self.encoding, self.errors), st, off, plus if whole else 0) != 0:
                break  # the kernel's buffer is full: it asks again from the last offset
        return 0

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        """ftruncate(2) names its open file: mfusepy passes only the path, which is None once
        the file was removed, and may be another file's since a rename."""
        return int(self.ftruncate(path, length, fip))

    def open(self, path: bytes, fip: Any) -> int:
        """mfusepy's open, and no FLUSH on close for a file opened only to read (libfuse 3.11+,
        Linux 5.16+): nothing to upload, and one kernel round trip less per file read."""
        fi = fip.contents
        fi.fh = self.operations.open(path.decode(self.encoding, self.errors), fi.flags)
        if not fi.flags & WRITE_FLAGS and hasattr(fi, "noflush"):
            fi.noflush = 1
        return 0


FUSE = PlusFUSE if LIBFUSE_MAJOR >= 3 else mfusepy.FUSE

# libfuse 3.14.0 prints this at every start, for a default it then keeps (fixed in 3.14.1).
_NOISE = (b"Ignoring invalid max threads value",)
_LOG_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_log_func_ref: list[Any] = []  # the callback must live as long as libfuse may call it


def quiet_known_noise() -> None:
    """Route libfuse's messages through a filter that drops known harmless noise and prints the
    rest as libfuse would (to stderr, the log file once a background mount detached)."""
    lib = mfusepy._libfuse
    if LIBFUSE_MAJOR < 3 or not hasattr(lib, "fuse_set_log_func") or _log_func_ref:
        return
    libc = ctypes.CDLL(None)
    vfprintf = libc.vfprintf
    # va_list arrives as a pointer on the ABIs Linux runs on (an array type on x86-64, a large
    # struct passed by reference on arm64), and is handed on as such.
    vfprintf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    stderr = ctypes.c_void_p.in_dll(libc, "stderr")

    def log_func(level: int, fmt: bytes | None, args: int | None) -> None:
        if fmt is None or fmt.startswith(_NOISE):
            return
        vfprintf(stderr, fmt, args)

    callback = _LOG_FUNC(log_func)
    _log_func_ref.append(callback)
    lib.fuse_set_log_func.argtypes = [_LOG_FUNC]
    lib.fuse_set_log_func(callback)

# How long a kernel-side invalidation may take before the caller goes on without it.
INVALIDATE_WAIT = 2.0


def can_invalidate() -> bool:
    return LIBFUSE_MAJOR >= 3 and hasattr(mfusepy._libfuse, "fuse_invalidate_path")


class Invalidator:
    """Tells the kernel to forget the cached attributes of paths whose items changed.

    The calls run on a thread of their own: a notification the kernel cannot take at once
    (it waits for a request this daemon is serving) then never blocks a FUSE handler for long.
    """

    def __init__(self) -> None:
        self._fuse: int | None = None
        self._queue: queue.SimpleQueue[tuple[list[bytes], threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def attach(self) -> bool:
        """Call from inside a FUSE callback (``init``): remembers this mount's ``struct fuse``."""
        if not can_invalidate():
            return False
        lib = mfusepy._libfuse
        lib.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.fuse_invalidate_path.restype = ctypes.c_int
        self._fuse = lib.fuse_get_context().contents.fuse
        if not self._fuse:
            return False
        self._thread = threading.Thread(target=self._run, name="caldavfs-inval", daemon=True)
        self._thread.start()
        return True

    def __call__(self, paths: list[str]) -> None:
        if self._fuse is None or not paths:
            return
        done = threading.Event()
        self._queue.put(([p.encode("utf-8", "surrogateescape") for p in paths], done))
        if not done.wait(INVALIDATE_WAIT):
            log.warning("the kernel took no cache invalidation for %s within %.0f s", paths[0], INVALIDATE_WAIT)

    def stop(self) -> None:
        if self._thread is not None:
            self._fuse = None
            self._queue.put(None)

    def _run(self) -> None:
        lib = mfusepy._libfuse
        while True:
            job = self._queue.get()
            if job is None:
                return
            paths, done = job
            fuse = self._fuse
            for path in paths:
                if fuse:
                    # -ENOENT: the kernel holds nothing for this path, nothing to forget.
                    lib.fuse_invalidate_path(fuse, path)
            done.set()
