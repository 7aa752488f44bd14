"""client helpers: href canonicalisation, names' source, exact bytes, mtimes."""

from __future__ import annotations

import calendar
import json
import random
import string
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from lxml import etree

from caldavfs import davxml as x
from caldavfs.client import (
    Client,
    ItemInfo,
    _canonical,
    _path,
    absolute_href,
    canonical_href,
    data_mtime,
    is_child,
    last_segment,
    parse_http_date,
    restore_bytes,
)
from caldavfs.dav import DavSession
from caldavfs.errors import InvalidResponseError
from tests.httpstub import Reply, Request, Stub

DATA = Path(__file__).resolve().parent.parent / "data"
BASE = "http://127.0.0.1:5232/alice/work/"
NS = 1_000_000_000


def _ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * NS


# --- canonical_href ----------------------------------------------------------------------------


def test_canonical_href_fast_path_agrees_with_the_full_one() -> None:
    # Plain absolute paths skip urljoin and the per-segment re-encoding: the result must be what
    # the full normalisation gives, for any href (the full one may raise: then both must).
    def outcome(fn: Callable[[str, str], str], href: str, base: str) -> str:
        try:
            return fn(href, base)
        except ValueError as exc:
            return type(exc).__name__

    rng = random.Random(7)
    alphabet = [*string.ascii_letters, *string.digits, *"_.~!$&'()*+,;=:@/-% ?#\u00e9\t\n",
                "%40", "%2F", "%2f", "%e9", "%C3%A9", "%20", "%7E", "%3F", "%25", "%", "//", "/./", "/../"]
    bases = [BASE, "https://Example.COM:443/dav/cal/", "http://h:80/x/", "HTTP://H:8080"]
    for _ in range(40000):
        tail = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        href = rng.choice(["/", "", "//", "/./", "/../"]) + tail
        base = rng.choice(bases)
        assert outcome(canonical_href, href, base) == outcome(_canonical, href, base), (href, base)
        assert absolute_href(href, base) == urljoin(base, href), (href, base)


def test_url_path_fast_path_agrees_with_urlsplit() -> None:
    rng = random.Random(3)
    alphabet = [*string.ascii_letters, *"/:?#%@.;[] \t\n", "//", "http://", "https://h:8/", "%2F", "HTTP://"]
    for _ in range(50000):
        url = rng.choice(["", "http://", "https://", "http://h", "https://a.b:1/"]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        try:
            want = urlsplit(url).path
        except ValueError:
            continue
        assert _path(url) == want, url


@pytest.mark.parametrize(("a", "b"), [
    ("/alice/work/%ed%9a%8c%ec%9d%98.ics", "/alice/work/%ED%9A%8C%EC%9D%98.ics"),
    ("/alice/work/alice%40example.com.ics", "/alice/work/alice@example.com.ics"),
    ("/alice/work/%7Euser.ics", "/alice/work/~user.ics"),
    ("/alice/work/team%20meeting.ics", "http://127.0.0.1:5232/alice/work/team%20meeting.ics"),
    ("team%20meeting.ics", "/alice/work/team meeting.ics"),
    ("http://127.0.0.1:5232/alice/work/a.ics", "HTTP://127.0.0.1:5232/alice/work/a.ics"),
    ("http://example.com:80/x/", "http://EXAMPLE.com/x/"),
    ("https://example.com:443/x/", "https://example.com/x/"),
    ("/alice/work/%41.ics", "/alice/work/A.ics"),
])
def test_canonical_href_same_resource(a: str, b: str) -> None:
    assert canonical_href(a, BASE) == canonical_href(b, BASE)


@pytest.mark.parametrize(("a", "b"), [
    ("/alice/work/a%2Fb.ics", "/alice/work/a/b.ics"),
    ("/alice/work/a%2Bb.ics", "/alice/work/a%20b.ics"),
    ("/alice/work/a.ics", "/alice/home/a.ics"),
    ("http://127.0.0.1:5232/alice/work/a.ics", "http://127.0.0.1:5233/alice/work/a.ics"),
    ("/alice/work/A.ics", "/alice/work/a.ics"),
])
def test_canonical_href_different_resources(a: str, b: str) -> None:
    assert canonical_href(a, BASE) != canonical_href(b, BASE)


def test_canonical_href_is_absolute_and_stable() -> None:
    key = canonical_href("/alice/work/a%2fb%40c.ics", BASE)
    assert key == "http://127.0.0.1:5232/alice/work/a%2Fb@c.ics"
    assert canonical_href(key, BASE) == key
    assert canonical_href("x y.ics", BASE) == "http://127.0.0.1:5232/alice/work/x%20y.ics"


# --- is_child / last_segment -------------------------------------------------------------------


@pytest.mark.parametrize(("child", "parent", "expected"), [
    ("http://h/cal/a.ics", "http://h/cal/", True),
    ("http://h/cal/a.ics", "http://h/cal", True),
    ("http://h/cal/sub/", "http://h/cal/", True),
    ("http://h/cal/sub/a.ics", "http://h/cal/", False),
    ("http://h/cal/", "http://h/cal/", False),
    ("http://h/cal/../x.ics", "http://h/cal/", False),
    ("http://h/cal/./", "http://h/cal/", False),
    ("http://h/calx/a.ics", "http://h/cal/", False),
    ("http://other/cal/a.ics", "http://h/cal/", False),
    ("http://h:81/cal/a.ics", "http://h/cal/", False),
    ("http://h/other/a.ics", "http://h/cal/", False),
])
def test_is_child(child: str, parent: str, expected: bool) -> None:
    assert is_child(child, parent) is expected


@pytest.mark.parametrize(("href", "expected"), [
    ("/alice/work/team%20meeting.ics", "team meeting.ics"),
    ("/alice/work/", "work"),
    ("http://h/alice/%ED%9A%8C%EC%9D%98/", "회의"),
    ("/alice/work/a%2Fb.ics", "a/b.ics"),
    ("/alice/work/a+b.ics", "a+b.ics"),
    ("/alice/work/%FF.ics", "\udcff.ics"),
])
def test_last_segment(href: str, expected: str) -> None:
    assert last_segment(href) == expected


# --- restore_bytes -----------------------------------------------------------------------------


TEXT = "BEGIN:VCALENDAR\nSUMMARY:회의\nEND:VCALENDAR\n"


def test_restore_bytes_crlf_by_default_and_by_size() -> None:
    crlf = TEXT.replace("\n", "\r\n").encode()
    assert restore_bytes(TEXT, None) == crlf
    assert restore_bytes(TEXT, len(crlf)) == crlf


def test_restore_bytes_bare_lf_when_size_says_so() -> None:
    lf = TEXT.encode()
    assert restore_bytes(TEXT, len(lf)) == lf


def test_restore_bytes_none_when_neither_fits() -> None:
    assert restore_bytes(TEXT, len(TEXT.encode()) + 1) is None
    assert restore_bytes(TEXT, 0) is None


def test_restore_bytes_from_text_that_kept_cr() -> None:
    text = TEXT.replace("\n", "\r\n")
    assert restore_bytes(text, None) == text.encode()


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_recorded_multiget_restores_get_bytes(server: str) -> None:
    items = json.loads((DATA / f"{server}_items.json").read_text())
    by_key = {canonical_href(href, BASE): meta for href, meta in items.items()}
    checked = 0
    for capture in ("multiget", "multiget_noext"):
        ms = x.parse_multistatus((DATA / f"{server}_{capture}.xml").read_bytes(), capture)
        for r in ms.responses:
            text = r.text(x.CALENDAR_DATA)
            meta = by_key.get(canonical_href(r.href, BASE))
            if text is None or meta is None:
                continue
            expected = (DATA / meta["file"]).read_bytes()
            assert len(expected) == meta["get_length"]
            assert restore_bytes(text, int(meta["getcontentlength"])) == expected, r.href
            checked += 1
    assert checked >= 5


@pytest.fixture(params=["whole", "stream"])
def parse_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Data answers are parsed whole below STREAM_ABOVE bytes and as a stream above: both ways."""
    if request.param == "stream":
        monkeypatch.setattr(x, "STREAM_ABOVE", 0)
        monkeypatch.setattr(x, "STREAM_LISTING_ABOVE", 0)
    return str(request.param)


def _data(body: bytes, what: str = "answer") -> tuple[str, list[x.DavResponse]]:
    answer = x.iter_data_answer(body, what)
    return answer.line_ends, list(answer.responses)


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
@pytest.mark.parametrize("capture", ["multiget", "calendar_query"])
def test_recorded_answers_keep_line_ends_without_getcontentlength(server: str, capture: str, parse_mode: str) -> None:
    # Radicale and Xandikos send calendar-data with literal CRLFs: kept, they are the GET bytes,
    # with no length to check against.
    line_ends, responses = _data((DATA / f"{server}_{capture}.xml").read_bytes(), capture)
    assert line_ends == x.KEPT and responses
    items = json.loads((DATA / f"{server}_items.json").read_text())
    by_key = {canonical_href(href, BASE): meta for href, meta in items.items()}
    checked = 0
    for r in responses:
        text = r.text(x.CALENDAR_DATA)
        if text is None:
            continue
        assert "\r\n" in text and "\n" not in text.replace("\r\n", ""), r.href
        meta = by_key.get(canonical_href(r.href, BASE))
        if meta is not None:
            assert restore_bytes(text, None, True) == (DATA / meta["file"]).read_bytes(), r.href
            checked += 1
    # The calendar-query captures hold the tasks calendar, whose GET bodies were not recorded.
    assert checked >= (0 if capture == "calendar_query" else 5)


def test_streamed_answer_equals_the_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(x, "STREAM_ABOVE", 0)
    monkeypatch.setattr(x, "STREAM_LISTING_ABOVE", 0)
    for path in sorted(DATA.glob("*_multiget*.xml")) + sorted(DATA.glob("*_calendar_query.xml")):
        if path.name.endswith("_request.xml") or b"multistatus" not in path.read_bytes()[:400]:
            continue
        whole = x.parse_multistatus(path.read_bytes(), path.name).responses
        _, streamed = _data(path.read_bytes(), path.name)
        assert [r.href for r in x.iter_multistatus(path.read_bytes(), path.name)] == [r.href for r in whole]
        assert [r.href for r in streamed] == [r.href for r in whole], path.name
        assert [r.status for r in streamed] == [r.status for r in whole], path.name
        for a, b in zip(streamed, whole, strict=True):
            assert set(a.props) == set(b.props), path.name
            assert (a.text(x.CALENDAR_DATA) or "").replace("\r\n", "\n") == (b.text(x.CALENDAR_DATA) or ""), path.name


def test_recorded_sabredav_answer_tells_nothing_of_line_ends(parse_mode: str) -> None:
    # SabreDAV 1.8 sends LF for items it stores with CRLF: only getcontentlength can tell.
    body = (DATA / "sabredav_multiget_found.xml").read_bytes()
    assert b"\r" not in body
    line_ends, responses = _data(body, "multiget")
    assert line_ends == x.NO_CR and responses
    items = json.loads((DATA / "sabredav_items.json").read_text())
    by_key = {canonical_href(href, BASE): meta for href, meta in items.items()}
    for r in responses:
        meta = by_key[canonical_href(r.href, BASE)]
        text = r.text(x.CALENDAR_DATA) or ""
        expected = (DATA / meta["file"]).read_bytes()
        assert restore_bytes(text, None) == expected  # stored CRLF: the default
        lf = expected.replace(b"\r\n", b"\n")
        assert restore_bytes(text, len(lf)) == lf  # stored LF: told by the length


def _data_body(*texts: str, cdata: bool = False, eol: str = "\r\n") -> bytes:
    """A multistatus of calendar-data ``texts``, lines of XML ended by ``eol``."""
    def data(t: str) -> str:
        return f"<![CDATA[{t}]]>" if cdata else t
    return (f'<?xml version="1.0"?>{eol}<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            + "".join(f"<D:response><D:href>/c/{n}.ics</D:href><D:propstat><D:prop><C:calendar-data>{data(t)}"
                      f"</C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>{eol}"
                      for n, t in enumerate(texts))
            + f"</D:multistatus>{eol}").encode()


CRLF_ITEM = "BEGIN:VCALENDAR\r\nX-A:1\r\nEND:VCALENDAR\r\n"
LF_ITEM = "BEGIN:VCALENDAR\nX-B:2\nEND:VCALENDAR\n"


def test_line_ends_kept_per_item_in_one_answer(parse_mode: str) -> None:
    # A server that stores bytes as uploaded (SabreDAV, Xandikos) mixes CRLF and LF items.
    bare_cr = "BEGIN:VCALENDAR\rX-C:3\rEND:VCALENDAR\r"
    body = _data_body(CRLF_ITEM, LF_ITEM, bare_cr)
    line_ends, responses = _data(body, "mixed")
    assert line_ends == x.KEPT
    assert [r.text(x.CALENDAR_DATA) for r in responses] == [CRLF_ITEM, LF_ITEM, bare_cr]
    # The whole-tree parse does XML's end-of-line handling: all LF.
    assert {r.text(x.CALENDAR_DATA).count("\r") for r in x.parse_multistatus(body, "m").responses} == {0}


@pytest.mark.parametrize(("body", "line_ends", "kept"), [
    (_data_body(CRLF_ITEM), x.KEPT, True),
    (_data_body(CRLF_ITEM, eol="\n").replace(b"\r", b"&#13;"), x.KEPT, True),  # lxml writes CR as a reference
    (_data_body(CRLF_ITEM, eol="\n").replace(b"\r", b"&#xD;"), x.KEPT, True),
    (_data_body(LF_ITEM, eol="\n"), x.NO_CR, False),  # no CR anywhere
    # CRs between the elements survive too, but the data has none: LF, told item by item.
    (_data_body(LF_ITEM), x.KEPT, False),
    (_data_body(CRLF_ITEM, cdata=True), x.UNKNOWN, False),  # &#13; would stay literal in CDATA
    (_data_body(CRLF_ITEM).replace(b"<D:response>", b"<D:response\r\n>", 1), x.UNKNOWN, False),  # CR in a tag
])
def test_line_ends_of_an_answer(body: bytes, line_ends: str, kept: bool, parse_mode: str) -> None:
    told, responses = _data(body)
    assert told == line_ends
    text = responses[0].text(x.CALENDAR_DATA) or ""
    assert text.replace("\r", "") == CRLF_ITEM.replace("\r", "") or text == LF_ITEM
    assert ("\r\n" in text) == kept


def test_a_cr_before_a_trailing_comment_loses_nothing(parse_mode: str) -> None:
    # The last ">" closes a trailing comment: the CR before it lies outside the root element.
    body = _data_body(CRLF_ITEM) + b"<!-- x -->"
    line_ends, responses = _data(body, "trailing comment")
    assert line_ends == x.KEPT and [r.text(x.CALENDAR_DATA) for r in responses] == [CRLF_ITEM]


@pytest.mark.parametrize("body", [b"", b"  ", b"<D:error xmlns:D='DAV:'/>", _data_body(CRLF_ITEM)[:-60],
                                  b'<!DOCTYPE m [<!ENTITY e "x">]>' + _data_body(CRLF_ITEM).split(b"\n", 1)[1]])
def test_a_bad_data_answer_is_refused(body: bytes, parse_mode: str) -> None:
    with pytest.raises(InvalidResponseError):
        _data(body, "bad")


def _infos(n: int) -> list[ItemInfo]:
    return [ItemInfo(url=BASE + f"{i}.ics", key=canonical_href(f"/c/{i}.ics", BASE), etag=f'"{i}"')
            for i in range(n)]


def test_line_ends_are_learned_from_calendar_data_only(parse_mode: str) -> None:
    client = Client(DavSession())
    # CRs in the XML around LF data say nothing of the server: it may be SabreDAV 1.8.
    client._take(BASE, x.iter_data_answer(_data_body(LF_ITEM), "a"), _infos(1))
    assert client.keeps_line_ends is False
    got, _ = client._take(BASE, x.iter_data_answer(_data_body(CRLF_ITEM, LF_ITEM), "b"), _infos(2))
    assert client.keeps_line_ends is True
    assert [d for _, _, d in got][0] == CRLF_ITEM.encode()
    # Known to keep CRs: an answer of LF items only is the server's LF, served as such.
    got, _ = client._take(BASE, x.iter_data_answer(_data_body(LF_ITEM, eol="\n"), "c"), _infos(1))
    assert got[0][2] == LF_ITEM.encode() and client.keeps_line_ends is True


# --- data_mtime / parse_http_date -------------------------------------------------------------


def _ics(*lines: str) -> bytes:
    return ("\r\n".join(["BEGIN:VCALENDAR", "BEGIN:VEVENT", *lines, "END:VEVENT", "END:VCALENDAR"]) + "\r\n").encode()


def test_data_mtime_last_modified_beats_dtstamp() -> None:
    data = _ics("DTSTAMP:20270101T000000Z", "LAST-MODIFIED:20260102T030405Z")
    assert data_mtime(data) == _ns(2026, 1, 2, 3, 4, 5)


def test_data_mtime_dtstamp_when_no_last_modified() -> None:
    assert data_mtime(_ics("DTSTAMP:20260101T000000Z", "SUMMARY:x")) == _ns(2026, 1, 1)


def test_data_mtime_newest_of_several() -> None:
    data = _ics("LAST-MODIFIED:20260101T000000Z", "LAST-MODIFIED:20260301T000000Z")
    assert data_mtime(data) == _ns(2026, 3, 1)


def test_data_mtime_folded_line() -> None:
    data = _ics("LAST-MODIFIED:202601", " 02T030405Z", "DTSTAMP:20200101T000000Z")
    assert data_mtime(data) == _ns(2026, 1, 2, 3, 4, 5)


def test_data_mtime_lf_only() -> None:
    assert data_mtime(b"BEGIN:VEVENT\nDTSTAMP:20260101T000000Z\nEND:VEVENT\n") == _ns(2026, 1, 1)


@pytest.mark.parametrize("data", [b"", _ics("SUMMARY:DTSTAMP:20260101T000000Z"), _ics("DTSTAMP:garbage")])
def test_data_mtime_none(data: bytes) -> None:
    assert data_mtime(data) is None


@pytest.mark.parametrize("value", ["Sun, 29 Nov 2026 21:31:28 GMT", "Sun, 29 Nov 2026 21:31:28 +0000",
                                   "Sun, 29 Nov 2026 22:31:28 +0100"])
def test_parse_http_date(value: str) -> None:
    assert parse_http_date(value) == _ns(2026, 11, 29, 21, 31, 28)


@pytest.mark.parametrize("value", [None, "", "garbage", "Sun, 99 Foo 2026", "yesterday",
                                   "Sun, 31 Feb 2026 00:00:00 GMT", "Sun, 29 Foo 2026 21:31:28 GMT"])
def test_parse_http_date_garbage(value: str | None) -> None:
    assert parse_http_date(value) is None


def test_parse_http_date_fast_path_agrees_with_the_email_parser() -> None:
    # RFC 9110's fixed form is read without email.utils: the same instant, for any date in it.
    rng = random.Random(5)
    for _ in range(5000):
        when = datetime.fromtimestamp(rng.randint(0, 4_000_000_000), tz=timezone.utc)
        value = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert parse_http_date(value) == int(parsedate_to_datetime(value).timestamp()) * 1_000_000_000, value


# --- multiget batching against a scripted server -------------------------------------------------

ICS = "BEGIN:VCALENDAR\nUID:{n}\nEND:VCALENDAR\n"


def _multistatus(hrefs: list[str]) -> bytes:
    parts = []
    for h in hrefs:
        n = h.rsplit("/", 1)[-1]
        parts.append(f'<D:response><D:href>{h}</D:href><D:propstat><D:prop><D:getetag>"e-{n}"</D:getetag>'
                     f"<C:calendar-data>{ICS.format(n=n)}</C:calendar-data></D:prop>"
                     "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
    return ('<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            + "".join(parts) + "</D:multistatus>").encode()


def _asked(req: Request) -> list[str]:
    return [h.text or "" for h in etree.fromstring(req.body).iter("{DAV:}href")]


def _items(stub: Stub, n: int) -> list[ItemInfo]:
    out = []
    for i in range(n):
        url = f"{stub.url}cal/{i}.ics"
        size = len(ICS.format(n=f"{i}.ics").replace("\n", "\r\n"))
        out.append(ItemInfo(url=url, key=canonical_href(url, url), etag=f'"e-{i}.ics"', size=size))
    return out


def _fetch_all(stub: Stub, n: int, batch: int) -> dict[str, bytes]:
    session = DavSession(timeout=10, retries=0)
    got = Client(session, batch=batch).fetch(stub.url + "cal/", _items(stub, n))
    return {info.url.rsplit("/", 1)[-1]: data for info, _, data in got}


def test_fetch_short_answers_are_asked_again() -> None:
    # A server that stops after 2 hrefs per answer without saying so (Zoho does at 100).
    with Stub(lambda req: Reply(207, _multistatus(_asked(req)[:2]))) as stub:
        got = _fetch_all(stub, 7, batch=5)
        assert sorted(got) == sorted(f"{i}.ics" for i in range(7))
        assert got["3.ics"] == ICS.format(n="3.ics").replace("\n", "\r\n").encode()
        assert all(len(_asked(r)) <= 5 for r in stub.requests)


@pytest.mark.parametrize("status", [500, 502, 503, 507])
def test_fetch_shrinks_batch_on_5xx(status: int) -> None:
    def handler(req: Request) -> Reply:
        hrefs = _asked(req)
        return Reply(status, b"too big") if len(hrefs) > 2 else Reply(207, _multistatus(hrefs))

    with Stub(handler) as stub:
        got = _fetch_all(stub, 6, batch=6)
        assert sorted(got) == sorted(f"{i}.ics" for i in range(6))


def test_fetch_skips_items_the_server_says_are_gone() -> None:
    def handler(req: Request) -> Reply:
        hrefs = _asked(req)
        body = _multistatus([h for h in hrefs if not h.endswith("/1.ics")]).replace(
            b"</D:multistatus>",
            f"<D:response><D:href>{hrefs[1]}</D:href><D:status>HTTP/1.1 404 Not Found</D:status>"
            "</D:response></D:multistatus>".encode())
        return Reply(207, body)

    with Stub(handler) as stub:
        got = _fetch_all(stub, 3, batch=3)
        assert sorted(got) == ["0.ics", "2.ics"]
        assert len(stub.requests) == 1
