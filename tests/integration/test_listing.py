"""Listing, multiget batching and Tree reads on real servers."""

from __future__ import annotations

import math

from caldavfs.client import Client, canonical_href, last_segment
from caldavfs.dav import DavSession
from caldavfs.errors import NotFoundError
from caldavfs.tree import Tree
from tests import servers


def _client(server: servers.Server, batch: int = 100) -> Client:
    session = DavSession(username=server.username, password=server.password, timeout=10)
    session.trust(server.base_url)
    return Client(session, batch=batch)


def _file_name(seeded: str) -> str:
    return seeded if seeded.endswith(".ics") else seeded + ".ics"


def test_list_calendars(server: servers.Server) -> None:
    cals = _client(server).list_calendars(server.home_url)
    by_name = {last_segment(c.url): c for c in cals}
    assert sorted(by_name) == ["home", "tasks", "work"]
    for name, seeded in server.dataset.items():
        info = by_name[name]
        assert info.displayname == seeded.displayname
        assert info.color == seeded.color
        assert info.change_tag is not None
        assert info.key == canonical_href(seeded.url, seeded.url)
    assert by_name["tasks"].components == ("VTODO",)


def test_list_items_matches_server(server: servers.Server) -> None:
    client = _client(server)
    for cal in server.dataset.values():
        items = client.list_items(cal.url)
        hrefs = servers.list_hrefs(server, cal.url)
        assert set(items) == {canonical_href(server.url(h), cal.url) for h in hrefs}
        by_key = {canonical_href(server.url(h), cal.url): etag for h, etag in hrefs.items()}
        for key, info in items.items():
            assert info.etag == by_key[key]
            assert info.size is not None and info.size > 0


def test_fetch_in_batches_is_byte_exact(server: servers.Server) -> None:
    client = _client(server, batch=3)
    cal = server.dataset["work"]
    items = list(client.list_items(cal.url).values())
    assert len(items) == len(cal.items)
    before = client.session.stats.snapshot()["by_method"].get("REPORT", 0)  # type: ignore[union-attr]
    got = list(client.fetch(cal.url, items))
    reports = client.session.stats.snapshot()["by_method"].get("REPORT", 0) - before  # type: ignore[union-attr]
    assert reports == math.ceil(len(items) / 3)
    assert sorted(info.key for info, _, _ in got) == sorted(i.key for i in items)
    for info, etag, data in got:
        assert data == servers.get_item(server, info.url), info.url
        assert etag == info.etag


def test_tree_reads_every_item_exactly(server: servers.Server) -> None:
    client = _client(server)
    tree = Tree(client, client.discover(server.base_url).home_url)
    for cal in server.dataset.values():
        listed = {name for name, _ in tree.readdir(f"/{cal.name}")}
        for item in cal.items.values():
            path = f"/{cal.name}/{_file_name(item.name)}"
            assert _file_name(item.name) in listed
            data = tree.read_file(path)
            assert data == servers.get_item(server, item.url), path
            assert tree.getattr(path).size == len(data)


def test_tree_reads_take_siblings_along(server: servers.Server) -> None:
    client = _client(server)
    tree = Tree(client, server.home_url)
    tree.getattr("/work")
    before = client.session.stats.snapshot()["by_method"].get("REPORT", 0)  # type: ignore[union-attr]
    for name in sorted(_file_name(n) for n in server.dataset["work"].items):
        tree.read_file(f"/work/{name}")
    after = client.session.stats.snapshot()["by_method"].get("REPORT", 0)  # type: ignore[union-attr]
    assert after - before <= 1


def test_tree_ttl0_sees_changes(fresh_server: servers.Server) -> None:
    srv = fresh_server
    home = srv.dataset["home"]
    tree = Tree(_client(srv), srv.home_url, ttl=0)
    dentist = home.items["dentist.ics"]
    old = tree.getattr("/home/dentist.ics")
    old_dir = tree.getattr("/home")
    assert tree.read_file("/home/dentist.ics") == dentist.body

    # Same length, different content: size or mtime must still move.
    new_body = dentist.sent.replace(b"SUMMARY:Dentist", b"SUMMARY:Dentisx")
    assert new_body != dentist.sent and len(new_body) == len(dentist.sent)
    servers.put_item(srv, home.url, "dentist.ics", new_body, etag=dentist.etag)
    served = servers.get_item(srv, dentist.url)
    assert tree.read_file("/home/dentist.ics") == served
    new = tree.getattr("/home/dentist.ics")
    assert (new.size, new.mtime_ns) != (old.size, old.mtime_ns)
    assert new.size == len(served)
    assert tree.getattr("/home").mtime_ns > old_dir.mtime_ns

    servers.put_item(srv, home.url, "added.ics", servers.make_event("added@caldavfs.test", "Added"))
    servers.delete_item(srv, home.items["birthday.ics"].url)
    listed = {name for name, _ in tree.readdir("/home")}
    assert "added.ics" in listed and "birthday.ics" not in listed
    assert tree.read_file("/home/added.ics") == servers.get_item(srv, servers.item_url(home.url, "added.ics"))
    try:
        tree.getattr("/home/birthday.ics")
    except NotFoundError:
        pass
    else:
        raise AssertionError("a deleted item is still there")


def test_stat_is_stable_across_remounts(server: servers.Server) -> None:
    """Two independent Trees (two mounts) show the same mtime, size and inode for everything."""
    def snapshot() -> dict[str, tuple[int, int, int]]:
        tree = Tree(_client(server), server.home_url)
        out = {"/": (tree.getattr("/").mtime_ns, 0, tree.getattr("/").ino)}
        for cal, _ in tree.readdir("/"):
            for name, node in [(f"/{cal}", tree.getattr(f"/{cal}"))] + [
                    (f"/{cal}/{n}", nd) for n, nd in tree.readdir(f"/{cal}")]:
                out[name] = (node.mtime_ns, node.size, node.ino)
        return out

    first, second = snapshot(), snapshot()
    assert first == second
    assert all(mtime > 0 for mtime, _, _ in first.values())
    if server.kind == "xandikos":  # no getlastmodified: from the data's DTSTAMP (servers.DTSTAMP)
        assert first["/work/weekly.ics"][0] // 1_000_000_000 == 1767225600
