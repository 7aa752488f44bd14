"""The content cache: calendar data keyed by (href, etag), bounded in bytes.

Keyed by the pair, never by the etag alone: SOGo gives every item the same etag. A new
etag simply misses, so nothing stale is ever served. Thread-safe behind one lock. This is
the only module that imports cachetools.
"""

from __future__ import annotations

import threading

from cachetools import LRUCache

Key = tuple[str, str]


class ContentCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._lru: LRUCache[Key, bytes] = LRUCache(maxsize=max(1, max_bytes), getsizeof=len)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, href: str, etag: str) -> bytes | None:
        with self._lock:
            data = self._lru.get((href, etag))
            if data is None:
                self.misses += 1
            else:
                self.hits += 1
            return data

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._lru

    def put(self, href: str, etag: str, data: bytes) -> None:
        with self._lock:
            if len(data) <= self._lru.maxsize:
                self._lru[(href, etag)] = data

    def discard(self, href: str, etag: str) -> None:
        with self._lock:
            self._lru.pop((href, etag), None)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)
