"""A scripted CalDAV account on a tests.httpstub.Stub, for Tree- and Client-level fault tests.

It serves a home-set PROPFIND (one calendar, /alice/work/), the calendar's PROPFIND Depth 1
(every FakeItem with the href exactly as given, which may be hostile; getcontentlength only when
asked), calendar-multiget REPORTs answered from the hrefs in the request body, calendar-query
REPORTs answered with every item, and GETs. Hooks let a test drop, duplicate or add
responses, or make the whole server silent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit

from lxml import etree

from caldavfs.client import Client
from caldavfs.dav import DavSession
from caldavfs.tree import Tree
from tests.httpstub import Reply, Request, Stub

D = "DAV:"
C = "urn:ietf:params:xml:ns:caldav"
CS = "http://calendarserver.org/ns/"
HOME = "/alice/"
CAL = "/alice/work/"
LASTMOD = "Mon, 05 Jan 2026 10:00:00 GMT"


def ics(uid: str, summary: str = "x", pad: int = 0) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//caldavfs//faults//EN", "BEGIN:VEVENT",
             f"UID:{uid}", "DTSTAMP:20260101T000000Z", "DTSTART:20260105T090000Z", "DURATION:PT1H",
             f"SUMMARY:{summary}"]
    if pad:
        lines.append("DESCRIPTION:" + "p" * pad)
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class FakeItem:
    href: str  # as the server spells it in its PROPFIND answer
    data: bytes
    etag: str = ""
    lastmod: str | None = LASTMOD
    member: bool = True  # a real, distinct member of /alice/work/ that the mount must show

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = f'"{abs(hash((self.href, self.data))) % 10**12}"'


def _t(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _prop_response(ms: etree._Element, href: str, props: list[etree._Element], status: str | None = None) -> None:
    resp = etree.SubElement(ms, _t(D, "response"))
    etree.SubElement(resp, _t(D, "href")).text = href
    if status is not None:
        etree.SubElement(resp, _t(D, "status")).text = status
        return
    ps = etree.SubElement(resp, _t(D, "propstat"))
    prop = etree.SubElement(ps, _t(D, "prop"))
    for p in props:
        prop.append(p)
    etree.SubElement(ps, _t(D, "status")).text = "HTTP/1.1 200 OK"


def _el(ns: str, name: str, text: str | None = None, children: tuple[etree._Element, ...] = ()) -> etree._Element:
    el = etree.Element(_t(ns, name))
    el.text = text
    for c in children:
        el.append(c)
    return el


def _multistatus() -> etree._Element:
    return etree.Element(_t(D, "multistatus"), nsmap={"D": D, "C": C, "CS": CS})


def _xml(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


@dataclass
class FakeCalDAV:
    items: list[FakeItem]
    ctag: str = "1"
    # hrefs asked in one REPORT -> hrefs to answer (default: all of them)
    report_filter: Callable[[int, list[str]], list[str]] | None = None
    report_duplicate: bool = False
    # extra raw <D:response> elements put FIRST in each REPORT answer: (href, data)
    report_extra: list[tuple[str, bytes]] = field(default_factory=list)
    calendar_status: str | None = None  # e.g. "HTTP/1.1 404 Not Found" for the calendar's own response
    silent: bool = False
    reports: list[list[str]] = field(default_factory=list)
    query_status: int | None = None  # answer calendar-query REPORTs with this status instead
    query_answers: dict[str, FakeItem] = field(default_factory=dict)  # href -> version a query gives
    report_etags: bool = True  # False: REPORT answers carry calendar-data without getetag
    queries: int = 0

    def __post_init__(self) -> None:
        self.stub = Stub(self.handle)
        self.url = self.stub.url
        self.home_url = urljoin(self.url, HOME)
        self.cal_url = urljoin(self.url, CAL)

    # -- lookup ---------------------------------------------------------------------------

    def _path_key(self, href: str) -> str:
        return unquote(urlsplit(urljoin(self.cal_url, href)).path, errors="surrogateescape")

    def find(self, href: str) -> FakeItem | None:
        key = self._path_key(href)
        for item in self.items:
            if urlsplit(urljoin(self.cal_url, item.href)).netloc != urlsplit(self.url).netloc:
                continue
            if self._path_key(item.href) == key:
                return item
        return None

    # -- answers --------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        if self.silent:
            return Reply(hang=True)
        path = urlsplit(req.path).path
        if req.method == "PROPFIND":
            if unquote(path) == HOME:
                return Reply(207, self.home_answer(), {"Content-Type": "application/xml"})
            if unquote(path) == CAL:
                return Reply(207, self.calendar_answer(sizes=b"getcontentlength" in req.body),
                             {"Content-Type": "application/xml"})
            return Reply(404)
        if req.method == "REPORT" and unquote(path) == CAL:
            root = etree.fromstring(req.body)
            hrefs = [h.text or "" for h in root.iter(_t(D, "href"))]
            if root.tag == _t(C, "calendar-query"):
                self.queries += 1
                if self.query_status is not None:
                    return Reply(self.query_status)
                hrefs = [item.href for item in self.items]
                self.reports.append(hrefs)
                answer = self.report_filter(len(self.reports), hrefs) if self.report_filter else hrefs
                return Reply(207, self.report_answer(answer, self.query_answers), {"Content-Type": "application/xml"})
            self.reports.append(hrefs)
            answer = self.report_filter(len(self.reports), hrefs) if self.report_filter else hrefs
            return Reply(207, self.report_answer(answer), {"Content-Type": "application/xml"})
        if req.method == "GET":
            item = self.find(path)
            if item is None:
                return Reply(404)
            return Reply(200, item.data, {"ETag": item.etag, "Content-Type": "text/calendar"})
        return Reply(405)

    def home_answer(self) -> bytes:
        ms = _multistatus()
        _prop_response(ms, HOME, [_el(D, "resourcetype", children=(_el(D, "collection"),))])
        _prop_response(ms, CAL, [
            _el(D, "resourcetype", children=(_el(D, "collection"), _el(C, "calendar"))),
            _el(D, "displayname", "Work"),
            _el(CS, "getctag", self.ctag),
        ])
        return _xml(ms)

    def calendar_answer(self, *, sizes: bool = True) -> bytes:
        ms = _multistatus()
        if self.calendar_status:
            _prop_response(ms, CAL, [], status=self.calendar_status)
            return _xml(ms)
        _prop_response(ms, CAL, [_el(D, "resourcetype", children=(_el(D, "collection"), _el(C, "calendar")))])
        for item in self.items:
            props = [_el(D, "resourcetype"), _el(D, "getetag", item.etag),
                     _el(D, "getcontenttype", "text/calendar; charset=utf-8")]
            if sizes:
                props.append(_el(D, "getcontentlength", str(len(item.data))))
            if item.lastmod is not None:
                props.append(_el(D, "getlastmodified", item.lastmod))
            _prop_response(ms, item.href, props)
        return _xml(ms)

    def _data_response(self, ms: etree._Element, href: str, item: FakeItem | None, data: bytes | None = None) -> None:
        if item is None and data is None:
            _prop_response(ms, href, [], status="HTTP/1.1 404 Not Found")
            return
        body = data if data is not None else item.data  # type: ignore[union-attr]
        etag = item.etag if item is not None else '"evil"'
        props = [_el(D, "getetag", etag)] if self.report_etags else []
        _prop_response(ms, href, [*props, _el(C, "calendar-data", body.decode("utf-8", "surrogateescape"))])

    def report_answer(self, hrefs: list[str], versions: dict[str, FakeItem] | None = None) -> bytes:
        ms = _multistatus()
        for href, data in self.report_extra:
            self._data_response(ms, href, None, data)
        for href in hrefs:
            item = (versions or {}).get(href) or self.find(href)
            self._data_response(ms, href, item)
            if self.report_duplicate:
                self._data_response(ms, href, item)
        return _xml(ms)

    # -- wiring ---------------------------------------------------------------------------

    def tree(self, *, ttl: float = 60.0, timeout: float = 5.0, batch: int = 100) -> Tree:
        client = Client(DavSession(timeout=timeout, retries=2), batch=batch)
        return Tree(client, self.home_url, ttl=ttl)

    def close(self) -> None:
        self.stub.close()

    def __enter__(self) -> FakeCalDAV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
