"""Client.discover on real servers from every kind of URL a user may give."""

from __future__ import annotations

from pathlib import Path

import pytest

from caldavfs.client import Client, canonical_href
from caldavfs.dav import DavSession
from caldavfs.errors import NotCalDAVError, UnauthorizedError
from caldavfs.tree import Tree
from tests import servers
from tests.httpstub import Reply, Request, Stub


def _client(server: servers.Server, password: str | None = None) -> Client:
    return Client(DavSession(username=server.username, password=password or server.password, timeout=10))


def _same(a: str, b: str) -> bool:
    return canonical_href(a, a) == canonical_href(b, b)


@pytest.mark.parametrize("where", ["root", "well-known", "principal", "home"])
def test_discover_finds_the_home(server: servers.Server, where: str) -> None:
    url = {
        "root": server.base_url,
        "well-known": server.url("/.well-known/caldav"),
        "principal": server.principal_url,
        "home": server.home_url,
    }[where]
    found = _client(server).discover(url)
    assert _same(found.home_url, server.home_url), found
    assert found.calendar_url is None


def test_discover_from_root_without_trailing_slash(server: servers.Server) -> None:
    found = _client(server).discover(server.base_url.rstrip("/"))
    assert _same(found.home_url, server.home_url)


def test_discover_from_a_calendar(server: servers.Server) -> None:
    work = server.dataset["work"]
    client = _client(server)
    found = client.discover(work.url)
    assert found.calendar_url is not None and _same(found.calendar_url, work.url)
    tree = Tree(client, found.home_url, calendar_url=found.calendar_url)
    assert [name for name, _ in tree.readdir("/")] == ["work"]
    assert tree.read_file("/work/displayname") == "직장".encode()
    names = {n for n, _ in tree.readdir("/work")}
    assert "weekly.ics" in names


_EMPTY_COLLECTION = (b'<multistatus xmlns="DAV:"><response><href>/</href><propstat><prop><resourcetype>'
                     b"<collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat>"
                     b"</response></multistatus>")


@pytest.mark.parametrize("reply", [Reply(404, b"<html/>"), Reply(200, b"<html/>"), Reply(405),
                                   Reply(207, b"not xml"), Reply(207, _EMPTY_COLLECTION)])
def test_discover_not_caldav(reply: Reply) -> None:
    with Stub([reply]) as stub:
        with pytest.raises(NotCalDAVError):
            Client(DavSession(username="alice", password="pw", timeout=5)).discover(stub.url)
        assert {r.method for r in stub.requests} == {"PROPFIND"}


def test_wrong_password_radicale(radicale: servers.Server) -> None:
    with pytest.raises(UnauthorizedError):
        _client(radicale, password="wrong").discover(radicale.base_url)


def test_home_set_on_another_host_gets_credentials() -> None:
    """iCloud: the principal names a home-set on a pNN-caldav host; the recorded answers replayed."""
    data = Path(__file__).resolve().parent.parent / "data"
    home_xml = (data / "icloud_propfind_home.xml").read_bytes()

    def home_handler(req: Request) -> Reply:
        if not req.headers.get("Authorization", "").startswith("Basic "):
            return Reply(401, b"", {"WWW-Authenticate": 'Basic realm="icloud"'})
        return Reply(207, home_xml)

    with Stub(home_handler) as home:
        principal_xml = (data / "icloud_propfind_principal.xml").read_bytes().replace(
            b"https://p51-caldav.icloud.com:443/", home.url.encode())

        def front_handler(req: Request) -> Reply:
            if req.path == "/":
                return Reply(207, (data / "icloud_propfind_root.xml").read_bytes())
            if req.path.startswith("/123456789/principal"):
                return Reply(207, principal_xml)
            return Reply(404)

        with Stub(front_handler) as front:
            client = Client(DavSession(username="alice", password="pw", timeout=5))
            found = client.discover(front.url)
            assert found.home_url == home.url + "123456789/calendars/"
            cals = client.list_calendars(found.home_url)
        assert sorted((c.url.rstrip("/").rsplit("/", 1)[-1], c.displayname) for c in cals) == [
            ("home", "홈"), ("tasks", "미리 알림"), ("work", "직장")]
        assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in home.requests)
