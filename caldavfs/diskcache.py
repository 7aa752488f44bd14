"""The persistent cache: calendar data keyed by (href, etag), and each calendar's last listing.

With it a remount lists nothing that has not changed and downloads no data again. Layout
under ``<cache-dir>/<account>/``: ``data/ab/<sha256>`` holds one item's bytes followed by
their SHA-256 (a truncated or corrupt entry is detected, dropped and fetched again, never
served); ``listings/<sha256>.json`` one calendar's listing. Folders are 0700, files 0600,
every file is written to a temporary name and renamed into place. Bounded in bytes: the
least recently written entries go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_DIGEST = 32


def _name(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    # One writer per file name at a time (the writer thread, or a listing save under its
    # calendar's lock), so a fixed temporary name does; created 0600, never wider.
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


class DiskCache:
    def __init__(self, root: Path, account: str, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.root = root / _name(account)[:16]
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder the user named keeps its mode
        for folder in (self.root, self.root / "data", self.root / "listings"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        (self.root / "account").write_text(account + "\n", encoding="utf-8")
        os.chmod(self.root / "account", 0o600)
        self._used = sum(p.stat().st_size for p in (self.root / "data").glob("*/*"))
        self._pending: dict[tuple[str, str], bytes] = {}
        self._dirs: set[Path] = set()
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()

    # --- item data ------------------------------------------------------------------------

    def _data_path(self, href: str, etag: str) -> Path:
        name = _name(href, etag)
        return self.root / "data" / name[:2] / name

    def get(self, href: str, etag: str) -> bytes | None:
        with self._lock:
            pending = self._pending.get((href, etag))
        if pending is not None:
            return pending
        path = self._data_path(href, etag)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        data, digest = raw[:-_DIGEST], raw[-_DIGEST:]
        if len(raw) < _DIGEST or hashlib.sha256(data).digest() != digest:
            log.warning("disk cache entry for %s is damaged; fetching it again", href)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def has(self, href: str, etag: str) -> bool:
        with self._lock:
            if (href, etag) in self._pending:
                return True
        return self._data_path(href, etag).exists()

    def put(self, href: str, etag: str, data: bytes) -> None:
        """Queue an entry; a thread of its own writes it, off the path of the read that fetched it."""
        with self._lock:
            self._pending[(href, etag)] = data
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_pending, name="caldavfs-disk", daemon=True)
                self._writer.start()
        self._wake.set()

    def _write_pending(self) -> None:
        while True:
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            with self._lock:
                batch = list(self._pending.items())
            if not batch:
                with self._lock:
                    if not self._pending:
                        self._writer = None
                        return
                continue
            for (href, etag), data in batch:
                self._write_entry(href, etag, data)
                with self._lock:
                    if self._pending.get((href, etag)) is data:
                        del self._pending[(href, etag)]

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued entry is on disk (at unmount)."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                writer = self._writer
            if writer is None:
                with self._lock:
                    batch = list(self._pending.items())
                    self._pending.clear()
                for (href, etag), data in batch:
                    self._write_entry(href, etag, data)
                return
            writer.join(timeout)
            if writer.is_alive():
                return

    def _write_entry(self, href: str, etag: str, data: bytes) -> None:
        path = self._data_path(href, etag)
        try:
            if path.parent not in self._dirs:
                path.parent.mkdir(mode=0o700, exist_ok=True)
                self._dirs.add(path.parent)
            _write_atomic(path, data + hashlib.sha256(data).digest())
        except OSError as exc:
            log.warning("cannot write the disk cache (%s); going on without it", exc)
            return
        with self._lock:
            self._used += len(data) + _DIGEST
            over = self._used > self.max_bytes
        if over:
            self._evict()

    def _evict(self) -> None:
        entries = []
        for path in (self.root / "data").glob("*/*"):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        entries.sort()
        used = sum(size for _, size, _ in entries)
        target = self.max_bytes * 0.8
        for _, size, path in entries:
            if used <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                used -= size
        with self._lock:
            self._used = used

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
