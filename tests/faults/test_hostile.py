"""Hostile or broken server answers through DavSession + Client (+ Tree), from stubs on 127.0.0.1.

Each answer must give a safe result: InvalidResponseError, a skipped item with a log line naming the
problem, or a listing that stays consistent (unique safe names, each file exactly the bytes served).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import quote, unquote, urlsplit

import pytest

from caldavfs import davxml as x
from caldavfs.client import Client, ItemInfo, canonical_href
from caldavfs.dav import DavSession
from caldavfs.errors import CaldavfsError, InvalidResponseError, NotFoundError, TransportError
from caldavfs.names import MAX_NAME_BYTES
from tests.faults.stubdav import CAL, FakeCalDAV, FakeItem, ics
from tests.httpstub import Reply, Stub

MS_OPEN = b'<?xml version="1.0" encoding="utf-8"?>\n'

LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
          + b"".join(f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">\n'.encode()
                     for i in range(1, 10))
          + b']>\n<D:multistatus xmlns:D="DAV:"><D:response><D:href>/alice/work/&lol9;</D:href>'
            b"</D:response></D:multistatus>")


def _external(url: str) -> bytes:
    return (b'<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY ext SYSTEM "' + url.encode() + b'">]>\n'
            b'<D:multistatus xmlns:D="DAV:"><D:response><D:href>/alice/work/&ext;</D:href>'
            b'<D:propstat><D:prop><D:displayname>&ext;</D:displayname></D:prop>'
            b"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>")


def _client(stub: Stub, **kw: object) -> Client:
    session = DavSession(username="alice", password="pw", timeout=5, **kw)  # type: ignore[arg-type]
    session.trust(stub.url)
    return Client(session)


def _answer_refused(body: bytes, **kw: object) -> InvalidResponseError:
    with Stub([Reply(207, body, {"Content-Type": "application/xml"})]) as stub:
        client = _client(stub, **kw)
        started = time.monotonic()
        with pytest.raises(InvalidResponseError) as info:
            client.list_items(stub.url + "alice/work/")
        assert time.monotonic() - started < 5
    return info.value


# --- XML attacks and broken XML ------------------------------------------------------------------


def test_billion_laughs_refused_quickly() -> None:
    exc = _answer_refused(LAUGHS)
    assert "lollollol" not in str(exc)


def test_external_file_entity_not_expanded() -> None:
    exc = _answer_refused(_external("file:///etc/passwd"))
    assert "root:" not in str(exc)


def test_external_http_entity_never_fetched() -> None:
    with Stub([Reply(200, b"<x>leaked</x>")]) as target:
        exc = _answer_refused(_external(f"http://127.0.0.1:{target.port}/secret.xml"))
        time.sleep(0.2)
        assert target.requests == [], "the XML parser reached the network"
    assert "leaked" not in str(exc)


def test_doctype_refused() -> None:
    _answer_refused(MS_OPEN + b'<!DOCTYPE multistatus>\n<D:multistatus xmlns:D="DAV:"/>')


def test_invalid_utf8_refused() -> None:
    _answer_refused(MS_OPEN + b'<D:multistatus xmlns:D="DAV:"><D:response><D:href>/alice/work/\xff\xfe.ics'
                    b"</D:href></D:response></D:multistatus>")


def test_truncated_xml_refused() -> None:
    with FakeCalDAV([FakeItem(f"/alice/work/{i}.ics", ics(f"u{i}")) for i in range(5)]) as dav:
        full = dav.calendar_answer()
    for cut in (len(full) // 3, len(full) // 2, len(full) - 5):
        _answer_refused(full[:cut])


def test_answer_bigger_than_max_body_refused() -> None:
    huge = MS_OPEN + b'<D:multistatus xmlns:D="DAV:">' + b"<!-- pad -->" * 200_000 + b"</D:multistatus>"
    exc = _answer_refused(huge, max_body=100_000)
    assert "100000" in str(exc)


def test_reset_mid_answer_is_an_error_not_partial_data() -> None:
    """A server that promises 10000 bytes and closes after 100: TransportError, never a short body."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\nETag: \"x\"\r\n\r\n" + b"B" * 100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        session = DavSession(timeout=5)
        with pytest.raises(TransportError):
            session.request("GET", f"http://127.0.0.1:{port}/alice/work/a.ics", ok=(200,))
    finally:
        stop.set()
        thread.join(5)
        sock.close()


# --- hrefs, names, duplicates ----------------------------------------------------------------------


def _hostile_items(port: int) -> list[FakeItem]:
    long_ascii = "x" * 300
    long_korean = quote("회" * 100)  # 300 bytes decoded
    specs: list[tuple[str, bool]] = [
        ("/alice/work/normal.ics", True),
        ("relative.ics", True),
        (f"http://127.0.0.1:{port}/alice/work/absolute-same-host.ics", True),
        ("/alice/work/%2E", False),
        ("/alice/work/%2E%2E", False),
        ("/alice/work/../escaped.ics", False),
        ("/alice/other/elsewhere.ics", False),
        ("/alice/work/sub/deeper.ics", False),
        ("http://evil.example/alice/work/other-host.ics", False),
        ("//evil.example/alice/work/scheme-relative.ics", False),
        (f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/alice/work/other-port.ics", False),
        ("/alice/work/.ics", True),
        ("/alice/work/.hidden.ics", True),
        ("/alice/work/%2E%2E%2Fclimb.ics", True),
        ("/alice/work/a%2Fb.ics", True),
        ("/alice/work/a_b.ics", True),
        ("/alice/work/nul%00byte.ics", True),
        ("/alice/work/ctl%01%1F%7F.ics", True),
        ("/alice/work/back%5Cslash.ics", True),
        (f"/alice/work/{long_ascii}.ics", True),
        (f"/alice/work/{'y' * 260}1.ics", True),
        (f"/alice/work/{'y' * 260}2.ics", True),
        (f"/alice/work/{long_korean}.ics", True),
        ("/alice/work/a%20b.ics", True),
        ("/alice/work/a b.ics", False),  # the same resource as a%20b.ics: a duplicate
        ("/alice/work/x", True),
        ("/alice/work/x.ics", True),
        ("/alice/work/%FF%FE.ics", True),
        ("/alice/work/%EF%BF%BD%EF%BF%BD.ics", True),
        ("/alice/work/%C3%A9t%C3%A9.ics", True),
        ("/alice/work/%c3%a9t%c3%a9.ics", False),  # same resource, other hex case: a duplicate
    ]
    return [FakeItem(href, ics(f"uid-{n}", f"item {n}", pad=n * 3), member=member)
            for n, (href, member) in enumerate(specs)]


def _check_consistent(dav: FakeCalDAV, tree_calendar: str = "work") -> dict[str, bytes]:
    tree = dav.tree()
    entries = tree.readdir("/" + tree_calendar)
    files = [name for name, node in entries if name.endswith(".ics")]
    assert len(files) == len(set(files)), f"duplicate names: {files}"
    for name in files:
        raw = name.encode("utf-8")  # must be valid UTF-8 (no lone surrogates)
        assert len(raw) <= MAX_NAME_BYTES, name
        assert "/" not in name and "\0" not in name and name not in (".", ".."), name
        assert not any(ord(c) < 32 or ord(c) == 127 for c in name), repr(name)
        assert not name.startswith("."), name
    cal = tree.calendar(tree_calendar)
    shown: dict[str, bytes] = {}
    served_items: list[FakeItem] = []
    for name in files:
        item = cal.items[name]
        served = dav.find(item.info.url)
        assert served is not None, f"{name} maps to {item.info.url}, which the server never listed"
        assert served.member, f"{name} shows {served.href!r}, which is not a member of the calendar"
        data = tree.read_file(f"/{tree_calendar}/{name}")
        assert data == served.data, f"{name}: bytes differ from what the server served for {served.href!r}"
        assert tree.getattr(f"/{tree_calendar}/{name}").size == len(data)
        shown[name] = data
        served_items.append(served)
    members = [i for i in dav.items if i.member]
    assert sorted(id(i) for i in served_items) == sorted(id(i) for i in members), (
        "missing: " + repr([i.href for i in members if i not in served_items]))
    return shown


def test_hostile_hrefs_give_a_consistent_listing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FakeCalDAV([]) as dav:
        items = dav.items
        items[:] = _hostile_items(dav.stub.port)  # absolute hrefs need the stub's own port
        shown = _check_consistent(dav)
    assert len(shown) == sum(1 for i in items if i.member)
    text = caplog.text
    for href in ("other-host.ics", "scheme-relative.ics", "other-port.ics", "deeper.ics", "elsewhere.ics"):
        assert any(href in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records), (
            f"no warning naming the skipped href {href}:\n{text}")
    assert "duplicate" in text


def test_duplicate_hrefs_in_listing_and_multiget_zimbra(caplog: pytest.LogCaptureFixture) -> None:
    items = [FakeItem(f"/alice/work/e{i}.ics", ics(f"e{i}", pad=i)) for i in range(4)]
    dup = FakeItem("/alice/work/e1.ics", ics("e1-other-version", pad=99), member=False)
    with FakeCalDAV([*items, dup], report_duplicate=True) as dav:
        shown = _check_consistent(dav)
    assert sorted(shown) == [f"e{i}.ics" for i in range(4)]
    assert any("duplicate" in r.getMessage() and "e1.ics" in r.getMessage() for r in caplog.records), caplog.text


def test_multiget_answer_with_foreign_hrefs_is_ignored() -> None:
    items = [FakeItem(f"/alice/work/m{i}.ics", ics(f"m{i}")) for i in range(3)]
    evil = ics("evil", "EVIL")
    with FakeCalDAV(items, report_extra=[("http://evil.example/alice/work/m0.ics", evil),
                                         ("/alice/other/m1.ics", evil), ("/alice/work/../m2.ics", evil)]) as dav:
        shown = _check_consistent(dav)
    assert all(b"EVIL" not in data for data in shown.values())


def test_calendar_207_with_inner_404_xandikos() -> None:
    with FakeCalDAV([FakeItem("/alice/work/a.ics", ics("a"))], calendar_status="HTTP/1.1 404 Not Found") as dav:
        client = Client(DavSession(timeout=5))
        with pytest.raises(NotFoundError):
            client.list_items(dav.cal_url)
        tree = dav.tree()
        with pytest.raises(NotFoundError):
            tree.readdir("/work")


def test_discovery_207_with_inner_404() -> None:
    ms = (MS_OPEN + b'<D:multistatus xmlns:D="DAV:"><D:response><D:href>/nothing/</D:href>'
          b"<D:status>HTTP/1.1 404 Not Found</D:status></D:response></D:multistatus>")
    with Stub([Reply(207, ms)]) as stub:
        client = _client(stub)
        with pytest.raises(CaldavfsError) as info:
            client.discover(stub.url + "nothing/")
        assert "404" in str(info.value)


@pytest.mark.parametrize("bogus", [
    b"<html><body>Service temporarily unavailable</body></html>",
    b"hello, not a calendar\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Not A Calendar\r\nEND:VCARD\r\n",
])
def test_calendar_data_that_is_not_icalendar(bogus: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 4: "calendar-data that is not iCalendar ... a clear log line naming the server and the
    problem, a safe result (skipped item, EIO)". Never shown as if it were a calendar object."""
    good = FakeItem("/alice/work/good.ics", ics("good"))
    bad = FakeItem("/alice/work/bad.ics", bogus)
    with FakeCalDAV([good, bad]) as dav:
        tree = dav.tree()
        names = [n for n, _ in tree.readdir("/work")]
        assert tree.read_file("/work/good.ics") == good.data
        if "bad.ics" in names:
            with pytest.raises(CaldavfsError):
                tree.read_file("/work/bad.ics")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("bad.ics" in m for m in warnings), f"no warning naming bad.ics: {warnings}"


@pytest.mark.parametrize(("lastmod", "expected_ns"), [
    ("yesterday", None),
    ("", None),
    ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777 * 10**9),  # RFC 850
    ("Sun Nov  6 08:49:37 1994", 784111777 * 10**9),  # asctime
    ("Tue, 31 Feb 2026 10:00:00 GMT", None),
    ("Sun, 06 Nov 99999 08:49:37 GMT", None),
    ("2026-01-05T10:00:00Z", None),
    ("\u00e9\u00e9 \ufffd", None),
])
def test_odd_getlastmodified(lastmod: str, expected_ns: int | None) -> None:
    item = FakeItem("/alice/work/odd.ics", ics("odd"), lastmod=lastmod)
    with FakeCalDAV([item]) as dav:
        infos = Client(DavSession(timeout=5)).list_items(dav.cal_url)
        (info,) = infos.values()
        assert info.mtime_ns == expected_ns
        tree = dav.tree()
        node = tree.getattr("/work/odd.ics")
        assert tree.read_file("/work/odd.ics") == item.data
        assert node.size == len(item.data)
        if expected_ns is None:
            # Falls back to the data's own DTSTAMP (2026-01-01), never 0 or a crash.
            assert node.mtime_ns == 1767225600 * 10**9
        else:
            assert node.mtime_ns == expected_ns


def test_multiget_missing_items_are_asked_again_never_dropped() -> None:
    items = [FakeItem(f"/alice/work/g{i}.ics", ics(f"g{i}", pad=i)) for i in range(5)]

    def first_three(call: int, hrefs: list[str]) -> list[str]:
        return hrefs[:3] if call == 1 else hrefs

    with FakeCalDAV(items, report_filter=first_three) as dav:
        client = Client(DavSession(timeout=5))
        listing = client.list_items(dav.cal_url)
        got = {info.key: data for info, _etag, data in client.fetch(dav.cal_url, list(listing.values()))}
        assert len(dav.reports) >= 2
        assert len(dav.reports[0]) == 5
        asked_again = {unquote(h) for r in dav.reports[1:] for h in r}
        missing = {unquote(urlsplit(h).path) for h in dav.reports[0][3:]}
        assert missing <= asked_again
        assert got == {canonical_href(dav.cal_url + f"g{i}.ics", dav.cal_url): items[i].data for i in range(5)}


def test_multiget_missing_items_through_tree() -> None:
    items = [FakeItem(f"/alice/work/t{i}.ics", ics(f"t{i}", pad=i)) for i in range(5)]
    with FakeCalDAV(items, report_filter=lambda call, hrefs: hrefs[:3] if call == 1 else hrefs) as dav:
        shown = _check_consistent(dav)
        assert len(shown) == 5


def test_multiget_server_never_returns_an_item(caplog: pytest.LogCaptureFixture) -> None:
    """An item the server always leaves out: EIO for that one (never empty or wrong bytes), the rest fine."""
    items = [FakeItem(f"/alice/work/h{i}.ics", ics(f"h{i}", pad=i)) for i in range(5)]

    def never_h2(call: int, hrefs: list[str]) -> list[str]:
        return [h for h in hrefs if not h.endswith("/h2.ics")]

    with FakeCalDAV(items, report_filter=never_h2) as dav:
        tree = dav.tree()
        tree.client.keeps_line_ends = False  # listed with getcontentlength: the listing alone shows h2
        names = [n for n, _ in tree.readdir("/work")]
        assert "h2.ics" in names
        for i in (0, 1, 3, 4):
            assert tree.read_file(f"/work/h{i}.ics") == items[i].data
        with pytest.raises(CaldavfsError):
            tree.read_file("/work/h2.ics")
    assert "h2.ics" in caplog.text


def test_a_cold_listing_drops_an_item_its_data_answers_leave_out(caplog: pytest.LogCaptureFixture) -> None:
    """Listed cold, a calendar's sizes come from its data: an item that no data answer holds was
    deleted meanwhile, as far as the mount can tell. It is not shown; the rest are, byte-exact."""
    caplog.set_level(logging.INFO)
    items = [FakeItem(f"/alice/work/h{i}.ics", ics(f"h{i}", pad=i)) for i in range(5)]

    def never_h2(call: int, hrefs: list[str]) -> list[str]:
        return [h for h in hrefs if not h.endswith("/h2.ics")]

    with FakeCalDAV(items, report_filter=never_h2) as dav:
        tree = dav.tree()
        names = [n for n, _ in tree.readdir("/work")]
        assert "h2.ics" not in names and {f"h{i}.ics" for i in (0, 1, 3, 4)} <= set(names)
        for i in (0, 1, 3, 4):
            assert tree.read_file(f"/work/h{i}.ics") == items[i].data
    assert "1 listed items came with no data" in caplog.text


def test_unasked_item_info_in_fetch_is_harmless() -> None:
    item = FakeItem(f"{CAL}only.ics", ics("only"))
    with FakeCalDAV([item]) as dav:
        client = Client(DavSession(timeout=5))
        ghost = ItemInfo(url=dav.cal_url + "ghost.ics", key=canonical_href(dav.cal_url + "ghost.ics", dav.cal_url),
                         etag='"g"', size=10)
        assert list(client.fetch(dav.cal_url, [ghost])) == []


def test_parse_multistatus_wrong_types_only_invalid_response() -> None:
    for body in (b"\x00\x01\x02", b"<?xml version='1.0'?><a:b xmlns:a='x'/>", b"<" * 1000, "é".encode("latin-1")):
        with pytest.raises(InvalidResponseError):
            x.parse_multistatus(body, "junk")
