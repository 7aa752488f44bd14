"""Listings that bring the data along, on real servers (no FUSE).

A server whose calendar-data shows its CRs (Radicale, Xandikos) tells each item's exact bytes, so
once an answer has shown that, a listing asks for no getcontentlength (the property that costs
Radicale most) and takes sizes from the data: a calendar listed cold comes whole in one
calendar-query REPORT. The first listing asks for the length and brings its data, to learn that.
SabreDAV 1.8 sends LF whatever it stores, so there later listings keep asking for the length and
data comes on a read. A reader that listed the root walks the tree:
each calendar it lists gets the next one listed behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from caldavfs.client import Client
from caldavfs.dav import DavSession, Response
from caldavfs.tree import WALK_AHEAD, Tree
from tests import servers
from tests.conftest import KINDS

pytestmark = pytest.mark.integration

BATCH = 5
ITEMS = 12  # more than a batch: a cold listing fetches them with one calendar-query
BULK = "bulk"  # sorts before the standard calendars ("home", "tasks", "work")
LF_ITEM = "lf.ics"
AHEAD = "caldavfs-ahead"


@dataclass
class Bulk:
    server: servers.Server
    bodies: dict[str, bytes]  # item name -> the server's GET bytes


@pytest.fixture(scope="module", params=KINDS)
def bulk(request: pytest.FixtureRequest) -> Iterator[Bulk]:
    """The standard dataset plus a calendar of ITEMS items and one uploaded with bare LFs (SabreDAV
    keeps it so, Radicale and Xandikos rewrite it with CRLF). Read-only for the tests."""
    bodies = {f"b{n:02d}.ics": servers.make_event(f"b{n}@caldavfs.test", f"Bulk {n} \u00e9t\u00e9",
                                                  description="x" * (n * 11)) for n in range(ITEMS)}
    bodies[LF_ITEM] = servers.make_event("lf@caldavfs.test", "Bare LF").replace(b"\r\n", b"\n")
    with servers.with_calendar(request.param, BULK, bodies) as (srv, served):
        yield Bulk(srv, served)


def _tree(srv: servers.Server) -> Tree:
    client = Client(DavSession(username=srv.username, password=srv.password, timeout=10), batch=BATCH)
    found = client.discover(srv.base_url)
    return Tree(client, found.home_url, ttl=60.0)


@dataclass
class Sent:
    method: str
    path: str
    body: bytes
    thread: str


def _spy_requests(tree: Tree) -> list[Sent]:
    """Every request the tree sends from now on (passed on to the real server unchanged)."""
    sent: list[Sent] = []
    real = tree.client.session.request

    def spy(method: str, url: str, **kw: Any) -> Response:
        sent.append(Sent(method, url, kw.get("body") or b"", threading.current_thread().name))
        return real(method, url, **kw)

    tree.client.session.request = spy  # type: ignore[method-assign]
    return sent


def _learn_line_ends(tree: Tree) -> None:
    """A first listing: its data shows whether the server's calendar-data keeps CRs."""
    tree.readdir("/work")
    assert tree.client.keeps_line_ends is not None


def _to(sent: list[Sent], calendar: str) -> list[Sent]:
    return [s for s in sent if s.path.rstrip("/").endswith(f"/{calendar}")]


def test_first_listing_asks_for_sizes_and_learns_from_its_data(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    assert tree.client.keeps_line_ends is None
    sent = _spy_requests(tree)
    entries = dict(tree.readdir(f"/{BULK}"))
    # Nothing has shown yet whether the data keeps its line ends: the length decides them, and the
    # listing brings its data along, whose answer tells the next listings.
    # Both at once: the query goes out alongside the PROPFIND.
    assert sorted((s.method, b"getcontentlength" in s.body, b"calendar-query" in s.body)
                  for s in _to(sent, BULK)) == [("PROPFIND", True, False), ("REPORT", False, True)]
    assert tree.client.keeps_line_ends == (bulk.server.kind != "sabredav")
    assert {n: entries[n].size for n in bulk.bodies} == {n: len(b) for n, b in bulk.bodies.items()}
    for name, want in bulk.bodies.items():
        assert tree.read_file(f"/{BULK}/{name}") == want, name
    assert len(_to(sent, BULK)) == 2, "the reads found everything cached"


def test_cold_listing_brings_the_whole_calendar_in_one_query(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    _learn_line_ends(tree)
    keeps = tree.client.keeps_line_ends
    assert keeps == (bulk.server.kind != "sabredav"), "SabreDAV 1.8 sends calendar-data without CRs"

    sent = _spy_requests(tree)
    entries = dict(tree.readdir(f"/{BULK}"))
    assert sent == _to(sent, BULK), "the home-set was fresh: only the calendar is asked"
    if keeps:
        assert sorted((s.method, b"getcontentlength" in s.body, b"calendar-query" in s.body) for s in sent) == [
            ("PROPFIND", False, False), ("REPORT", False, True)], sent
    else:
        assert [s.method for s in sent] == ["PROPFIND"], sent
        assert b"getcontentlength" in sent[0].body
    listed = len(sent)

    for name, want in bulk.bodies.items():
        assert entries[name].size == len(want), name
        got = tree.read_file(f"/{BULK}/{name}")
        assert got == want, f"{name}: {got[:60]!r} is not the server's {want[:60]!r}"
    if keeps:
        assert len(sent) == listed, "every item came with the listing: a read asks nothing"
    # SabreDAV keeps the bare-LF upload as it came (Radicale and Xandikos rewrite it with CRLF):
    # the length told the listing which line ends to serve.
    assert (b"\r\n" not in bulk.bodies[LF_ITEM]) == (bulk.server.kind == "sabredav")


def test_a_walk_lists_the_next_calendars_behind_the_reader(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    sent = _spy_requests(tree)
    names = sorted(name for name, _ in tree.readdir("/"))
    assert names == [BULK, "home", "tasks", "work"]

    def listed() -> list[str]:
        return [n for n in names if tree.known_calendar(n).listed]  # type: ignore[union-attr]

    tree.readdir(f"/{BULK}")
    # The reader listed the first calendar: the next WALK_AHEAD are listed behind it, no more.
    assert servers.wait_for(lambda: listed() == names[:1 + WALK_AHEAD]), listed()
    time.sleep(0.3)
    assert listed() == names[:1 + WALK_AHEAD], "the walk ran further ahead of the reader than WALK_AHEAD"
    tree.readdir(f"/{names[1]}")  # the reader goes on: so does the walk
    assert servers.wait_for(lambda: listed() == names), listed()

    ahead = [s.path for s in sent if s.method == "PROPFIND" and s.thread == AHEAD]
    assert [p.rstrip("/").rsplit("/", 1)[-1] for p in ahead] == names[1:]
    reader = [s.path for s in sent if s.method == "PROPFIND" and s.thread != AHEAD]
    assert [p.rstrip("/").rsplit("/", 1)[-1] for p in reader if BULK in p] == [BULK]
    before = -1
    while before != len(sent):  # until the background is done (Xandikos GETs an item or two)
        before = len(sent)
        time.sleep(0.3)
    for name in names:
        tree.readdir(f"/{name}")
    time.sleep(0.3)
    assert sent[before:] == [], "listed behind the reader: reading them asks nothing again"


def test_no_walk_without_the_root(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    time.sleep(0.5)  # a read-ahead listing would have started by now
    assert [n for n in ("home", "tasks", "work") if tree.known_calendar(n).listed] == []  # type: ignore[union-attr]
