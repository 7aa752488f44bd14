"""The calendar-query a cold listing fetches its data with, against a scripted server: refused,
or leaving items out, it costs multigets and never an item.

On a server whose calendar-data shows its CRs (the stub's lxml writes them as ``&#13;``; Radicale
and Xandikos send them as they are), a listing after the first answer asks for no
getcontentlength, so items new to it are fetched with the listing: by one calendar-query when they
are more than a batch and most of the calendar.
"""

from __future__ import annotations

import logging

import pytest

from caldavfs.tree import Tree
from tests.faults.stubdav import FakeCalDAV, FakeItem, ics

BATCH = 4


def _items(first: int, count: int) -> list[FakeItem]:
    return [FakeItem(f"/alice/work/q{n:02d}.ics", ics(f"q{n}@caldavfs.test", f"Item {n}", pad=n * 5))
            for n in range(first, first + count)]


def _learn(dav: FakeCalDAV) -> Tree:
    """A tree that listed the calendar: the first listing asks for sizes and brings its data, by a
    calendar-query sent alongside its PROPFIND, whose answer showed CRs."""
    tree = dav.tree(ttl=0, batch=BATCH)
    assert tree.read_file("/work/q00.ics") == dav.items[0].data
    assert tree.client.keeps_line_ends
    assert dav.queries == 1
    return tree


def _grow(dav: FakeCalDAV, count: int) -> list[FakeItem]:
    new = _items(len(dav.items), count)
    dav.items.extend(new)
    dav.ctag = str(int(dav.ctag) + 1)
    return new


def _check_all(tree: Tree, dav: FakeCalDAV) -> None:
    entries = dict(tree.readdir("/work"))
    for item in dav.items:
        name = item.href.rsplit("/", 1)[-1]
        assert entries[name].size == len(item.data), name
        assert tree.read_file(f"/work/{name}") == item.data, name


def test_new_items_come_with_the_listing_in_one_query() -> None:
    with FakeCalDAV(_items(0, 3)) as dav:
        tree = _learn(dav)
        assert len(dav.reports) == 1, "the first listing's query brought every item: no multiget"
        _grow(dav, 3 * BATCH)
        _check_all(tree, dav)
        assert dav.queries == 2
        assert len(dav.reports) == 2, "the query brought every new item: no multiget"


def test_query_refused_costs_multigets_and_is_not_asked_again(caplog: pytest.LogCaptureFixture) -> None:
    with FakeCalDAV(_items(0, 3), query_status=501) as dav, caplog.at_level(logging.INFO, logger="caldavfs"):
        tree = _learn(dav)  # its query refused: the first listing's data came by multiget
        assert "fetching by calendar-multiget instead" in caplog.text
        assert dav.reports == [[i.href for i in dav.items]]
        reports = len(dav.reports)
        new = _grow(dav, 2 * BATCH + 1)
        _check_all(tree, dav)
        assert dav.queries == 1, "a calendar whose query failed is fetched by multiget from then on"
        multigets = dav.reports[reports:]  # a refused query is not among them
        assert sorted(h for hrefs in multigets for h in hrefs) == sorted(i.href for i in new)
        assert all(len(hrefs) <= BATCH for hrefs in multigets)


def test_query_leaving_items_out_fetches_them_by_multiget() -> None:
    left_out: list[str] = []

    def drop_some(n: int, hrefs: list[str]) -> list[str]:
        if len(hrefs) <= BATCH:
            return hrefs  # multigets are answered whole
        left_out[:] = hrefs[1::3]
        return [h for h in hrefs if h not in left_out]

    with FakeCalDAV(_items(0, 3), report_filter=drop_some) as dav:
        tree = _learn(dav)
        before = len(dav.reports)
        new = {i.href for i in _grow(dav, 3 * BATCH)}
        entries = dict(tree.readdir("/work"))
        assert dav.queries == 2 and left_out
        multigets = dav.reports[before + 1:]  # after the query's own
        assert sorted(h for hrefs in multigets for h in hrefs) == sorted(h for h in left_out if h in new), (
            "exactly the new items the query left out are asked by multiget")
        for item in dav.items:
            name = item.href.rsplit("/", 1)[-1]
            assert entries[name].size == len(item.data)
            assert tree.read_file(f"/work/{name}") == item.data
        assert len(dav.reports) == before + 1 + len(multigets), "the reads asked nothing more"


def test_a_query_older_than_its_listing_shows_its_version_and_the_next_listing_moves_on() -> None:
    # The PROPFIND for mtimes goes once the query is answered: an item changed between the two
    # shows the query's bytes and etag, never newer bytes under an older mtime. The next listing
    # sees the new etag: the new bytes, under a later mtime than shown, so a backup copies them.
    items = _items(0, 3 * BATCH)
    old = FakeItem(items[5].href, ics("q5@caldavfs.test", "Before the change"), etag='"before"')
    with FakeCalDAV(items, query_answers={old.href: old}) as dav:
        tree = dav.tree(ttl=60, batch=BATCH)
        entries = dict(tree.readdir("/work"))
        assert dav.queries == 1 and dav.reports[1:] == [], "listing and data came in one query"
        assert entries["q05.ics"].size == len(old.data)
        assert tree.read_file("/work/q05.ics") == old.data
        assert tree.xattrs("/work/q05.ics")["user.caldav.etag"] == '"before"'

        dav.query_answers.clear()
        tree.mark_stale(tree.calendar("work"))
        now = tree.getattr("/work/q05.ics")
        assert tree.read_file("/work/q05.ics") == items[5].data
        assert now.size == len(items[5].data) and now.mtime_ns > entries["q05.ics"].mtime_ns


def test_an_item_gone_while_listed_is_dropped_not_an_error() -> None:
    gone = "/alice/work/q09.ics"

    def without_gone(n: int, hrefs: list[str]) -> list[str]:
        return [h for h in hrefs if h != gone]

    with FakeCalDAV(_items(0, 3), report_filter=without_gone) as dav:
        tree = _learn(dav)
        _grow(dav, 3 * BATCH)
        names = {n for n, _ in tree.readdir("/work")}  # no EIO for the one the server left out
        assert "q09.ics" not in names and {"q00.ics", "q08.ics", "q10.ics"} <= names
        assert tree.calendar("work").stale, "listed again on its next use"


def _lf_item(name: str) -> FakeItem:
    return FakeItem(f"/alice/work/{name}", ics(f"{name}@caldavfs.test", "Stored with bare LFs").replace(b"\r\n", b"\n"))


def test_the_first_answer_tells_lf_items_from_crlf_ones_byte_exact() -> None:
    # Nothing is known of the server's line ends yet, and the listing asks no lengths: an item
    # without CRs (first in the answer) is LF as stored, because another item shows kept CRs.
    lf = _lf_item("a-lf.ics")
    with FakeCalDAV([lf, *_items(0, 3 * BATCH)]) as dav:
        tree = dav.tree(ttl=60, batch=BATCH)
        assert tree.client.keeps_line_ends is None
        _check_all(tree, dav)
        assert tree.client.keeps_line_ends is True
        assert dict(tree.readdir("/work"))["a-lf.ics"].size == len(lf.data)
        assert dav.queries == 1 and dav.reports[1:] == [], "listing and data came in one query"


def test_data_without_etags_is_matched_to_a_full_listing_byte_exact() -> None:
    # A query answer without getetag can't be keyed to a version: the calendar is listed again in
    # full, and its items fetched by multiget under the listing's etags, byte-exact.
    with FakeCalDAV([_lf_item("a-lf.ics"), *_items(0, 3 * BATCH)], report_etags=False) as dav:
        tree = dav.tree(ttl=60, batch=BATCH)
        tree.client.keeps_line_ends = True
        _check_all(tree, dav)
