"""Read-ahead and kernel-cache invalidation of a Tree over a real server (no FUSE).

A miss fetches the item with up to ``batch - 1`` uncached siblings in name order (one
calendar-multiget REPORT). A reader that goes on to the item right after that batch (rsync, tar,
grep -r) makes a background thread ("caldavfs-ahead") fetch the following batches, and, once a
calendar is all here, list the next calendar in name order. ``Tree.invalidate`` gets every path whose
attributes a listing or a fetch changed.

Xandikos sends no getlastmodified: its listing fetches every item's data at once, so there is nothing
to read ahead there; the read-ahead tests run on the servers whose listings carry sizes and times.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest

from caldavfs.client import Client, ItemInfo
from caldavfs.dav import DavSession
from caldavfs.errors import TransportError
from caldavfs.model import Calendar, Item
from caldavfs.tree import AHEAD_GROWTH, Tree
from tests import servers
from tests.conftest import KINDS

pytestmark = pytest.mark.integration

BATCH = 5
ITEMS = 23  # four whole batches and a partial one
BULK = "bulk"  # sorts before the standard calendars: "home" is the next one in name order
NEXT = "home"
AHEAD = "caldavfs-ahead"
DEADLINE = 10.0
# Servers whose listing carries each item's size and mtime, so that data is fetched on a read only.
READAHEAD_KINDS = [k for k in KINDS if k != "xandikos"]


@dataclass
class Bulk:
    server: servers.Server
    bodies: dict[str, bytes]  # item name -> the server's GET bytes, in name order


def _body(n: int) -> bytes:
    return servers.make_event(f"bulk-{n}@caldavfs.test", f"Bulk item {n}", dtstart=f"202602{n % 28 + 1:02d}T090000Z",
                              description="x" * (n * 7))


@pytest.fixture(scope="module", params=READAHEAD_KINDS)
def bulk(request: pytest.FixtureRequest) -> Iterator[Bulk]:
    """A server with the standard dataset plus a calendar of ITEMS items (read-only for the tests)."""
    with servers.with_calendar(request.param, BULK, {f"b{n:02d}.ics": _body(n) for n in range(ITEMS)}) as (srv, served):
        yield Bulk(srv, served)


def _tree(srv: servers.Server, *, ttl: float = 60.0) -> Tree:
    client = Client(DavSession(username=srv.username, password=srv.password, timeout=10), batch=BATCH)
    # The first listing of a mount brings its data, to learn whether the server's data keeps its
    # line ends (test_listing_data). Start as after an answer that showed none (SabreDAV 1.8):
    # listings carry sizes and data comes on a read, the path read-ahead serves. An answer with
    # CRs (Radicale) still turns this on, as it would in a mount.
    client.keeps_line_ends = False
    found = client.discover(srv.base_url)
    return Tree(client, found.home_url, ttl=ttl)


def _count(tree: Tree, method: str | None = None) -> int:
    stats = tree.client.session.stats
    with stats.lock:
        return stats.requests if method is None else int(stats.by_method[method])


def _wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    return servers.wait_for(condition, timeout)


@dataclass
class Fetches:
    """Every ``client.fetch`` the tree makes in BULK: (thread name, item names asked), in call order."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    fail_in: str | None = None  # make fetches on this thread fail ...
    fail_after: int = 0  # ... after yielding this many items (the server stops answering)

    def by(self, thread: str) -> list[list[str]]:
        return [names for who, names in self.calls if who == thread]

    def names(self) -> list[str]:
        return [n for _, names in self.calls for n in names]


def _spy_fetch(tree: Tree, fetches: Fetches) -> None:
    real = tree.client.fetch

    def spy(calendar_url: str, items: Sequence[ItemInfo],
            batch: int | None = None) -> Iterator[tuple[ItemInfo, str, bytes]]:
        who = threading.current_thread().name
        if not calendar_url.rstrip("/").endswith(f"/{BULK}"):
            # The next calendar, listed ahead, brings its data along once the server's answers
            # showed their line ends (test_listing_data): not this calendar's read-ahead.
            yield from real(calendar_url, items, batch)
            return
        fetches.calls.append((who, [unquote(i.url.rsplit("/", 1)[-1]) for i in items]))
        if who != fetches.fail_in:
            yield from real(calendar_url, items, batch)
            return
        if fetches.fail_after:
            for n, got in enumerate(real(calendar_url, items, batch), 1):
                yield got
                if n >= fetches.fail_after:
                    break
        raise TransportError(f"REPORT {calendar_url}: no answer within 10 s (injected by the test)")

    tree.client.fetch = spy  # type: ignore[method-assign]


@dataclass
class AheadJobs:
    """Read-ahead jobs handed to the background thread, and those it finished."""

    queued: int = 0
    done: int = 0

    def idle(self) -> bool:
        return self.done >= self.queued


def _spy_ahead(tree: Tree) -> AheadJobs:
    jobs = AheadJobs()
    queue_job, run_job = tree._read_ahead, tree._ahead_job

    def read_ahead(cal: Calendar, after: Item) -> None:
        jobs.queued += 1  # on the reader's thread, before the job can run
        queue_job(cal, after)

    def ahead_job(cal: Calendar, after: Item) -> None:
        try:
            run_job(cal, after)
        finally:
            jobs.done += 1

    tree._read_ahead = read_ahead  # type: ignore[method-assign]
    tree._ahead_job = ahead_job  # type: ignore[method-assign]
    return jobs


def _read_in_order(tree: Tree, bulk: Bulk, *, after_each: Callable[[], object] = lambda: None) -> None:
    for name, want in bulk.bodies.items():
        got = tree.read_file(f"/{BULK}/{name}")
        assert got == want, f"/{BULK}/{name}: read {len(got)} bytes that differ from the server's {len(want)}"
        after_each()


# --- read-ahead -----------------------------------------------------------------------------------


def test_one_read_fetches_one_batch_and_reads_nothing_ahead(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    fetches = Fetches()
    _spy_fetch(tree, fetches)
    names = list(bulk.bodies)

    assert tree.read_file(f"/{BULK}/{names[7]}") == bulk.bodies[names[7]]
    assert _count(tree, "REPORT") == 1, f"one read of one item: expected 1 REPORT, got {_count(tree, 'REPORT')}"
    assert fetches.calls == [("MainThread", names[7:7 + BATCH])], (
        f"expected one multiget of the item and the {BATCH - 1} after it, on the reader's thread: {fetches.calls}")
    before = _count(tree)
    time.sleep(1.0)  # the absence of background requests: nothing to wait for
    assert _count(tree) == before, (
        f"a single read started background requests: {tree.client.session.stats.snapshot()}, {fetches.calls}")

    # The siblings came along: reading them costs nothing, and (not marked) starts no read-ahead.
    for name in names[8:7 + BATCH]:
        assert tree.read_file(f"/{BULK}/{name}") == bulk.bodies[name]
    time.sleep(0.5)
    assert _count(tree) == before, f"reading the fetched siblings made requests: {fetches.calls}"


def test_sequential_reader_gets_batches_fetched_ahead(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    fetches = Fetches()
    _spy_fetch(tree, fetches)

    # A reader in another process (rsync over FUSE) leaves the daemon's threads the GIL while it
    # works; one here in the test's own thread must let go of it too, or it beats the read-ahead
    # thread to every batch.
    _read_in_order(tree, bulk, after_each=lambda: time.sleep(0.002))

    reports = _count(tree, "REPORT")
    assert reports <= math.ceil(ITEMS / BATCH) + 1, (
        f"reading {ITEMS} items in order in batches of {BATCH}: expected at most "
        f"{math.ceil(ITEMS / BATCH) + 1} REPORTs, got {reports}: {fetches.calls}")
    assert fetches.by(AHEAD), f"no batch was fetched by the {AHEAD} thread: {fetches.calls}"
    assert sorted(fetches.names()) == list(bulk.bodies), (
        f"expected every item fetched exactly once: {fetches.calls}")
    assert all(len(names) <= (BATCH * AHEAD_GROWTH if who == AHEAD else BATCH) for who, names in fetches.calls), (
        f"a fetch larger than its bound (reader {BATCH}, read-ahead {BATCH * AHEAD_GROWTH}): {fetches.calls}")


def test_a_patient_reader_finds_every_later_batch_fetched_ahead(bulk: Bulk) -> None:
    """A reader slower than the server (it waits for the background after each file) never waits
    for the server again after its second batch."""
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    fetches = Fetches()
    _spy_fetch(tree, fetches)
    jobs = _spy_ahead(tree)

    def settle() -> None:
        assert _wait_for(jobs.idle), f"read-ahead jobs still running after {DEADLINE} s ({jobs})"

    _read_in_order(tree, bulk, after_each=settle)

    names = list(bulk.bodies)
    assert fetches.by("MainThread") == [names[:BATCH], names[BATCH:2 * BATCH]], (
        f"expected the reader itself to fetch only the first two batches: {fetches.calls}")
    # Read-ahead requests start at one batch and double, up to AHEAD_GROWTH batches.
    want_ahead, start, size = [], 2 * BATCH, BATCH
    while start < ITEMS:
        want_ahead.append(names[start:start + size])
        start, size = start + size, min(size * 2, BATCH * AHEAD_GROWTH)
    assert fetches.by(AHEAD) == want_ahead, f"expected the {AHEAD} thread to fetch {want_ahead}: {fetches.calls}"
    # Plus one for the next calendar's listing, which brings its two items along where the server's
    # data showed its line ends (Radicale; SabreDAV 1.8 lists with sizes and fetches on a read).
    brought = 1 if tree.client.keeps_line_ends else 0
    assert _count(tree, "REPORT") == 2 + len(want_ahead) + brought, fetches.calls


@pytest.mark.parametrize("next_listed", [False, True], ids=["next-unlisted", "next-listed"])
def test_next_calendar_is_listed_ahead(bulk: Bulk, next_listed: bool) -> None:
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    if next_listed:
        tree.readdir(f"/{NEXT}")
    nxt = tree.known_calendar(NEXT)
    assert nxt is not None and nxt.listed == next_listed
    listings: list[tuple[str, str]] = []
    real = tree.client.list_items

    def spy(calendar_url: str, **kw: bool) -> dict[str, ItemInfo]:
        listings.append((threading.current_thread().name, calendar_url))
        return real(calendar_url, **kw)

    tree.client.list_items = spy  # type: ignore[method-assign]
    jobs = _spy_ahead(tree)
    propfinds = _count(tree, "PROPFIND")

    _read_in_order(tree, bulk)

    if next_listed:
        assert _wait_for(jobs.idle), f"read-ahead jobs still running after {DEADLINE} s ({jobs})"
        assert jobs.queued, "reading a whole calendar in order started no read-ahead"
        assert _count(tree, "PROPFIND") == propfinds, f"a listed, fresh {NEXT} was listed again: {listings}"
        return
    assert _wait_for(lambda: nxt.listed), f"{NEXT} (next in name order) was not listed within {DEADLINE} s"
    assert _wait_for(jobs.idle), f"read-ahead jobs still running after {DEADLINE} s ({jobs})"
    assert _count(tree, "PROPFIND") == propfinds + 1, (
        f"expected exactly one PROPFIND (listing {NEXT}) after reading {BULK}, got "
        f"{_count(tree, 'PROPFIND') - propfinds}: {listings}")
    # Listed behind the reader: on the read-ahead thread, or the pool it sends requests on.
    assert len(listings) == 1 and listings[0][0].startswith((AHEAD, "caldavfs-query")), (
        f"expected {NEXT} listed behind the reader: {listings}")
    others = {n: c.listed for n in ("tasks", "work") if (c := tree.known_calendar(n)) is not None}
    assert others == {"tasks": False, "work": False}, f"only the next calendar may be listed ahead: {others}"


@pytest.mark.parametrize("fail_after", [0, 2], ids=["no-answer", "cut-mid-batch"])
def test_a_failing_read_ahead_loses_nothing(bulk: Bulk, fail_after: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    fetches = Fetches(fail_in=AHEAD, fail_after=fail_after)
    _spy_fetch(tree, fetches)
    jobs = _spy_ahead(tree)

    # A patient reader (it lets the background run after each file; an in-process reader that
    # never waits would beat the read-ahead thread to every batch): its own fetches take over
    # what the background lost.
    _read_in_order(tree, bulk, after_each=lambda: _wait_for(jobs.idle))
    assert _wait_for(jobs.idle), f"read-ahead jobs still running after {DEADLINE} s ({jobs})"

    assert fetches.by(AHEAD), f"the test injected nothing: no fetch ran on the {AHEAD} thread ({fetches.calls})"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "a failed read-ahead was logged as an error: " + "; ".join(r.getMessage() for r in errors)
    failed = [r for r in caplog.records if "read-ahead failed" in r.getMessage()]
    assert failed and all(r.levelno == logging.INFO for r in failed), (
        f"expected the failed read-ahead noted at INFO: {[(r.levelname, r.getMessage()) for r in failed]}")
    # Once more from the cache: every item is there, whole and right.
    before = _count(tree)
    _read_in_order(tree, bulk)
    assert _count(tree) == before, "items fetched before the failure were not kept"


# --- invalidation of the kernel's cached attributes -------------------------------------------------


@dataclass
class Invalidations:
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, paths: list[str]) -> None:
        self.calls.append(list(paths))

    def take(self) -> set[str]:
        """The paths invalidated since the last take."""
        paths = {p for call in self.calls for p in call}
        self.calls.clear()
        return paths


def _invalidations(tree: Tree) -> Invalidations:
    recorder = Invalidations()
    tree.invalidate = recorder
    return recorder


def test_listing_invalidates_changed_and_removed_items_and_the_folder(fresh_server: servers.Server) -> None:
    srv = fresh_server
    work = srv.dataset["work"]
    tree = _tree(srv, ttl=0)  # every readdir asks the server
    inval = _invalidations(tree)

    for name, node in tree.readdir("/work"):
        assert len(tree.read_file(f"/work/{name}")) == node.size, f"/work/{name}: size and bytes disagree"
    first = inval.take()
    # Nothing the kernel holds can be wrong before the first listing: no item is invalidated. (The
    # folder and "/" may be, their mtime went from unknown to known.)
    assert first <= {"/work", "/"}, f"a first listing invalidated {sorted(first)}"

    tree.readdir("/work")
    assert inval.take() == set(), "listing an unchanged calendar again invalidated paths"

    edited, removed = work.items["team meeting.ics"], work.items["alarm.ics"]
    time.sleep(1.1)  # a later second than the seeding, for servers with 1 s getlastmodified
    new = servers.make_event(edited.uid, "Team meeting, moved to the big room")
    assert len(new) != len(edited.body)
    servers.put_item(srv, work.url, edited.name, new, etag=edited.etag)
    servers.delete_item(srv, removed.url, removed.etag)
    tree.readdir("/work")  # lists the calendar again (a folder's own stat may not: Radicale's comes from the home-set)
    mtime = tree.getattr("/work").mtime_ns
    got = inval.take()
    assert got >= {"/work/team meeting.ics", "/work/alarm.ics"}, f"changed and removed items not invalidated: {got}"
    assert {"/work", "/"} <= got, f"the folder's mtime moved ({mtime}) but it was not invalidated: {got}"
    assert {p for p in got if p.startswith("/work/")} == {"/work/team meeting.ics", "/work/alarm.ics"}, (
        f"expected only the changed and the removed item invalidated: {sorted(got)}")
    want = servers.get_item(srv, edited.url)
    assert tree.read_file("/work/team meeting.ics") == want
    assert tree.getattr("/work/team meeting.ics").size == len(want)

    # A new item moves the folder's mtime alone: the folder and "/" are invalidated, no item.
    servers.put_item(srv, work.url, "new one.ics", servers.make_event("new-one@caldavfs.test", "Brand new"))
    tree.readdir("/work")
    assert tree.getattr("/work").mtime_ns > mtime
    assert inval.take() == {"/work", "/"}, "expected the folder and the root invalidated on an added item"


@pytest.fixture(params=READAHEAD_KINDS)
def fresh_readahead_server(request: pytest.FixtureRequest) -> servers.Server:
    srv: servers.Server = request.getfixturevalue(f"fresh_{request.param}")
    return srv


def test_fetch_invalidates_an_item_that_changed_since_the_listing(fresh_readahead_server: servers.Server) -> None:
    srv = fresh_readahead_server
    work = srv.dataset["work"]
    item = work.items["team meeting.ics"]
    tree = _tree(srv, ttl=60)  # the listing stays: the change shows in the fetched data only
    inval = _invalidations(tree)
    listed = tree.getattr("/work/team meeting.ics")
    assert listed.size == len(item.body)
    inval.take()

    servers.put_item(srv, work.url, item.name, servers.make_event(item.uid, "Team meeting, moved"), etag=item.etag)
    want = servers.get_item(srv, item.url)
    served: list[set[str]] = []
    real_read = tree.read_file

    def read_file(path: str) -> bytes:
        data = real_read(path)
        served.append(inval.take())  # what was invalidated by the time the bytes are handed out
        return data

    assert read_file("/work/team meeting.ics") == want, "the read did not return the server's new bytes"
    assert served == [{"/work/team meeting.ics"}], (
        f"expected the item invalidated before its new bytes were served: {served}")
    assert tree.getattr("/work/team meeting.ics").size == len(want)
