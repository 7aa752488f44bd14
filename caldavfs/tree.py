"""The filesystem model without FUSE: paths, names, stat values and file contents.

The root lists the calendars of the home-set; each calendar directory lists one ``.ics``
file per calendar object plus the vdir metadata files ``displayname`` and ``color``.

Consistency model: the home-set is asked at most once per ``ttl`` seconds (one PROPFIND
Depth 1 that carries every calendar's ctag and sync-token); a calendar is listed again
only when its change tag moved (or, for servers without one, when the TTL passed).
Contents come from the content cache keyed by (href, etag); a miss fetches a batch of
uncached siblings with calendar-multiget. What is known stays served when the server is
away. Thread-safe: FUSE calls this from many threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote, urlsplit

from caldavfs import memory, names
from caldavfs.cache import ContentCache
from caldavfs.client import (
    CalendarInfo,
    Client,
    ItemInfo,
    SyncTokenError,
    canonical_href,
    data_mtime,
    last_segment,
)
from caldavfs.diskcache import DiskCache
from caldavfs.errors import (
    CaldavfsError,
    DavError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
    TransportError,
)
from caldavfs.model import META_COLOR, META_DISPLAYNAME, SECOND, Calendar, Item, Node, Whole, inode

log = logging.getLogger(__name__)

Fetched = tuple[ItemInfo, str, bytes]  # an item as asked, the etag the server sent, its bytes

# After a failed refresh, wait this long before asking a silent server again, so that
# every call does not block for a whole timeout while it is away.
RETRY_AFTER_FAILURE = 5.0
# Batches fetched ahead of a reader going through a folder in name order: two, so that one
# slow answer does not make the reader wait (rsync reads 100 small files in about 30 ms).
AHEAD_BATCHES = 2
# A read-ahead request grows to this many times the batch: the server's cost per item falls
# with the size of a multiget (Radicale: 0.22 ms an item at 100, 0.16 at 500).
AHEAD_GROWTH = 4
# After listing a calendar of this many items, freed memory goes back to the system.
TRIM_AFTER = 2500

# A reader that listed the root this recently is taken to walk the whole tree (rsync, find,
# tar): each calendar it lists gets the next one in name order listed behind it.
WALK_WINDOW = 60.0
# How far in name order a walk's listings run ahead of the furthest calendar the reader listed:
# rsync reads a folder ahead of the files it copies, and the server is slower than the reader.
WALK_AHEAD = 2
# A listing sent ahead of a walk is used within this many seconds, or sent again.
SENT_AHEAD_FOR = 10.0


class Tree:
    """Paths -> nodes and bytes, over a ``Client`` and a ``ContentCache``."""

    def __init__(
        self,
        client: Client,
        home_url: str,
        *,
        cache: ContentCache | None = None,
        ttl: float = 60.0,
        calendar_url: str | None = None,
        disk: DiskCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.disk = disk
        self.home_url = home_url
        self.calendar_url = calendar_url
        self.cache = cache or ContentCache()
        self.ttl = ttl
        self._clock = clock
        self._calendars: dict[str, Calendar] = {}
        self._home_lock = threading.Lock()
        self._home_loaded = False
        self._home_fresh_until = 0.0
        # Does the server's collection getlastmodified cover its items' (Radicale's does)? Then a
        # folder's stat needs no listing. Decided on the first calendar listed with items.
        self._folder_mtimes: bool | None = None
        # Set by the FUSE layer: makes the kernel forget what it cached of these paths. Called
        # with every path whose size, mtime or existence this tree changed, before the change is
        # served. Safe under this tree's locks: the kernel takes it without asking the daemon.
        self.invalidate: Callable[[list[str]], None] = _no_invalidate
        self._ahead_jobs: queue.SimpleQueue[tuple[Calendar, Item | None]] = queue.SimpleQueue()
        self._ahead_lock = threading.Lock()
        self._ahead_thread: threading.Thread | None = None
        self._changes = 0
        self._walked_at = float("-inf")
        self._walk_reach = -1  # the furthest calendar, in name order, a walking reader listed
        self._lead: Calendar | None = None  # the root's first listing: the next one follows it

    # --- public API (what fs.py calls) ------------------------------------------------

    @property
    def changes(self) -> int:
        """How many times what this tree shows has changed: unchanged, bytes read stay current."""
        return self._changes

    def getattr(self, path: str) -> Node:
        parts = split_path(path)
        if not parts:
            return self._root_node()
        cal = self._calendar(parts[0])
        if len(parts) == 1:
            self._folder_ready(cal)
            return Node("dir", cal.ino, 0, cal.shown_mtime, nlink=2)
        if len(parts) == 2:
            return self._child_node(cal, parts[1])
        raise NotFoundError(f"{path}: no such file")

    def readdir(self, path: str) -> list[tuple[str, Node]]:
        parts = split_path(path)
        if not parts:
            cals = self._home()
            self._walked_at, self._walk_reach = self._clock(), -1
            self._drop_unused_sent_ahead()  # from a walk before this one
            return [(c.name, Node("dir", c.ino, 0, c.shown_mtime, nlink=2)) for c in cals.values()]
        if len(parts) > 1:
            raise NotFoundError(f"{path}: not a directory")
        cal = self._calendar(parts[0])
        self._ensure_listed(cal)
        if self._walking():
            order = sorted(self._calendars)
            self._walk_reach = max(self._walk_reach, order.index(cal.name) if cal.name in order else -1)
            self._queue_ahead(cal, None)  # a walk: the next calendars are listed behind the reader
        entries = [(n, self._meta_node(cal, n, data)) for n, data in cal.meta().items()]
        with cal.lock:
            items = sorted(cal.items.values(), key=lambda i: i.name)
        for item in items:
            if cal.shown_local(item.name) is None:
                self._ensure_complete(cal, item)
                entries.append((item.name, self._item_node(item)))
        for name in list(cal.local):
            if cal.shown_local(name) is None:
                continue  # uploaded: listed above, as the server has it
            try:
                entries.append((name, self._child_node(cal, name)))
            except NotFoundError:
                continue  # a scratch file removed meanwhile (vim's 4913 probe)
        return entries

    def read_file(self, path: str) -> bytes:
        """The whole content of a file, exactly the bytes its size promises."""
        parts = split_path(path)
        if len(parts) != 2:
            raise NotFoundError(f"{path}: no such file")
        cal = self._calendar(parts[0])
        self._ensure_listed(cal)
        lf = cal.shown_local(parts[1])
        if lf is not None:
            return bytes(lf.data)
        meta = cal.meta()
        if parts[1] in meta:
            return meta[parts[1]]
        item = cal.items.get(parts[1])
        if item is None:
            raise NotFoundError(f"{path}: no such file")
        data = self._content(cal, item)
        item.served_etag = item.info.etag
        return data

    # --- for the write path -------------------------------------------------------------

    def calendar(self, name: str) -> Calendar:
        return self._calendar(name)

    def find_calendar(self, name: str) -> Calendar | None:
        return self._home().get(name)

    def known_calendar(self, name: str) -> Calendar | None:
        """The calendar as last listed, without asking the server."""
        return self._calendars.get(name)

    def mark_stale(self, cal: Calendar) -> None:
        """List the calendar again on its next use."""
        cal.stale = True

    def item(self, cal: Calendar, name: str) -> Item | None:
        self._ensure_listed(cal)
        return cal.items.get(name)

    @staticmethod
    def base_etag(item: Item | None) -> str | None:
        """The etag a write over ``item`` must match: the version the user last read."""
        if item is None:
            return None
        return item.served_etag or item.info.etag

    def has_items(self, cal: Calendar) -> bool:
        self._ensure_listed(cal)
        return bool(cal.items)

    def _changed(self, paths: list[str]) -> None:
        """Every change to what is shown goes through here, before it is served."""
        if paths:
            self._changes += 1
            self.invalidate(paths)

    def invalidate_home(self) -> None:
        self._home_fresh_until = 0.0

    def set_mtime(self, cal: Calendar, name: str | None, mtime_ns: int) -> None:
        """Remember a time set with utimens (rsync -a): on the folder (``name`` None), the
        metadata files, or an item (for its current etag only)."""
        if name is None:
            cal.user_mtime = mtime_ns
            self._save_listing(cal)
            return
        if name in (META_DISPLAYNAME, META_COLOR):
            cal.meta_mtime_ns = mtime_ns
            self._save_listing(cal)
            return
        item = self.item(cal, name)
        if item is None:
            raise NotFoundError(f"/{cal.name}/{name}: no such file")
        item.user_mtime = (item.info.etag, mtime_ns)
        self._save_listing(cal)

    def after_upload(self, cal: Calendar, name: str, url: str) -> str:
        """Show what the server stored under ``name`` (servers rewrite uploads; SabreDAV 4
        sends no ETag then): its etag, length and mtime, and its bytes in the cache."""
        info = self.client.item_info(url)
        data, etag = self.client.get(url)
        if not etag or (info is not None and info.etag != etag):
            # No ETag on the GET, or the item changed between the two requests: list it again
            # soon, and show these bytes under the etag the listing gave meanwhile.
            cal.stale = True
            etag = etag or (info.etag if info else "")
        server_mtime = info.mtime_ns if info is not None and info.etag == etag else None
        key = canonical_href(url, url)
        item = Item(info=ItemInfo(url=url, key=key, etag=etag, size=len(data)), name=name, size=len(data),
                    mtime_ns=server_mtime or data_mtime(data) or time.time_ns())
        with cal.lock:
            old = cal.items.get(name)
            if old is not None and old.complete:
                item.previous = (old.size or 0, old.shown_mtime)
            item.settle()
            if old is not None:
                cal.by_key.pop(old.info.key, None)
            cal.items[name] = item
            cal.by_key[key] = item
            cal.touch()
        self._remember(key, etag, data)
        self._save_listing(cal)
        self._changed([f"/{cal.name}/{name}", f"/{cal.name}", "/"])
        return etag

    def after_delete(self, cal: Calendar, name: str) -> None:
        with cal.lock:
            item = cal.items.pop(name, None)
            if item is not None:
                cal.by_key.pop(item.info.key, None)
            cal.touch()
        self._save_listing(cal)
        self._changed([f"/{cal.name}", "/"])

    def xattrs(self, path: str) -> dict[str, str]:
        """What ``getfattr -d`` shows: where a node lives on the server and its version."""
        parts = split_path(path)
        if not parts:
            return {"user.caldav.url": self.home_url}
        cal = self._calendar(parts[0])
        if len(parts) == 1:
            values = {"user.caldav.href": urlsplit(cal.info.url).path, "user.caldav.url": cal.info.url}
            if cal.info.ctag:
                values["user.caldav.ctag"] = cal.info.ctag
            if cal.info.sync_token:
                values["user.caldav.sync-token"] = cal.info.sync_token
            if cal.info.components:
                values["user.caldav.components"] = ",".join(cal.info.components)
            return values
        item = self.item(cal, parts[1]) if len(parts) == 2 else None
        if item is None:
            self.getattr(path)  # ENOENT for what does not exist
            return {}
        return {"user.caldav.href": urlsplit(item.info.url).path, "user.caldav.etag": item.info.etag,
                "user.caldav.url": item.info.url}

    def calendar_names(self) -> list[str]:
        return list(self._home())

    def stats(self) -> dict[str, object]:
        """Request counts, cache use and reachability, without asking the server."""
        return {
            "server": self.home_url,
            "reachable": self.client.session.reachable,
            "calendars": sorted(self._calendars),
            "items": sum(len(c.by_key) for c in self._calendars.values()),
            "cache_bytes": self.cache.used_bytes,
            "cache_entries": len(self.cache),
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            **self.client.session.stats.snapshot(),
        }

    # --- home-set -----------------------------------------------------------------------

    def _home(self) -> dict[str, Calendar]:
        if self._home_fresh_until > self._clock():
            return self._calendars
        with self._home_lock:
            if self._home_fresh_until > self._clock():
                return self._calendars
            try:
                infos = self._list_calendars()
            except (TransportError, ServerError, InvalidResponseError) as exc:
                if not self._home_loaded:
                    raise
                log.warning("keeping the last calendar list: %s", exc)
                self._home_fresh_until = self._clock() + min(self.ttl, RETRY_AFTER_FAILURE)
                return self._calendars
            self._apply_calendars(infos)
            self._home_loaded = True
            self._home_fresh_until = self._clock() + self.ttl
            return self._calendars

    def _list_calendars(self) -> list[CalendarInfo]:
        if self.calendar_url is None:
            return self.client.list_calendars(self.home_url)
        info = self.client.calendar_info(self.calendar_url)
        return [info] if info else []

    def _apply_calendars(self, infos: list[CalendarInfo]) -> None:
        by_key = {c.info.key: c for c in self._calendars.values()}
        assigned = names.assign({i.key: last_segment(i.url) for i in infos}, item=False)
        fresh: dict[str, Calendar] = {}
        gone: list[str] = []
        for info in infos:
            cal = by_key.get(info.key)
            if cal is None:
                cal = Calendar(info=info, name=assigned[info.key], ino=inode(info.key))
                self._restore_listing(cal)
            else:
                with cal.lock:
                    if info.change_tag is None or info.change_tag != cal.listed_tag:
                        cal.stale = True
                    if (info.displayname, info.color) != (cal.info.displayname, cal.info.color):
                        cal.meta_mtime_ns = max(time.time_ns(), cal.meta_mtime_ns + SECOND)
                        gone += [f"/{cal.name}/{META_DISPLAYNAME}", f"/{cal.name}/{META_COLOR}"]
                    if cal.name != assigned[info.key]:
                        gone.append(f"/{cal.name}")
                    if cal.server_folder_mtime and info.mtime_ns != cal.info.mtime_ns:
                        gone += [f"/{cal.name}", "/"]  # its mtime comes from this answer
                    cal.info = info
                    cal.name = assigned[info.key]
            # Decided on the first answer: later home-set requests may leave sync-token out.
            cal.syncable = cal.syncable or bool(info.sync_token)
            fresh[cal.name] = cal
        gone += [f"/{name}" for name in self._calendars if name not in fresh]
        if self._home_loaded and (gone or set(fresh) != set(self._calendars)):
            gone.append("/")
        self._calendars = fresh
        self._changed(gone)

    def _calendar(self, name: str) -> Calendar:
        cal = self._home().get(name)
        if cal is None:
            raise NotFoundError(f"/{name}: no such calendar")
        return cal

    def _root_node(self) -> Node:
        cals = self._home()
        mtime = 0
        for name in sorted(cals):
            # The root's mtime is the newest calendar's: stable across runs, so a repeated
            # rsync leaves the backup's top folder alone.
            cal = cals[name]
            if self._folder_mtimes is None:
                # The mount's first listing, which the root's stat waits for: what stats the root
                # goes on to read calendars (rsync, find), so the next one's listing follows this
                # one to the server (rsync reads it before it copies anything: 0.1 s sooner at
                # 6,000 items). Not for a calendar's own stat (`ls -l mnt/work`).
                self._lead = cal
            try:
                self._folder_ready(cal)
            finally:
                self._lead = None  # taken by then, if it was listed cold
            mtime = max(mtime, cal.shown_mtime)
        return Node("dir", 1, 0, mtime, nlink=2 + len(cals))

    # --- one calendar -----------------------------------------------------------------

    def _folder_ready(self, cal: Calendar) -> None:
        """Make the folder's own stat known: from the home-set where the server's collection
        mtime covers its items', else by listing the calendar (its mtime is its newest item's)."""
        if self._folder_mtimes and cal.info.mtime_ns is not None:
            cal.server_folder_mtime = True
            return
        self._ensure_listed(cal)

    def _judge_folder_mtimes(self, cal: Calendar) -> None:
        """After a listing: trust the server's collection getlastmodified for folder mtimes only
        while every calendar listed has it at or after its newest item's getlastmodified."""
        if self._folder_mtimes is not False and cal.by_key:
            newest = max((i.info.mtime_ns or 0 for i in cal.by_key.values()), default=0)
            if cal.info.mtime_ns is None or cal.server_mtimes is not True or newest > cal.info.mtime_ns:
                was, self._folder_mtimes = self._folder_mtimes, False
                for other in self._calendars.values():
                    other.server_folder_mtime = False
                cal.server_folder_mtime = False
                if was:
                    log.info("%s: the server's folder mtime is older than an item's; listing every "
                             "calendar for its folder's mtime", cal.name)
                    self._changed([f"/{c.name}" for c in self._calendars.values()] + ["/"])
                return
            self._folder_mtimes = True
        cal.server_folder_mtime = bool(self._folder_mtimes) and cal.info.mtime_ns is not None

    def _ensure_listed(self, cal: Calendar) -> None:
        self._home()
        if cal.listed and not cal.stale:
            return
        folder_mtime = cal.shown_mtime
        with cal.lock:
            if cal.listed and (not cal.stale or cal.retry_at > self._clock()):
                return
            # Take the tag before listing: a change during the listing then shows next time.
            tag = cal.info.change_tag
            whole = self._start_whole(cal)
            if whole is not None:
                tag = whole.tag  # sent ahead: current as of then
            try:
                infos, got = self._list(cal, whole)
            except (TransportError, ServerError, InvalidResponseError) as exc:
                if whole is not None:
                    whole.cancel()  # not sent yet: never; else its answer is dropped
                # Away, a proxy's 502/503, or a truncated answer: what is known stays (invariant 7).
                if not cal.listed:
                    raise
                log.warning("%s: keeping the last listing: %s", cal.name, exc)
                cal.retry_at = self._clock() + min(self.ttl, RETRY_AFTER_FAILURE)
                return
            except BaseException:
                if whole is not None:
                    whole.cancel()
                raise
            self._send_ahead(cal)  # a walk's next calendar, if not sent when the answers came in
            moved = self._apply_items(cal, infos)
            self._judge_folder_mtimes(cal)
            cal.listed_tag = tag
            cal.stale = False
            cal.listed = True
        try:
            moved += self._complete_all(cal, got)
        finally:
            # Also when the data could not be had: the new listing is what the kernel must see.
            if not cal.meta_mtime_ns:
                # Only now is the folder's mtime known on servers without getlastmodified (Xandikos).
                cal.meta_mtime_ns = cal.mtime_ns
            self._save_listing(cal)
            paths = [f"/{cal.name}/{name}" for name in moved]
            if cal.shown_mtime != folder_mtime:
                paths += [f"/{cal.name}", "/"]
            self._changed(paths)
            if len(cal.by_key) >= TRIM_AFTER:
                memory.give_back()

    def _list(self, cal: Calendar, whole: Whole | None = None) -> tuple[dict[str, ItemInfo], list[Fetched]]:
        """The calendar's members now, and the data that came with them: by sync-collection
        where that loses nothing, else by PROPFIND Depth 1 (which alone carries getlastmodified
        on Radicale), with the calendar-query of ``whole`` where it gives etags and sizes."""
        if cal.syncable and cal.server_mtimes is False:
            since = cal.sync_token if cal.listed else None
            try:
                result = self.client.sync_items(cal.info.url, since or "")
            except SyncTokenError as exc:
                log.info("%s: %s; listing it in full", cal.name, exc)
                cal.sync_token = None
            except (DavError, InvalidResponseError) as exc:
                log.info("%s: no sync-collection (%s); listing it in full from now on", cal.name, exc)
                cal.syncable, cal.sync_token = False, None
            else:
                infos = {k: i.info for k, i in cal.by_key.items()} if since else {}
                for key in result.removed:
                    infos.pop(key, None)
                infos.update(result.changed)
                cal.sync_token = result.token
                return infos, []
        got: list[Fetched] = []
        if whole is not None:
            infos, got = self.client.list_whole(cal.info.url, whole.answers)
        else:
            infos = self.client.list_items(cal.info.url)
        if infos:
            cal.server_mtimes = any(i.mtime_ns is not None for i in infos.values())
        return infos, got

    def _apply_items(self, cal: Calendar, infos: dict[str, ItemInfo]) -> list[str]:
        """Install a listing; returns the names of items that changed or went away."""
        changed = cal.listed and set(infos) != set(cal.by_key)
        moved = [i.name for k, i in cal.by_key.items() if k not in infos]
        by_key: dict[str, Item] = {}
        for key, info in infos.items():
            old = cal.by_key.get(key)
            if old is not None and old.info.etag == info.etag:
                old.info = info
                by_key[key] = old
                continue
            item = Item(info=info, size=info.size, mtime_ns=info.mtime_ns)
            if old is not None:
                changed = True
                moved.append(old.name)
                item.served_etag = old.served_etag
                if old.complete:
                    item.previous = (old.size or 0, old.shown_mtime)
            by_key[key] = item
        self._install(cal, by_key)
        newest = max((i.mtime_ns or 0 for i in by_key.values()), default=0)
        if changed:
            # khal takes a calendar folder's mtime as its ctag: any change must move it.
            cal.touch()
            cal.mtime_ns = max(newest, cal.mtime_ns)
        else:
            cal.mtime_ns = max(newest, cal.mtime_ns)
        return moved

    @staticmethod
    def _install(cal: Calendar, by_key: dict[str, Item]) -> None:
        """Make ``by_key`` the calendar's items, with names from the one naming table."""
        assigned = names.assign({k: last_segment(i.info.url) for k, i in by_key.items()}, item=True)
        items: dict[str, Item] = {}
        for key, item in by_key.items():
            item.name = assigned[key]
            item.settle()
            items[item.name] = item
        cal.by_key, cal.items = by_key, items

    # --- the saved listing (a remount lists nothing that has not changed) -----------------

    def _save_listing(self, cal: Calendar) -> None:
        if self.disk is None:
            return
        with cal.lock:  # under the lock, so that an older listing never overwrites a newer one
            if not cal.listed:
                return
            rows = [[i.info.key, i.info.url, i.info.etag, i.size, i.mtime_ns,
                     list(i.user_mtime) if i.user_mtime else None]
                    for i in cal.by_key.values()]
            listing = {"tag": cal.listed_tag, "mtime": cal.mtime_ns, "meta_mtime": cal.meta_mtime_ns,
                       "user_mtime": cal.user_mtime, "server_mtimes": cal.server_mtimes,
                       "sync_token": cal.sync_token, "items": rows}
            self.disk.save_listing(cal.info.key, listing)

    def _restore_listing(self, cal: Calendar) -> None:
        saved = self.disk.load_listing(cal.info.key) if self.disk else None
        if saved is None:
            return
        by_key: dict[str, Item] = {}
        try:
            for key, url, etag, size, mtime, user in saved["items"]:
                item = Item(info=ItemInfo(url=url, key=key, etag=etag, size=size, mtime_ns=mtime),
                            size=None if size is None else int(size),
                            mtime_ns=None if mtime is None else int(mtime))
                if user:
                    item.user_mtime = (str(user[0]), int(user[1]))
                by_key[key] = item
            tag = saved["tag"]
            cal.mtime_ns, cal.meta_mtime_ns = int(saved["mtime"]), int(saved["meta_mtime"])
            cal.user_mtime = saved.get("user_mtime")
            cal.server_mtimes, cal.sync_token = saved.get("server_mtimes"), saved.get("sync_token")
        except (KeyError, TypeError, ValueError):
            log.warning("saved listing of %s is unusable; listing it again", cal.name)
            return
        self._install(cal, by_key)
        cal.listed, cal.listed_tag = True, tag
        cal.stale = cal.info.change_tag is None or cal.info.change_tag != tag
        self._judge_folder_mtimes(cal)

    def _cached(self, item: Item) -> bytes | None:
        data = self.cache.get(item.info.key, item.info.etag)
        if data is None and self.disk is not None:
            data = self.disk.get(item.info.key, item.info.etag)
            if data is not None:
                self.cache.put(item.info.key, item.info.etag, data)
        return data

    def _has(self, item: Item) -> bool:
        key = (item.info.key, item.info.etag)
        return key in self.cache or (self.disk is not None and self.disk.has(*key))

    def _remember(self, key: str, etag: str, data: bytes) -> None:
        self.cache.put(key, etag, data)
        if self.disk is not None:
            self.disk.put(key, etag, data)

    def _start_whole(self, cal: Calendar) -> Whole | None:
        """For a calendar listed cold, whose listing brings its data (``Client.list_whole``): its
        requests, sent now, or the ones sent ahead for it (``_send_ahead``). Not where the data's
        line ends are known not to tell sizes (SabreDAV 1.8): a PROPFIND with getcontentlength
        lists those, and reads fetch the data."""
        sent, cal.sent_ahead = cal.sent_ahead, None
        if sent is not None:
            if not cal.listed and not sent.failed() and self._clock() - sent.sent_at < SENT_AHEAD_FOR:
                return sent
            sent.cancel()
        if cal.listed or self.client.keeps_line_ends is False or (cal.syncable and cal.server_mtimes is False):
            return None

        def answered() -> None:
            # The server is done with this calendar: a walking reader's next one goes now, while
            # this side reads these answers (about 0.15 s per 1,700 items).
            try:
                self._send_ahead(cal)
            except Exception:  # a bug: say so, but never fail the listing that called this
                log.exception("%s: sending the next listing ahead failed unexpectedly", cal.name)

        answers = self.client.start_whole(cal.info.url, answered)
        return Whole(answers, cal.info.change_tag, self._clock()) if answers is not None else None

    def _send_ahead(self, cal: Calendar) -> None:
        """In a walk, or after the root's first listing, send the next calendar's cold listing
        now, if the walk will list it: the server then never waits for this side between two
        calendars. Listings sent ahead that nobody took are dropped (they hold a whole
        calendar's answer)."""
        self._drop_unused_sent_ahead()
        at, nxt = self._next_calendar(cal)
        first = self._lead is cal
        if first:
            self._lead = None
        if nxt is None or nxt.listed or not (first or self._walk_wants(at)):
            return
        if not nxt.lock.acquire(blocking=False):
            return  # being listed already
        try:
            if not nxt.listed and nxt.sent_ahead is None:
                nxt.sent_ahead = self._start_whole(nxt)
        finally:
            nxt.lock.release()

    def _drop_unused_sent_ahead(self) -> None:
        now = self._clock()
        for cal in list(self._calendars.values()):
            if cal.sent_ahead is not None and now - cal.sent_ahead.sent_at >= SENT_AHEAD_FOR \
                    and cal.lock.acquire(blocking=False):
                try:
                    if cal.sent_ahead is not None and now - cal.sent_ahead.sent_at >= SENT_AHEAD_FOR:
                        cal.sent_ahead.cancel()
                        cal.sent_ahead = None
                finally:
                    cal.lock.release()

    def _complete_all(self, cal: Calendar, got: list[Fetched]) -> list[str]:
        """Keep the data that came with a listing (``got``: a cold calendar comes whole, see
        ``_start_whole``), and fetch that of items whose size or mtime only the data can tell,
        before anything is reported: a listing asks for no getcontentlength where the data's line
        ends tell the size (``Client.keeps_line_ends``), and Xandikos sends no getlastmodified.
        While those line ends are unknown, a listing fetches its data: the answer tells them.
        Returns the names of items dropped: gone from the server since the listing."""
        learn = self.client.keeps_line_ends is None
        with cal.fetch_lock:  # a reader of one of these waits for this, instead of fetching it again
            if got:
                self._keep(cal, got)
            with cal.lock:
                listed = list(cal.by_key.values())
            missing = [i for i in listed if not i.complete or (learn and not self._has(i))]
            try:
                if missing:
                    self._fetch(cal, missing)
            except CaldavfsError as exc:
                if any(not i.complete for i in missing):
                    raise
                # Sizes and mtimes are known: the listing stands; a reader fetches again.
                log.info("%s: fetching its data with the listing failed: %s", cal.name, exc)
        with cal.lock:
            gone = {k: i for k, i in cal.by_key.items() if not i.complete}
            if gone:
                # The server answered without them: deleted since the listing. Listed again soon.
                log.info("%s: %d items went away while it was listed", cal.name, len(gone))
                self._install(cal, {k: i for k, i in cal.by_key.items() if k not in gone})
                cal.stale = True
            cal.mtime_ns = max([cal.mtime_ns] + [i.mtime_ns or 0 for i in cal.by_key.values()])
        return [i.name for i in gone.values()]

    def _ensure_complete(self, cal: Calendar, item: Item) -> None:
        if not item.complete:
            self._content(cal, item)
            if not item.complete:
                raise TransportError(f"{cal.name}/{item.name}: size not known")

    def _child_node(self, cal: Calendar, name: str) -> Node:
        self._ensure_listed(cal)
        lf = cal.shown_local(name)
        if lf is not None:
            # The inode the item has (or will have once uploaded): vim refuses to save a file
            # whose inode changed while it was writing it (E949).
            item = cal.items.get(name)
            key = item.info.key if item is not None else canonical_href(cal.info.url + quote(name), cal.info.url)
            return Node("file", inode(key), len(lf.data), lf.mtime_ns)
        meta = cal.meta()
        if name in meta:
            return self._meta_node(cal, name, meta[name])
        item = cal.items.get(name)
        if item is None:
            raise NotFoundError(f"/{cal.name}/{name}: no such file")
        self._ensure_complete(cal, item)
        return self._item_node(item)

    def _meta_node(self, cal: Calendar, name: str, data: bytes) -> Node:
        return Node("file", inode(cal.info.key + "#" + name), len(data), cal.meta_mtime_ns or cal.mtime_ns)

    @staticmethod
    def _item_node(item: Item) -> Node:
        return Node("file", inode(item.info.key), item.size or 0, item.shown_mtime)

    # --- contents -----------------------------------------------------------------------

    def _content(self, cal: Calendar, item: Item) -> bytes:
        data = self._cached(item)
        if data is None:
            with cal.fetch_lock:  # a read-ahead of this very item may be on its way: wait for it
                data = self._cached(item)
                if data is None:
                    return self._fetch_for_reader(cal, item)
        if item.info.key in cal.ahead_marks:
            # The reader reached the batch read ahead last: fetch the one after it.
            cal.ahead_marks.discard(item.info.key)
            self._read_ahead(cal, item)
        return data

    def _fetch_for_reader(self, cal: Calendar, item: Item) -> bytes:
        """Fetch ``item`` with a batch of uncached siblings (under ``cal.fetch_lock``)."""
        ordered = self._ordered(cal)
        start = next((n for n, i in enumerate(ordered) if i is item), 0)
        batch = [item] + self._uncached_after(ordered, start, self.client.batch - 1)
        found = self._fetch(cal, batch)
        # A reader going through the folder in name order (rsync, tar, grep -r) has now
        # needed the batch after the last one: fetch the rest ahead of it, batch by batch.
        if start > 0 and ordered[start - 1].info.key in cal.last_batch:
            self._read_ahead(cal, batch[-1])
        cal.last_batch = frozenset(i.info.key for i in batch)
        cal.ahead_size = 0  # a reader's own miss: read-ahead starts small again
        data = found.get(item.info.key)
        if data is None:
            cal.stale = True
            raise InvalidResponseError(f"/{cal.name}/{item.name}: the server did not return its data")
        return data

    @staticmethod
    def _ordered(cal: Calendar) -> list[Item]:
        with cal.lock:
            return sorted(cal.items.values(), key=lambda i: i.name)

    def _uncached_after(self, ordered: list[Item], start: int, limit: int, *, wrap: bool = True) -> list[Item]:
        """Up to ``limit`` uncached items after ``ordered[start]``, in name order (rsync, tar and
        grep read a folder in that order), then from the folder's start if ``wrap``."""
        found: list[Item] = []
        for other in ordered[start + 1:] + (ordered[:start] if wrap else []):
            if len(found) >= limit:
                break
            if not self._has(other):
                found.append(other)
        return found

    def _read_ahead(self, cal: Calendar, after: Item) -> None:
        """Fetch the next batch after ``after`` in the background, while the reader works
        through what it has: the server's time then overlaps the reader's."""
        self._queue_ahead(cal, after)

    def _queue_ahead(self, cal: Calendar, after: Item | None) -> None:
        """A job for the read-ahead thread: the batch after ``after``, or with None, a listing
        of the next calendar after ``cal``."""
        self._ahead_jobs.put((cal, after))
        with self._ahead_lock:
            if self._ahead_thread is None:
                self._ahead_thread = threading.Thread(target=self._ahead_loop, name="caldavfs-ahead", daemon=True)
                self._ahead_thread.start()

    def _ahead_loop(self) -> None:
        while True:
            cal, after = self._ahead_jobs.get()
            try:
                self._ahead_job(cal, after)
            except Exception:  # a bug: say so, and keep the thread for the next job
                log.exception("%s: read-ahead failed unexpectedly", cal.name)

    def _ahead_job(self, cal: Calendar, after: Item | None) -> None:
        if after is None:
            self._list_next(cal)
            return
        with cal.fetch_lock:
            ordered = self._ordered(cal)
            start = next((n for n, i in enumerate(ordered) if i is after), None)
            if start is None:
                return  # gone meanwhile
            # No wrapping around here: a reader that started mid-folder has its own batches.
            size = min(cal.ahead_size * 2, self.client.batch * AHEAD_GROWTH) if cal.ahead_size else self.client.batch
            batch = self._uncached_after(ordered, start, size, wrap=False)
            if batch:
                cal.ahead_size = size
                try:
                    self._fetch(cal, batch, size)
                except CaldavfsError as exc:  # the reader's own fetch tries again and reports
                    log.info("%s: read-ahead failed: %s", cal.name, exc)
                    return
                cal.ahead_marks.add(batch[0].info.key)
                cal.last_batch = frozenset(i.info.key for i in batch)
                if len(cal.ahead_marks) < AHEAD_BATCHES:
                    self._read_ahead(cal, batch[-1])  # not that far ahead yet: go on
                return
        # All of this calendar is here: a reader going through the whole tree (rsync, tar)
        # goes on to the next folder, so list that one while the reader finishes this one.
        self._list_next(cal)

    def _walking(self) -> bool:
        return self._clock() - self._walked_at < WALK_WINDOW

    def _list_next(self, cal: Calendar) -> None:
        """List the calendar after ``cal`` in name order (readers walk the tree in that order),
        unless it is listed and fresh. In a walk, go on to the one after, up to WALK_AHEAD
        calendars past the furthest one the reader listed."""
        at, nxt = self._next_calendar(cal)
        if nxt is None:
            return
        if not nxt.listed or nxt.stale:
            try:
                self._ensure_listed(nxt)
            except CaldavfsError as exc:
                log.info("%s: read-ahead listing failed: %s", nxt.name, exc)
                return
        if self._walk_wants(at + 1):
            self._queue_ahead(nxt, None)

    def _next_calendar(self, cal: Calendar) -> tuple[int, Calendar | None]:
        """The calendar after ``cal`` in name order (readers walk the tree in that order), and
        its place in that order."""
        order = sorted(self._calendars)
        at = order.index(cal.name) + 1 if cal.name in order else len(order)
        return at, (self._calendars.get(order[at]) if at < len(order) else None)

    def _walk_wants(self, at: int) -> bool:
        """Whether a walking reader will soon list the calendar at place ``at`` in name order:
        up to WALK_AHEAD past the furthest one it listed."""
        return self._walking() and at <= self._walk_reach + WALK_AHEAD

    def _fetch(self, cal: Calendar, items: list[Item], batch: int | None = None) -> dict[str, bytes]:
        """Fetch and remember the data of ``items``: by multiget in batches (of ``batch``), or for
        more than a batch that is most of the calendar, by one calendar-query of all of it."""
        infos = [i.info for i in items]
        if batch is None and len(infos) > self.client.batch and 2 * len(infos) > len(cal.by_key):
            source = self.client.fetch_all(cal.info.url, infos)
        else:
            source = self.client.fetch(cal.info.url, infos, batch)
        return self._keep(cal, source)

    def _keep(self, cal: Calendar, source: Iterable[Fetched]) -> dict[str, bytes]:
        """Remember fetched data, and what it tells of its items (size; mtime where the server
        sends none; a newer version than listed)."""
        found: dict[str, bytes] = {}
        moved: dict[str, None] = {}  # names whose etag or size the data changed, once each
        try:
            for info, etag, data in source:
                with cal.lock:
                    item = cal.by_key.get(info.key)
                    if item is None:
                        continue
                    if etag != item.info.etag:
                        # Changed since the listing: show the new version, list again soon.
                        log.info("%s changed on the server since it was listed", info.url)
                        if item.complete:
                            item.previous = (item.size or 0, item.mtime_ns or 0)
                        item.info = ItemInfo(url=info.url, key=info.key, etag=etag, size=len(data))
                        item.mtime_ns = None
                        cal.stale = True
                        moved[item.name] = None
                    if item.size != len(data):
                        if item.size is not None:
                            moved[item.name] = None
                        if item.size is not None and item.previous is None:
                            log.info("%s: server's getcontentlength %d, data %d bytes", info.url,
                                     item.size, len(data))
                        item.size = len(data)
                    if item.mtime_ns is None:
                        item.mtime_ns = data_mtime(data) or cal.mtime_ns or 0
                    item.settle()
                self._remember(info.key, etag, data)
                found[info.key] = data
        finally:
            # Before any of these bytes are read: the kernel must not pair them with an old size.
            self._changed([f"/{cal.name}/{name}" for name in moved])
        return found


def _no_invalidate(paths: list[str]) -> None:
    """Without a kernel attribute cache (or outside a mount) there is nothing to take back."""


def split_path(path: str) -> list[str]:
    """'/a/b' -> ['a', 'b']."""
    return [p for p in path.split("/") if p]


