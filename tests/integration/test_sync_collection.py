"""Incremental listing by sync-collection (RFC 6578) where it loses nothing, PROPFIND elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from caldavfs.client import Client, ItemInfo, SyncResult, SyncTokenError
from caldavfs.dav import DavSession
from caldavfs.tree import Tree
from tests import servers

pytestmark = pytest.mark.integration


def _tree(srv: servers.Server) -> Tree:
    client = Client(DavSession(username=srv.username, password=srv.password, timeout=10))
    found = client.discover(srv.base_url)
    return Tree(client, found.home_url, ttl=0)


def _reports(tree: Tree) -> int:
    return int(tree.client.session.stats.by_method["REPORT"])


def _propfinds(tree: Tree) -> int:
    return int(tree.client.session.stats.by_method["PROPFIND"])


def _count_full_listings(tree: Tree) -> list[str]:
    """Record every full (PROPFIND Depth 1) listing the tree makes, and let it through."""
    calls: list[str] = []
    real = tree.client.list_items

    def spy(url: str, **kw: Any) -> dict[str, ItemInfo]:
        calls.append(url)
        return real(url, **kw)

    tree.client.list_items = spy  # type: ignore[method-assign]
    return calls


def test_xandikos_changes_come_by_sync_collection(fresh_xandikos: servers.Server) -> None:
    srv = fresh_xandikos
    cal = srv.dataset["home"]
    tree = _tree(srv)
    full = _count_full_listings(tree)
    assert {n for n, _ in tree.readdir("/home")} >= set(cal.items)
    assert len(full) == 1  # the first listing tells that the server sends no getlastmodified

    servers.put_item(srv, cal.url, "first.ics", servers.make_event("first@caldavfs.test", "First"))
    assert "first.ics" in {n for n, _ in tree.readdir("/home")}  # by sync-collection, token ""
    assert tree.calendar("home").sync_token

    dentist = cal.items["dentist.ics"]
    before = tree.getattr("/home/dentist.ics")
    servers.put_item(srv, cal.url, dentist.name, dentist.sent.replace(b"Dentist", b"Dentist (moved)"),
                     etag=dentist.etag)
    servers.put_item(srv, cal.url, "new one.ics", servers.make_event("new-one@caldavfs.test", "Brand new"))
    servers.delete_item(srv, cal.items["birthday.ics"].url, cal.items["birthday.ics"].etag)
    listed = {n for n, _ in tree.readdir("/home")}  # by sync-collection, the changes only
    assert "new one.ics" in listed and "birthday.ics" not in listed and "first.ics" in listed
    assert tree.read_file("/home/dentist.ics") == servers.get_item(srv, dentist.url)
    assert b"Dentist (moved)" in tree.read_file("/home/dentist.ics")
    assert tree.getattr("/home/dentist.ics").mtime_ns > before.mtime_ns
    assert tree.read_file("/home/new one.ics") == servers.get_item(srv, cal.url + "new%20one.ics")
    assert len(full) == 1, full


def test_a_refused_token_falls_back_to_a_full_listing(fresh_xandikos: servers.Server) -> None:
    srv = fresh_xandikos
    cal = srv.dataset["home"]
    tree = _tree(srv)
    tree.readdir("/home")
    servers.put_item(srv, cal.url, "first.ics", servers.make_event("first@caldavfs.test", "First"))
    tree.readdir("/home")
    state = tree.calendar("home")
    assert state.sync_token
    state.sync_token = "http://example.invalid/not-a-token"
    with pytest.raises(SyncTokenError):
        tree.client.sync_items(state.info.url, state.sync_token)
    servers.put_item(srv, cal.url, "late.ics", servers.make_event("late@caldavfs.test", "Late"))
    full = _count_full_listings(tree)
    listed = {n for n, _ in tree.readdir("/home")}
    assert listed >= set(cal.items) | {"late.ics", "first.ics"}
    assert len(full) == 1  # the refused token led to a full listing, nothing was lost


def test_radicale_keeps_propfind_for_its_modification_times(fresh_radicale: servers.Server) -> None:
    srv = fresh_radicale
    tree = _tree(srv)
    synced: list[str] = []
    real = tree.client.sync_items

    def spy(url: str, token: str) -> SyncResult:
        synced.append(url)
        return real(url, token)

    tree.client.sync_items = spy  # type: ignore[method-assign]
    tree.readdir("/home")
    tree.readdir("/home")
    state = tree.calendar("home")
    assert state.server_mtimes is True
    assert state.sync_token is None
    assert synced == []
    # The one REPORT is the first listing's calendar-query, which brings the data along.
    assert _reports(tree) == 1
