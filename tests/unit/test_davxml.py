"""davxml: request builders, the hardened parser, and multistatus parsing over recorded answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from caldavfs import davxml as x
from caldavfs.errors import InvalidResponseError
from tests.httpstub import Reply, Stub

DATA = Path(__file__).resolve().parent.parent / "data"
# Multistatus answers only: captures.json knows each recording's status (error bodies such as a bad sync
# token, or SabreDAV 1.8's 403 sync-collection and 404 multiget, are not 207); the iCloud files are not in it.
_STATUS = {k: v["status"] for k, v in json.loads((DATA / "captures.json").read_text()).items()}
ANSWERS = sorted(p for p in DATA.glob("*.xml")
                 if not p.name.endswith("_request.xml") and _STATUS.get(p.stem, 207) == 207)


def _parse(body: bytes) -> etree._Element:
    return etree.fromstring(body)


# --- builders ------------------------------------------------------------------------------


def test_propfind_builder() -> None:
    root = _parse(x.propfind([x.RESOURCETYPE, x.GETCTAG, x.CALENDAR_COLOR]))
    assert root.tag == "{DAV:}propfind"
    (prop,) = root
    assert prop.tag == "{DAV:}prop"
    assert [c.tag for c in prop] == [x.RESOURCETYPE, x.GETCTAG, x.CALENDAR_COLOR]


def test_calendar_multiget_builder_keeps_hrefs_in_order() -> None:
    hrefs = ["/c/b.ics", "/c/a%20b.ics", "/c/%ED%9A%8C.ics"]
    root = _parse(x.calendar_multiget(hrefs))
    assert root.tag == f"{{{x.CALDAV}}}calendar-multiget"
    assert [c.tag for c in root.find("{DAV:}prop")] == [x.GETETAG, x.CALENDAR_DATA]
    assert [h.text for h in root.findall("{DAV:}href")] == hrefs


def test_calendar_query_builder() -> None:
    root = _parse(x.calendar_query())
    assert root.tag == f"{{{x.CALDAV}}}calendar-query"
    comp = root.find(f"{{{x.CALDAV}}}filter/{{{x.CALDAV}}}comp-filter")
    assert comp is not None and comp.get("name") == "VCALENDAR"
    assert len(comp) == 0


@pytest.mark.parametrize("token", [None, "", "http://radicale.org/ns/sync/abc"])
def test_sync_collection_builder(token: str | None) -> None:
    root = _parse(x.sync_collection(token, [x.GETETAG]))
    assert root.tag == "{DAV:}sync-collection"
    assert (root.findtext("{DAV:}sync-token") or "") == (token or "")
    assert root.findtext("{DAV:}sync-level") == "1"
    assert [c.tag for c in root.find("{DAV:}prop")] == [x.GETETAG]


def test_builders_escape_hrefs() -> None:
    body = x.calendar_multiget(["/c/a&b<c>.ics"])
    assert _parse(body).findtext("{DAV:}href") == "/c/a&b<c>.ics"


# --- recorded answers ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ANSWERS, ids=lambda p: p.name)
def test_every_recorded_answer_parses(path: Path) -> None:
    raw = path.read_bytes()
    ms = x.parse_multistatus(raw, path.name)
    assert ms.responses
    expected = [h.text.strip() for h in _parse(raw).iter("{DAV:}href") if h.getparent().tag == "{DAV:}response"]
    assert [r.href for r in ms.responses] == expected
    for r in ms.responses:
        # only 2xx propstats count: no property may hold a 404 propstat's empty value
        for name in (x.GETCTAG, x.DISPLAYNAME, x.GETETAG):
            if name in r.props:
                assert r.props[name] != "", (path.name, r.href, name)


def test_icloud_home_markers_and_404_propstats() -> None:
    ms = x.parse_multistatus((DATA / "icloud_propfind_home.xml").read_bytes(), "icloud")
    by_name = {r.href.rstrip("/").rsplit("/", 1)[-1]: r for r in ms.responses}
    calendars = {n for n, r in by_name.items() if x.CALENDAR in r.markers()}
    assert calendars == {"home", "tasks", "work"}
    # The 404 propstat repeats <resourcetype/> empty: the 200 value must survive it.
    assert x.COLLECTION in by_name["home"].markers()
    assert by_name["home"].text(x.DISPLAYNAME) == "홈"
    assert by_name["home"].text(x.GETCTAG)
    assert f"{{{x.CS}}}notification" in by_name["notification"].markers()
    assert f"{{{x.CALDAV}}}schedule-inbox" in by_name["inbox"].markers()
    assert f"{{{x.CALDAV}}}schedule-outbox" in by_name["outbox"].markers()
    for n in ("notification", "inbox", "outbox", "calendars"):
        assert x.CALENDAR not in by_name[n].markers()


def test_icloud_discovery_hrefs() -> None:
    root = x.parse_multistatus((DATA / "icloud_propfind_root.xml").read_bytes(), "root")
    assert root.responses[0].hrefs(x.CURRENT_USER_PRINCIPAL) == ("/123456789/principal/",)
    principal = x.parse_multistatus((DATA / "icloud_propfind_principal.xml").read_bytes(), "p")
    homes = principal.responses[0].hrefs(x.CALENDAR_HOME_SET)
    assert homes and homes[0].startswith("https://p51-caldav.icloud.com")


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_recorded_home_calendars(server: str) -> None:
    ms = x.parse_multistatus((DATA / f"{server}_propfind_home.xml").read_bytes(), server)
    cals = {r.href.rstrip("/").rsplit("/", 1)[-1]: r for r in ms.responses if x.CALENDAR in r.markers()}
    assert set(cals) == {"work", "home", "tasks"}
    assert cals["work"].text(x.CALENDAR_COLOR) == "#FF8800"
    assert cals["home"].text(x.CALENDAR_COLOR) is None
    assert cals["tasks"].hrefs(x.SUPPORTED_COMPONENTS) == ("VTODO",)


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_recorded_sync_tokens_and_deletions(server: str) -> None:
    initial = x.parse_multistatus((DATA / f"{server}_sync_initial.xml").read_bytes(), "i")
    changes = x.parse_multistatus((DATA / f"{server}_sync_changes.xml").read_bytes(), "c")
    assert initial.sync_token and changes.sync_token
    assert initial.sync_token != changes.sync_token
    if server == "radicale":
        assert initial.sync_token.startswith("http://radicale.org/ns/sync/")
    gone = [r for r in changes.responses if r.status == 404]
    assert [r.href.rsplit("/", 1)[-1] for r in gone] == ["birthday.ics"]
    assert all(r.status is None or r.status == 200 or r.text(x.GETETAG) for r in changes.responses if r not in gone)


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_recorded_calendar_data_text(server: str) -> None:
    ms = x.parse_multistatus((DATA / f"{server}_multiget.xml").read_bytes(), server)
    datas = [r.text(x.CALENDAR_DATA) for r in ms.responses if r.text(x.CALENDAR_DATA)]
    assert len(datas) >= 5
    for text in datas:
        assert text.startswith("BEGIN:VCALENDAR")
        assert text.rstrip().endswith("END:VCALENDAR")
        assert "\r" not in text  # the XML parser normalised the line ends


def test_xandikos_noext_has_etag_but_no_calendar_data() -> None:
    ms = x.parse_multistatus((DATA / "xandikos_multiget_noext.xml").read_bytes(), "noext")
    (r,) = ms.responses
    assert r.text(x.GETETAG)
    assert r.text(x.CALENDAR_DATA) is None


def test_sloppy_dav_namespace() -> None:
    body = (b'<?xml version="1.0"?><multistatus xmlns="DAV"><response><href>/a/b/</href>'
            b"<propstat><prop><displayname>Sloppy</displayname><resourcetype><collection/></resourcetype>"
            b"</prop><status>HTTP/1.1 200 OK</status></propstat></response>"
            b"<sync-token>tok</sync-token></multistatus>")
    ms = x.parse_multistatus(body, "sloppy")
    (r,) = ms.responses
    assert r.href == "/a/b/"
    assert r.text(x.DISPLAYNAME) == "Sloppy"
    assert x.COLLECTION in r.markers()
    assert ms.sync_token == "tok"


def test_control_characters_are_removed() -> None:
    body = (b'<multistatus xmlns="DAV:"><response><href>/a</href><propstat><prop>'
            b"<displayname>x\x01y</displayname></prop><status>HTTP/1.1 200 OK</status></propstat>"
            b"</response></multistatus>")
    assert x.parse_multistatus(body, "ctl").responses[0].text(x.DISPLAYNAME) == "xy"


# --- hostile and broken XML -------------------------------------------------------------------

_MS_END = b"<response><href>&e;</href></response></multistatus>"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY e "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<multistatus xmlns="DAV:">""" + _MS_END


def _with_external(system_id: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY e SYSTEM "{system_id}">]>\n'
            '<multistatus xmlns="DAV:">').encode() + _MS_END


def _refused(body: bytes) -> InvalidResponseError:
    with pytest.raises(InvalidResponseError) as info:
        x.parse_multistatus(body, "hostile")
    return info.value


def test_billion_laughs_refused() -> None:
    exc = _refused(BILLION_LAUGHS)
    assert "lollol" not in str(exc)


def test_external_file_entity_refused() -> None:
    exc = _refused(_with_external("file:///etc/passwd"))
    assert "root:" not in str(exc)


def test_external_http_entity_refused_without_fetching() -> None:
    with Stub([Reply(200, b"leaked-secret")]) as stub:
        exc = _refused(_with_external(stub.url + "evil.xml"))
        assert stub.requests == []
    assert "leaked-secret" not in str(exc)


def test_any_doctype_refused() -> None:
    _refused(b'<?xml version="1.0"?><!DOCTYPE multistatus><multistatus xmlns="DAV:"/>')


def test_parameter_entity_dtd_refused() -> None:
    _refused(b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
             b'<multistatus xmlns="DAV:"/>')


def test_invalid_utf8_refused() -> None:
    _refused(b'<?xml version="1.0" encoding="utf-8"?><multistatus xmlns="DAV:"><response>'
             b"<href>/a/\xff\xfe.ics</href></response></multistatus>")


def test_truncated_recorded_answer_refused() -> None:
    raw = (DATA / "radicale_propfind_home.xml").read_bytes()
    _refused(raw[: len(raw) // 2])


@pytest.mark.parametrize("body", [b"", b"   ", b"<html><body>hi</body></html>",
                                  b'<error xmlns="DAV:"><valid-sync-token/></error>'])
def test_empty_or_wrong_root_refused(body: bytes) -> None:
    _refused(body)


# --- DAV:error preconditions -------------------------------------------------------------------


@pytest.mark.parametrize("server", ["radicale", "xandikos"])
def test_recorded_error_precondition(server: str) -> None:
    assert x.parse_error_precondition((DATA / f"{server}_sync_bad_token.xml").read_bytes()) == "valid-sync-token"


@pytest.mark.parametrize(("body", "expected"), [
    (b'<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:valid-calendar-data/></D:error>',
     "valid-calendar-data"),
    (b'<error xmlns="DAV:"><no-uid-conflict xmlns="urn:ietf:params:xml:ns:caldav"><href>/x</href>'
     b"</no-uid-conflict></error>", "no-uid-conflict"),
    (b"", ""),
    (b"Internal Server Error", ""),
    (b"<html><body>403</body></html>", ""),
    (b'<error xmlns="DAV:">', ""),
    (b'<!DOCTYPE e><error xmlns="DAV:"><x/></error>', ""),
])
def test_parse_error_precondition(body: bytes, expected: str) -> None:
    assert x.parse_error_precondition(body) == expected


def test_parse_status() -> None:
    assert x.parse_status("HTTP/1.1 404 Not Found") == 404
    assert x.parse_status("HTTP/1.1 200 OK") == 200
    assert x.parse_status(None) is None
    assert x.parse_status("garbage") is None
