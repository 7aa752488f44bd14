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
from urllib.parse import unquote, urlsplit

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
AHEAD = ("caldavfs-ahead", "caldavfs-query")  # the walk's thread, and the pool it sends ahead on


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


def _url(tree: Tree, name: str) -> str:
    cal = tree.known_calendar(name)
    assert cal is not None
    return cal.info.url


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


def test_first_listing_learns_line_ends_from_its_data(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    assert tree.client.keeps_line_ends is None
    sent = _spy_requests(tree)
    entries = dict(tree.readdir(f"/{BULK}"))
    # A cold listing: its PROPFIND asks for mtimes alone, and the calendar-query alongside it brings
    # etags and data. Its answer shows whether the data keeps line ends; where it does not
    # (SabreDAV 1.8), a PROPFIND with getcontentlength tells CRLF from LF.
    want = [("PROPFIND", False, False, False), ("REPORT", False, True, True)]
    if bulk.server.kind == "sabredav":
        want.insert(1, ("PROPFIND", True, True, False))
    assert sorted((s.method, b"getcontentlength" in s.body, b"getetag" in s.body, b"calendar-query" in s.body)
                  for s in _to(sent, BULK)) == want
    assert tree.client.keeps_line_ends == (bulk.server.kind != "sabredav")
    assert {n: entries[n].size for n in bulk.bodies} == {n: len(b) for n, b in bulk.bodies.items()}
    for name, want_bytes in bulk.bodies.items():
        assert tree.read_file(f"/{BULK}/{name}") == want_bytes, name
    assert len(_to(sent, BULK)) == len(want), "the reads found everything cached"


def test_cold_listing_brings_the_whole_calendar_in_one_query(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    _learn_line_ends(tree)
    keeps = tree.client.keeps_line_ends
    assert keeps == (bulk.server.kind != "sabredav"), "SabreDAV 1.8 sends calendar-data without CRs"

    sent = _spy_requests(tree)
    entries = dict(tree.readdir(f"/{BULK}"))
    assert sent == _to(sent, BULK), "the home-set was fresh: only the calendar is asked"
    if keeps:
        # The data answer gives etags and sizes: the PROPFIND asks only for the server's mtimes, and
        # only once the query is answered (an item changed between shows its old bytes, never its
        # new bytes under the old mtime).
        assert [s.method for s in sent] == ["REPORT", "PROPFIND"], sent
        assert sorted((s.method, b"getcontentlength" in s.body, b"getetag" in s.body, b"calendar-query" in s.body)
                      for s in sent) == [("PROPFIND", False, False, False), ("REPORT", False, True, True)], sent
        assert all(entries[n].mtime_ns > 0 for n in bulk.bodies)
    else:
        assert [s.method for s in sent] == ["PROPFIND"], sent
        assert b"getcontentlength" in sent[0].body
    listed = len(sent)
    etags = {unquote(urlsplit(h).path): e for h, e in servers.list_hrefs(bulk.server, _url(tree, BULK)).items()}
    for name in bulk.bodies:
        shown = tree.xattrs(f"/{BULK}/{name}")
        assert shown["user.caldav.etag"] == etags[unquote(shown["user.caldav.href"])], name

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

    # One listing each, in name order; the reader's thread sent none of the others'.
    listings = [(s.path.rstrip("/").rsplit("/", 1)[-1], s.thread) for s in sent if s.method == "PROPFIND"]
    listings = [(name, thread) for name, thread in listings if name in names]  # not the home-set
    # SabreDAV's first answer shows no CRs: the listings sent before it was read ask again, with lengths.
    assert list(dict.fromkeys(name for name, _ in listings)) == names
    assert len(listings) == len(names) + (2 if bulk.server.kind == "sabredav" else 0), listings
    assert all(thread.startswith(AHEAD) for name, thread in listings if name != BULK), listings
    queries = [(s.path.rstrip("/").rsplit("/", 1)[-1], s.thread) for s in sent if s.method == "REPORT"]
    assert all(thread.startswith(AHEAD) for name, thread in queries if name in names[1:]), queries
    before = -1
    while before != len(sent):  # until the background is done (Xandikos GETs an item or two)
        before = len(sent)
        time.sleep(0.3)
    for name in names:
        tree.readdir(f"/{name}")
    time.sleep(0.3)
    assert sent[before:] == [], "listed behind the reader: reading them asks nothing again"


def test_the_mounts_first_listing_sends_the_next_one_ahead(bulk: Bulk) -> None:
    """The root's first stat lists the first calendar (whether folder mtimes can come from the
    home-set); the next calendar's listing follows it to the server, and no other."""
    tree = _tree(bulk.server)
    sent = _spy_requests(tree)
    tree.getattr("/")
    bulk_cal, home = tree.calendar(BULK), tree.calendar("home")
    assert bulk_cal.listed
    assert servers.wait_for(lambda: home.listed or (home.sent_ahead is not None and home.sent_ahead.answers.done()))
    time.sleep(0.3)
    if tree.calendar("tasks").listed:
        # No folder mtimes in the home-set (Xandikos, SabreDAV): the root's stat lists them all.
        assert all(tree.calendar(n).listed for n in ("home", "tasks", "work"))
        return
    assert [n for n in ("tasks", "work") if _to(sent, n)] == [], "listed further ahead than the next calendar"
    assert all(s.thread.startswith(AHEAD) for s in _to(sent, "home")), _to(sent, "home")
    before = len(sent)
    names = {name for name, _ in tree.readdir("/home")} - {"displayname", "color"}
    assert names == {n if n.endswith(".ics") else n + ".ics" for n in bulk.server.dataset["home"].items}
    if bulk.server.kind != "sabredav":  # SabreDAV's first answer shows no CRs: listed again, with lengths
        assert sent[before:] == [], "the listing sent ahead was not used"


def test_no_walk_without_the_root(bulk: Bulk) -> None:
    tree = _tree(bulk.server)
    tree.readdir(f"/{BULK}")
    time.sleep(0.5)  # a read-ahead listing would have started by now
    assert [n for n in ("home", "tasks", "work") if tree.known_calendar(n).listed] == []  # type: ignore[union-attr]


def test_a_listing_sent_ahead_is_current_only_as_of_when_it_was_sent(fresh_radicale: servers.Server) -> None:
    tree = _tree(fresh_radicale)
    tree.readdir("/")  # a walk starts
    home, tasks = tree.calendar("home"), tree.calendar("tasks")
    tree.has_items(home)  # lists home: once its answers are in, the next calendar is sent ahead
    assert servers.wait_for(lambda: tasks.sent_ahead is not None and tasks.sent_ahead.answers.done())
    assert not tasks.listed

    servers.put_item(fresh_radicale, tasks.info.url, "later.ics", servers.make_event("later@caldavfs.test", "Later"))
    tree.invalidate_home()  # the home-set now shows the calendar's new change tag
    first = {name for name, _ in tree.readdir("/tasks")}  # from the answers sent ahead: may predate it
    tree.invalidate_home()
    assert "later.ics" in {name for name, _ in tree.readdir("/tasks")}, (
        f"a listing sent before the change was taken for current: {sorted(first)}")
