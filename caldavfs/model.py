"""The filesystem's nodes and the state it keeps per calendar and item (no I/O here)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

from caldavfs.client import CalendarInfo, ItemInfo, WholeAnswer

SECOND = 1_000_000_000
META_DISPLAYNAME = "displayname"
META_COLOR = "color"
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")


@dataclass(frozen=True)
class Node:
    """What ``stat`` shows for one path."""

    kind: Literal["dir", "file"]
    ino: int
    size: int = 0
    mtime_ns: int = 0
    nlink: int = 1


def inode(key: str) -> int:
    """A stable inode number per href (or per metadata file)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) | 2  # positive, never 1 (the root)


@dataclass
class Item:
    info: ItemInfo
    name: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    # (size, mtime) shown for the previous etag: a changed item must show a later mtime.
    previous: tuple[int, int] | None = None
    # An mtime set through the mount (rsync -a restoring a backup), valid for this etag only.
    user_mtime: tuple[str, int] | None = None
    # The version last read through the mount: a write is based on it (If-Match), so a change
    # made on the server after the user read the item is a conflict, not overwritten.
    served_etag: str | None = None

    @property
    def shown_mtime(self) -> int:
        if self.user_mtime is not None and self.user_mtime[0] == self.info.etag:
            return self.user_mtime[1]
        return self.mtime_ns or 0

    @property
    def complete(self) -> bool:
        return self.size is not None and self.mtime_ns is not None

    def settle(self) -> None:
        """Make sure that a changed item shows a new mtime or size, so rsync copies it."""
        if self.previous is not None and self.size is not None and self.mtime_ns is not None:
            # khal and todoman take a file's mtime as its etag: any change must move it forward,
            # even where the server's time did not (Xandikos: DTSTAMP left as it was).
            if self.mtime_ns <= self.previous[1]:
                self.mtime_ns = self.previous[1] + SECOND
            self.previous = None


@dataclass
class Whole:
    """A cold calendar's listing with its data, on its way (``Client.start_whole``), and the
    calendar's change tag when it was sent: what the listing will be current for."""

    answers: Future[WholeAnswer]
    tag: str | None
    sent_at: float

    def failed(self) -> bool:
        return self.answers.done() and not self.answers.cancelled() and self.answers.exception() is not None

    def cancel(self) -> None:
        """Not sent yet: never; else its answers are dropped."""
        self.answers.cancel()


@dataclass
class LocalFile:
    """Bytes held here: a scratch file, or an item or metadata file open for writing."""

    data: bytearray
    mtime_ns: int
    base_etag: str | None = None  # the item's etag when it was opened: If-Match for the upload
    dirty: bool = False
    refs: int = 0
    user_mtime: int | None = None  # set with utimens: carried to the item it becomes (rsync)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Calendar:
    info: CalendarInfo
    name: str
    ino: int
    items: dict[str, Item] = field(default_factory=dict)  # by file name
    by_key: dict[str, Item] = field(default_factory=dict)  # by canonical href
    listed: bool = False
    stale: bool = True
    listed_tag: str | None = None
    mtime_ns: int = 0
    # The metadata files' mtime: moves only when displayname or color do (todoman watches it).
    meta_mtime_ns: int = 0
    # A folder mtime set through the mount (rsync -a restoring a backup), until the next change.
    user_mtime: int | None = None
    retry_at: float = 0.0
    # sync-collection (RFC 6578): used where the server has it and sends no getlastmodified
    # anyway (Xandikos), so that a changed calendar costs a small REPORT, not a full listing.
    syncable: bool = False
    server_mtimes: bool | None = None  # did the last full listing carry getlastmodified?
    sync_token: str | None = None
    # Set by the tree where the server's collection getlastmodified covers every item's: the
    # folder's mtime then comes from the home-set, without listing the calendar.
    server_folder_mtime: bool = False
    _meta: tuple[CalendarInfo, dict[str, bytes]] | None = field(default=None, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock)
    fetch_lock: threading.Lock = field(default_factory=threading.Lock)
    # Read-ahead (tree.py): the keys of the batch fetched last for a reader, and the items
    # whose first read starts fetching the next batch in the background.
    last_batch: frozenset[str] = frozenset()
    ahead_marks: set[str] = field(default_factory=set)
    ahead_size: int = 0  # items in the last read-ahead request (it doubles, up to a bound)
    # Its cold listing, sent ahead of a reader walking the tree (``Tree._send_ahead``).
    sent_ahead: Whole | None = None
    # Files held by the write path (scratch files, items open for writing), by name.
    local: dict[str, LocalFile] = field(default_factory=dict)

    @property
    def shown_mtime(self) -> int:
        if self.user_mtime is not None:
            return self.user_mtime
        if self.server_folder_mtime and self.info.mtime_ns is not None:
            return max(self.mtime_ns, self.info.mtime_ns)
        return self.mtime_ns

    def shown_local(self, name: str) -> LocalFile | None:
        """The held file the mount shows under ``name``: one with bytes not yet on the server, or
        one the server has no item for (scratch files, a new empty file). Once uploaded, the
        server's version is shown, as it will be after the kernel's RELEASE: servers rewrite
        what they store, and a stat between close(2) and RELEASE must not say otherwise."""
        lf = self.local.get(name)
        if lf is None or lf.dirty or name not in self.items:
            return lf
        return None

    def touch(self) -> None:
        """Something in the calendar changed: its folder mtime moves (khal's ctag)."""
        self.mtime_ns = max(time.time_ns(), self.mtime_ns + SECOND)
        self.user_mtime = None

    def meta(self) -> dict[str, bytes]:
        """The vdir metadata files; worked out once per CalendarInfo (asked on every lookup)."""
        cached = self._meta
        if cached is not None and cached[0] is self.info:
            return cached[1]
        files: dict[str, bytes] = {}
        if self.info.displayname:
            files[META_DISPLAYNAME] = self.info.displayname.encode("utf-8")
        color = self.info.color or ""
        # Apple's calendar-color is often #RRGGBBAA; khal accepts only #RRGGBB.
        if _COLOR.match(color):
            files[META_COLOR] = color[:7].encode("ascii")
        self._meta = (self.info, files)
        return files
