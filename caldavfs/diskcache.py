"""The persistent cache: calendar data keyed by (href, etag), and each calendar's last listing.

With it a remount lists nothing that has not changed and downloads no data again. Layout under
``<cache-dir>/<account>/``: ``data.sqlite3`` (SQLite, WAL mode) holds one row per item: its key
(the SHA-256 of href and etag), its bytes, their SHA-256 and size, in the order written;
``listings/<sha256>.json`` holds one calendar's listing, written to a temporary name and renamed
into place. Folders are 0700; files, the database's ``-wal``/``-shm`` included, 0600.

Every read checks the bytes against their SHA-256: a damaged row is deleted, logged and fetched
again, never served. A database that is no database, damaged or of another schema version is
deleted and started empty; any other SQLite error is logged and taken as a miss or a skipped
write, so the mount goes on without the cache. Writes queue in memory (visible to reads at once)
and a thread of their own commits them, a batch per transaction, off the read path. Bounded in
bytes of item data: past the bound the least recently written rows go, down to 80% of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA_VERSION = 1  # PRAGMA user_version of a database this code wrote
# size and digest come before body, so that reading them never touches the body's overflow pages;
# seq (the rowid) grows with every insert, so the lowest seq is the least recently written row.
_SCHEMA = (
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,"
    " digest BLOB NOT NULL, body BLOB NOT NULL)",
    # Lets SUM(size) read a small index instead of every page of item data (at each start).
    "CREATE INDEX entries_size ON entries (size)",
)
_SIDECARS = ("-wal", "-shm", "-journal")
_CORRUPT = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB: the file itself is damaged
_BUSY_MS = 2000  # another mount of the same account may hold the write lock; a read never waits longer
_BATCH_ENTRIES = 1000  # per transaction, so that a read waits for the lock a few milliseconds at most
_BATCH_BYTES = 8 * 1024 * 1024
_IN_CHUNK = 500  # keys per "IN (...)": well under SQLite's limit on bound parameters
_IDLE = 5.0  # the writer thread ends after this long without work


class _Unusable(Exception):
    """The database file is no cache this code can use."""


def _name(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    # One writer per file name at a time (a listing save under its calendar's lock), so a
    # fixed temporary name does; created 0600, never wider.
    tmp = path.with_name(f".tmp-{path.name}-{threading.get_ident()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in _CORRUPT
    return type(exc) is sqlite3.DatabaseError  # what CPython raises for exactly those two codes


class DiskCache:
    def __init__(self, root: Path, account: str, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.root = root / _name(account)[:16]
        self.max_bytes = max_bytes
        root.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder the user named keeps its mode
        for folder in (self.root, self.root / "listings"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        (self.root / "account").write_text(account + "\n", encoding="utf-8")
        os.chmod(self.root / "account", 0o600)
        old = self.root / "data"
        if old.is_dir() and not old.is_symlink():  # one file per entry, from an older version: only a cache
            log.info("removing the disk cache of an older version in %s", old)
            shutil.rmtree(old, ignore_errors=True)
        self._db_path = self.root / "data.sqlite3"

        # _lock guards _pending, _writer and _used; _db_lock the connection. Order: _db_lock, then _lock.
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: dict[tuple[str, str], bytes] = {}
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()
        self._used = 0
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db_failed = False  # could not even create a database: go on without one, quietly
        with self._db_lock:
            self._connection()
        # A connection must not cross a fork (the mount forks into the background after this): close it
        # before, and let each side open its own on first use.
        ref = weakref.ref(self)
        os.register_at_fork(before=lambda: _call(ref, DiskCache._before_fork),
                            after_in_parent=lambda: _call(ref, DiskCache._after_fork),
                            after_in_child=lambda: _call(ref, DiskCache._after_fork))

    # --- the database -----------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Both locks, so that the child never starts with one held by a thread it does not have.
        self._db_lock.acquire()
        self._lock.acquire()
        self._close()

    def _after_fork(self) -> None:
        self._lock.release()
        self._db_lock.release()

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection | None:
        """The open connection, opened (or created afresh) if need be; call with _db_lock held."""
        if self._db is not None or self._db_failed:
            return self._db
        try:
            self._db = self._open()
        except OSError as exc:
            self._fail_open(exc)
        except (sqlite3.Error, _Unusable) as exc:
            if isinstance(exc, sqlite3.Error) and not _is_corrupt(exc):  # busy, I/O: not the file's fault
                self._fail_open(exc)
                return None
            log.warning("disk cache database %s is unusable (%s); starting an empty one", self._db_path, exc)
            self._remove_files()
            try:
                self._db = self._open()
            except (OSError, sqlite3.Error, _Unusable) as again:
                self._fail_open(again)
        return self._db

    def _fail_open(self, exc: Exception) -> None:
        log.warning("cannot open the disk cache database %s (%s); going on without it", self._db_path, exc)
        self._db_failed = True

    def _open(self) -> sqlite3.Connection:
        # Created 0600 here, before SQLite sees it: SQLite gives -wal and -shm the database's mode.
        fd = os.open(self._db_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        # One connection for all threads, always used under _db_lock; autocommit, transactions explicit.
        db = sqlite3.connect(self._db_path, timeout=_BUSY_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        try:
            # Fails on a file that is no database (SQLITE_NOTADB). Should WAL be impossible (a file system
            # without shared memory), SQLite keeps its rollback journal: slower, as safe.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a crash may lose the last batches, never corrupts
            db.execute("BEGIN IMMEDIATE")  # another mount may be creating the schema at the same time
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise _Unusable("tables of an unknown schema")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise _Unusable(f"schema version {version}, expected {_SCHEMA_VERSION}")
            names = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'")}
            if names != {"entries", "entries_size"}:
                raise _Unusable(f"tables and indexes {sorted(names)}")
            db.execute("COMMIT")
            (used,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
            self._secure_sidecars()
        except BaseException:
            db.close()
            raise
        with self._lock:
            self._used = int(used)
        return db

    def _secure_sidecars(self) -> None:
        for suffix in _SIDECARS:
            path = Path(f"{self._db_path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                if path.is_file() and not path.is_symlink() and st.st_mode & 0o777 != 0o600:
                    os.chmod(path, 0o600)

    def _remove_files(self) -> None:
        for suffix in ("", *_SIDECARS):
            try:
                os.unlink(f"{self._db_path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as exc:  # opening it again fails too, and says so
                log.warning("cannot remove %s%s (%s)", self._db_path, suffix, exc)

    def _run(self, what: str, action: Callable[[sqlite3.Connection], T]) -> T | None:
        """action(connection) under _db_lock; None if there is no database or SQLite fails."""
        with self._db_lock:
            db = self._connection()
            if db is None:
                return None
            try:
                return action(db)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # in_transaction too raises on a closed connection
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                if _is_corrupt(exc):
                    log.warning("disk cache database %s is damaged (%s, %s); starting an empty one",
                                self._db_path, exc, what)
                    self._close()
                    self._remove_files()
                    with self._lock:
                        self._used = 0
                    self._connection()
                else:
                    log.warning("disk cache: %s failed (%s); going on without it", what, exc)
                return None

    # --- item data ------------------------------------------------------------------------

    def get(self, href: str, etag: str) -> bytes | None:
        with self._lock:
            pending = self._pending.get((href, etag))
        if pending is not None:
            return pending
        row = self._run("reading", lambda db: db.execute(
            "SELECT seq, size, digest, body FROM entries WHERE key = ?", (_name(href, etag),)).fetchone())
        if row is None:
            return None
        seq, size, digest, body = row
        if isinstance(body, bytes) and isinstance(digest, bytes) and hashlib.sha256(body).digest() == digest:
            return body
        log.warning("disk cache entry for %s is damaged; fetching it again", href)

        def drop(db: sqlite3.Connection) -> None:
            # By seq: should the row have been written again meanwhile, the new one stays.
            if db.execute("DELETE FROM entries WHERE seq = ?", (seq,)).rowcount and isinstance(size, int):
                with self._lock:
                    self._used -= size

        self._run("dropping a damaged entry", drop)
        return None

    def has(self, href: str, etag: str) -> bool:
        with self._lock:
            if (href, etag) in self._pending:
                return True
        row = self._run("looking up", lambda db: db.execute(
            "SELECT 1 FROM entries WHERE key = ?", (_name(href, etag),)).fetchone())
        return row is not None

    def put(self, href: str, etag: str, data: bytes) -> None:
        """Queue an entry; a thread of its own writes it, off the path of the read that fetched it."""
        with self._lock:
            self._pending[(href, etag)] = data
            self._start_writer()
        self._wake.set()

    def _start_writer(self) -> None:
        # Under _lock. After a fork the parent's writer is gone from the child: is_alive() says so.
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_pending, name="caldavfs-disk", daemon=True)
            self._writer.start()

    def _write_pending(self) -> None:
        while True:
            self._wake.clear()  # before taking a batch: a put() after this sets it again
            with self._lock:
                batch: list[tuple[tuple[str, str], bytes]] = []
                size = 0
                for entry in self._pending.items():
                    batch.append(entry)
                    size += len(entry[1])
                    if len(batch) >= _BATCH_ENTRIES or size >= _BATCH_BYTES:
                        break
            if batch:
                self._write_batch(batch)
                with self._lock:  # committed, or failed and skipped: either way no longer pending
                    for key, data in batch:
                        if self._pending.get(key) is data:  # not put again meanwhile
                            del self._pending[key]
                    if not self._pending:
                        self._drained.notify_all()
                continue
            if self._wake.wait(timeout=_IDLE):
                continue
            with self._lock:
                if not self._pending:
                    self._writer = None
                    return

    def _write_batch(self, batch: list[tuple[tuple[str, str], bytes]]) -> None:
        rows = [(_name(href, etag), len(data), hashlib.sha256(data).digest(), data)
                for (href, etag), data in batch]

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            replaced = 0  # a key written before is replaced, and its old size no longer counts
            for i in range(0, len(rows), _IN_CHUNK):
                keys = [row[0] for row in rows[i:i + _IN_CHUNK]]
                replaced += db.execute(f"SELECT COALESCE(SUM(size), 0) FROM entries WHERE key IN "
                                       f"({','.join('?' * len(keys))})", keys).fetchone()[0]
            db.executemany("INSERT OR REPLACE INTO entries (key, size, digest, body) VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
            with self._lock:
                self._used += sum(row[1] for row in rows) - replaced
                return self._used

        used = self._run("writing", write)
        if used is not None and used > self.max_bytes:
            self._run("evicting", self._evict)

    def _evict(self, db: sqlite3.Connection) -> None:
        """Delete the least recently written rows until at most 80% of the bound is used."""
        db.execute("BEGIN IMMEDIATE")
        # Counted again: another mount of the same account may have written too.
        (used,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
        excess = used - int(self.max_bytes * 0.8)
        last = None
        for seq, size in db.execute("SELECT seq, size FROM entries ORDER BY seq"):
            if excess <= 0:
                break
            excess -= size
            used -= size
            last = seq
        if last is not None:
            db.execute("DELETE FROM entries WHERE seq <= ?", (last,))
        db.execute("COMMIT")
        with self._lock:
            self._used = used

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued entry is committed (at unmount)."""
        with self._lock:
            if self._pending:
                self._start_writer()
                self._wake.set()
                if not self._drained.wait_for(lambda: not self._pending, timeout):
                    log.warning("disk cache: %d entries not written within %.0f s", len(self._pending), timeout)
                    return
        # Fold the write-ahead log into the database, so that what stays on disk is one tidy file.
        self._run("checkpointing", lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    # --- listings -------------------------------------------------------------------------

    def _listing_path(self, calendar_key: str) -> Path:
        return self.root / "listings" / f"{_name(calendar_key)}.json"

    def load_listing(self, calendar_key: str) -> dict[str, Any] | None:
        try:
            raw = self._listing_path(calendar_key).read_bytes()
        except OSError:
            return None
        try:
            listing = json.loads(raw)
        except ValueError:
            log.warning("saved listing of %s is damaged; listing it again", calendar_key)
            return None
        if not isinstance(listing, dict) or listing.get("key") != calendar_key:  # a foreign file
            return None
        return listing

    def save_listing(self, calendar_key: str, listing: dict[str, Any]) -> None:
        try:
            _write_atomic(self._listing_path(calendar_key),
                          json.dumps({**listing, "key": calendar_key}).encode())
        except OSError as exc:
            log.warning("cannot save the listing of %s (%s)", calendar_key, exc)


def _call(ref: weakref.ReferenceType[DiskCache], method: Callable[[DiskCache], None]) -> None:
    cache = ref()
    if cache is not None:
        method(cache)
