"""DiskCache on its own: real files in tmp_path, no FUSE, no server."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from caldavfs.diskcache import DiskCache

ACCOUNT = "alice https://dav.example/home/"


def _body(i: int, size: int = 1000) -> bytes:
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _db(cache: DiskCache) -> sqlite3.Connection:
    return sqlite3.connect(cache.root / "data.sqlite3", isolation_level=None)


def _rows(cache: DiskCache) -> int:
    with contextlib.closing(_db(cache)) as db:
        return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # With no umask at all, only the code's own modes keep the files private.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_round_trip_survives_a_new_instance(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    entries = {(f"/cal/{i}.ics", f'"{i}"'): _body(i, 500 + 37 * i) for i in range(50)}
    for (href, etag), data in entries.items():
        cache.put(href, etag, data)
    for (href, etag), data in entries.items():
        assert cache.get(href, etag) == data
    cache.flush()
    assert not cache._pending
    assert cache.used_bytes == sum(len(d) for d in entries.values())

    again = DiskCache(tmp_path, ACCOUNT)
    assert again.used_bytes == cache.used_bytes  # counted from the database
    for (href, etag), data in entries.items():
        assert again.get(href, etag) == data
    assert again.get("/cal/0.ics", '"other etag"') is None
    assert _rows(again) == len(entries)


def test_has_sees_pending_and_committed_entries(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    with cache._db_lock:  # the writer cannot commit: the entry stays pending
        cache.put("/cal/a.ics", "e1", b"BEGIN:VCALENDAR")
        assert ("/cal/a.ics", "e1") in cache._pending
        assert cache.has("/cal/a.ics", "e1")
        assert cache.get("/cal/a.ics", "e1") == b"BEGIN:VCALENDAR"
        assert _rows(cache) == 0
    cache.flush()
    assert not cache._pending
    assert _rows(cache) == 1
    assert cache.has("/cal/a.ics", "e1")
    assert not cache.has("/cal/a.ics", "e2")
    assert not cache.has("/cal/b.ics", "e1")
    assert DiskCache(tmp_path, ACCOUNT).has("/cal/a.ics", "e1")


@pytest.mark.parametrize("damage", ["flip", "truncate", "digest"])
def test_damaged_row_is_dropped_logged_and_never_served(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        damage: str) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    cache.put("/cal/a.ics", "e1", _body(1))
    cache.put("/cal/b.ics", "e1", _body(2))
    cache.flush()
    with contextlib.closing(_db(cache)) as db:
        if damage == "flip":
            body = bytearray(_body(1))
            body[300] ^= 0x01
            db.execute("UPDATE entries SET body = ? WHERE size = ? AND body = ?", (bytes(body), 1000, _body(1)))
        elif damage == "truncate":
            db.execute("UPDATE entries SET body = substr(body, 1, 400) WHERE body = ?", (_body(1),))
        else:
            db.execute("UPDATE entries SET digest = zeroblob(32) WHERE body = ?", (_body(1),))
    caplog.set_level(logging.WARNING, logger="caldavfs.diskcache")
    assert cache.get("/cal/a.ics", "e1") is None
    assert caplog.text.count("damaged") == 1, caplog.text
    assert _rows(cache) == 1  # the damaged row is gone, the other one stays
    assert cache.used_bytes == 1000
    assert cache.get("/cal/b.ics", "e1") == _body(2)
    assert cache.get("/cal/a.ics", "e1") is None
    assert caplog.text.count("damaged") == 1  # logged once: the row is gone
    cache.put("/cal/a.ics", "e1", _body(1))  # fetched again
    cache.flush()
    assert DiskCache(tmp_path, ACCOUNT).get("/cal/a.ics", "e1") == _body(1)


def _make_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 500)


def _make_newer_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA user_version = 99")


def _make_foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE something (x)")


def _make_truncated(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


@pytest.mark.parametrize("spoil", [_make_garbage, _make_newer_schema, _make_foreign, _make_truncated])
def test_unusable_database_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       spoil: Callable[[Path], None]) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    for i in range(200):
        cache.put(f"/cal/{i}.ics", "e", _body(i, 3000))
    cache.flush()
    path = cache.root / "data.sqlite3"
    del cache
    spoil(path)

    caplog.set_level(logging.WARNING, logger="caldavfs.diskcache")
    fresh = DiskCache(tmp_path, ACCOUNT)
    # Whatever was lost, nothing is served but the exact bytes, and nothing raises.
    for i in range(200):
        assert fresh.get(f"/cal/{i}.ics", "e") in (None, _body(i, 3000))
    assert caplog.records, "a warning says the database was unusable"
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    fresh.put("/cal/new.ics", "e", b"new")
    fresh.flush()
    assert DiskCache(tmp_path, ACCOUNT).get("/cal/new.ics", "e") == b"new"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_eviction_keeps_the_bound_and_drops_the_oldest_first(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT, max_bytes=10_000)
    for i in range(30):
        cache.put(f"/cal/{i}.ics", "e", _body(i))
        cache.flush()  # one batch each: a defined order of writing
        assert cache.used_bytes <= 10_000
    present = [i for i in range(30) if cache.has(f"/cal/{i}.ics", "e")]
    assert present == list(range(30 - len(present), 30)), present  # the newest ones, without a gap
    assert 8 <= len(present) <= 10, present  # cut to 80% when over the bound, never further
    with contextlib.closing(_db(cache)) as db:
        assert db.execute("SELECT SUM(size) FROM entries").fetchone()[0] == cache.used_bytes
    assert DiskCache(tmp_path, ACCOUNT, max_bytes=10_000).used_bytes == cache.used_bytes
    for i in present:
        assert cache.get(f"/cal/{i}.ics", "e") == _body(i)


def test_writing_a_key_again_counts_it_once(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    for _ in range(3):
        cache.put("/cal/a.ics", "e", _body(1))
        cache.flush()
    assert cache.used_bytes == 1000
    assert _rows(cache) == 1


def test_concurrent_get_put_from_eight_threads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="caldavfs.diskcache")
    cache = DiskCache(tmp_path, ACCOUNT, max_bytes=200_000)  # small: eviction runs meanwhile too
    errors: list[BaseException] = []
    served = [0]
    stop = time.monotonic() + 1.0

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            while time.monotonic() < stop:
                i = rnd.randrange(300)
                href, size = f"/cal/{i}.ics", 500 + (i * 131) % 3500
                op = rnd.random()
                if op < 0.4:
                    cache.put(href, "e", _body(i, size))
                elif op < 0.9:
                    data = cache.get(href, "e")
                    assert data is None or data == _body(i, size), href
                    if data is not None:
                        served[0] += 1
                else:
                    cache.has(href, "e")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert served[0] > 100
    cache.flush()
    assert not cache._pending
    assert cache.used_bytes <= 200_000
    assert not caplog.records, caplog.text
    for i in range(300):
        assert cache.get(f"/cal/{i}.ics", "e") in (None, _body(i, 500 + (i * 131) % 3500))


@pytest.mark.usefixtures("umask_zero")
def test_modes_of_folders_database_and_sidecars(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = DiskCache(root, ACCOUNT)
    cache.put("/cal/a.ics", "e", b"x" * 5000)
    cache.flush()
    cache.put("/cal/b.ics", "e", b"y" * 5000)  # the WAL has content again
    cache.flush(timeout=10)
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.root.iterdir() if p.is_file()}
    assert {"data.sqlite3", "data.sqlite3-wal", "data.sqlite3-shm"} <= set(files), files
    assert set(files.values()) == {0o600}, files
    for folder in (root, cache.root, cache.root / "listings"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.usefixtures("umask_zero")
def test_wider_modes_left_by_someone_else_are_narrowed(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    cache.put("/cal/a.ics", "e", b"x")
    cache.flush()
    paths = [cache.root / name for name in ("data.sqlite3", "data.sqlite3-wal", "data.sqlite3-shm")]
    del cache
    for path in paths:
        os.chmod(path, 0o644)
    again = DiskCache(tmp_path, ACCOUNT)
    assert again.get("/cal/a.ics", "e") == b"x"
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}


def test_old_per_entry_files_are_removed(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    old = cache.root / "data" / "ab"
    old.mkdir(parents=True)
    (old / ("ab" + "0" * 62)).write_bytes(b"old entry" + bytes(32))
    DiskCache(tmp_path, ACCOUNT)
    assert not (cache.root / "data").exists()


def test_sqlite_errors_at_run_time_are_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    cache.put("/cal/a.ics", "e", b"x")
    cache.flush()
    assert cache._db is not None
    cache._db.close()  # every statement now raises sqlite3.ProgrammingError
    caplog.set_level(logging.WARNING, logger="caldavfs.diskcache")
    assert cache.get("/cal/a.ics", "e") is None
    assert not cache.has("/cal/a.ics", "e")
    cache.put("/cal/b.ics", "e", b"y")
    cache.flush(timeout=5)
    assert not cache._pending  # skipped, not stuck
    assert "failed" in caplog.text


def test_child_after_fork_uses_its_own_connection(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    cache.put("/cal/a.ics", "e", b"parent")
    cache.flush()
    pid = os.fork()
    if pid == 0:  # the child: reads the parent's entry, writes its own, exits without cleanup
        code = 1
        try:
            # No connection crossed the fork: the parent's, closed at exit, could take the WAL with it.
            if cache._db is None and cache.get("/cal/a.ics", "e") == b"parent":
                cache.put("/cal/b.ics", "e", b"child")
                cache.flush()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache._db is None  # closed before the fork; opened again on first use
    assert cache.get("/cal/b.ics", "e") == b"child"
    assert cache.get("/cal/a.ics", "e") == b"parent"
    with contextlib.closing(_db(cache)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_listings_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = DiskCache(tmp_path, ACCOUNT)
    listing = {"tag": "t1", "items": [["k", "/cal/a.ics", "e", 12, 34, None]]}
    cache.save_listing("/cal/", listing)
    assert DiskCache(tmp_path, ACCOUNT).load_listing("/cal/") == {**listing, "key": "/cal/"}
    assert cache.load_listing("/other/") is None
    files = list((cache.root / "listings").iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    files[0].write_bytes(b"{not json")
    assert cache.load_listing("/cal/") is None
    assert "damaged" in caplog.text
