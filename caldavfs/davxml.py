"""Pure XML for WebDAV (RFC 4918), CalDAV (RFC 4791) and sync-collection (RFC 6578).

Request bodies are built with lxml; answers are parsed by one hardened parser that
never loads a DTD, never expands an entity and never touches the network, and turned
into small dataclasses. This is the only module that imports lxml. No I/O here.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from caldavfs.errors import InvalidResponseError

log = logging.getLogger(__name__)

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CS = "http://calendarserver.org/ns/"
ICAL = "http://apple.com/ns/ical/"
_NSMAP = {"D": DAV, "C": CALDAV, "CS": CS, "I": ICAL}


def _t(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


# Property names (Clark notation); the only place namespace URIs are spelled out.
RESOURCETYPE = _t(DAV, "resourcetype")
DISPLAYNAME = _t(DAV, "displayname")
GETETAG = _t(DAV, "getetag")
GETCONTENTLENGTH = _t(DAV, "getcontentlength")
GETLASTMODIFIED = _t(DAV, "getlastmodified")
GETCONTENTTYPE = _t(DAV, "getcontenttype")
SYNC_TOKEN = _t(DAV, "sync-token")
CURRENT_USER_PRINCIPAL = _t(DAV, "current-user-principal")
CALENDAR_HOME_SET = _t(CALDAV, "calendar-home-set")
CALENDAR_DATA = _t(CALDAV, "calendar-data")
SUPPORTED_COMPONENTS = _t(CALDAV, "supported-calendar-component-set")
GETCTAG = _t(CS, "getctag")
CALENDAR_COLOR = _t(ICAL, "calendar-color")

# resourcetype markers
COLLECTION = _t(DAV, "collection")
CALENDAR = _t(CALDAV, "calendar")

_MULTISTATUS = _t(DAV, "multistatus")
_RESPONSE = _t(DAV, "response")
_HREF = _t(DAV, "href")
_STATUS = _t(DAV, "status")
_PROPSTAT = _t(DAV, "propstat")
_PROP = _t(DAV, "prop")
_ERROR = _t(DAV, "error")

# How each property's element becomes a value: a descriptor table instead of if/elif chains.
_HREF_PROPS = frozenset({CURRENT_USER_PRINCIPAL, CALENDAR_HOME_SET})
_SET_PROPS = frozenset({RESOURCETYPE})
_COMPONENT_PROPS = frozenset({SUPPORTED_COMPONENTS})

PropValue = str | frozenset[str] | tuple[str, ...]


@dataclass
class DavResponse:
    """One ``DAV:response``: an href, its own status if any, and the 2xx properties."""

    href: str
    status: int | None = None
    props: dict[str, PropValue] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.props.get(name)
        return value if isinstance(value, str) else None

    def hrefs(self, name: str) -> tuple[str, ...]:
        value = self.props.get(name)
        return value if isinstance(value, tuple) else ()

    def markers(self, name: str = RESOURCETYPE) -> frozenset[str]:
        value = self.props.get(name)
        return value if isinstance(value, frozenset) else frozenset()


@dataclass
class Multistatus:
    responses: list[DavResponse]
    sync_token: str | None = None


# --- building requests -------------------------------------------------------------------


def _root(ns: str, name: str) -> etree._Element:
    return etree.Element(_t(ns, name), nsmap=_NSMAP)


def _add_props(parent: etree._Element, props: Iterable[str]) -> None:
    prop = etree.SubElement(parent, _PROP)
    for name in props:
        etree.SubElement(prop, name)


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def propfind(props: Iterable[str]) -> bytes:
    root = _root(DAV, "propfind")
    _add_props(root, props)
    return _serialize(root)


def calendar_multiget(hrefs: Iterable[str], props: Iterable[str] = (GETETAG, CALENDAR_DATA)) -> bytes:
    root = _root(CALDAV, "calendar-multiget")
    _add_props(root, props)
    for href in hrefs:
        etree.SubElement(root, _HREF).text = href
    return _serialize(root)


def calendar_query(props: Iterable[str] = (GETETAG, CALENDAR_DATA)) -> bytes:
    """Every object of a calendar (RFC 4791 7.8, a VCALENDAR comp-filter and nothing else)."""
    root = _root(CALDAV, "calendar-query")
    _add_props(root, props)
    filt = etree.SubElement(root, _t(CALDAV, "filter"))
    etree.SubElement(filt, _t(CALDAV, "comp-filter"), name="VCALENDAR")
    return _serialize(root)


def sync_collection(token: str | None, props: Iterable[str]) -> bytes:
    """RFC 6578 3.2; an empty token asks for the initial full listing."""
    root = _root(DAV, "sync-collection")
    etree.SubElement(root, _t(DAV, "sync-token")).text = token or ""
    etree.SubElement(root, _t(DAV, "sync-level")).text = "1"
    _add_props(root, props)
    return _serialize(root)


def mkcalendar(displayname: str | None = None) -> bytes:
    """RFC 4791 5.3.1; a calendar for events and todos."""
    root = _root(CALDAV, "mkcalendar")
    prop = etree.SubElement(etree.SubElement(root, _t(DAV, "set")), _PROP)
    if displayname:
        etree.SubElement(prop, DISPLAYNAME).text = displayname
    comps = etree.SubElement(prop, SUPPORTED_COMPONENTS)
    for name in ("VEVENT", "VTODO", "VJOURNAL"):
        etree.SubElement(comps, _t(CALDAV, "comp"), name=name)
    return _serialize(root)


def proppatch(props: dict[str, str | None]) -> bytes:
    """Set (value) or remove (None) text properties."""
    root = _root(DAV, "propertyupdate")
    for name, value in props.items():
        action = etree.SubElement(root, _t(DAV, "set" if value is not None else "remove"))
        el = etree.SubElement(etree.SubElement(action, _PROP), name)
        if value is not None:
            el.text = value
    return _serialize(root)


# --- parsing answers ---------------------------------------------------------------------



def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )

# Some servers emit raw ASCII control characters, which XML forbids (vdirsyncer strips them too).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_STATUS_CODE = re.compile(r"\b(\d{3})\b")
# Only XML's own white space: str.strip() would also eat U+00A0 or U+3000 that belong to an href.
_XML_SPACE = " \t\r\n"


def parse_xml(body: bytes, what: str) -> etree._Element:
    """Parse untrusted bytes; ``what`` names the answer in error messages."""
    _refuse_empty(body, what)
    try:
        doc = etree.fromstring(body, _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        cleaned = _without_controls(body, what)
        if cleaned == body:
            raise InvalidResponseError(f"{what}: malformed XML ({exc})") from exc
        try:
            doc = etree.fromstring(cleaned, _parser()).getroottree()
        except etree.XMLSyntaxError as exc2:
            raise InvalidResponseError(f"{what}: malformed XML ({exc2})") from exc2
    info: Any = doc.docinfo
    if info.doctype or info.internalDTD is not None:
        raise _doctype_refused(what)
    return doc.getroot()


def _refuse_empty(body: bytes, what: str) -> None:
    if not body.strip():
        raise InvalidResponseError(f"{what}: empty answer where XML was expected")


def _without_controls(body: bytes, what: str) -> bytes:
    cleaned = _CONTROL.sub(b"", body)
    if cleaned != body:
        log.warning("%s: removed control characters the server put into its XML", what)
    return cleaned


def _doctype_refused(what: str) -> InvalidResponseError:
    # WebDAV never needs a DTD; one in an answer is an attack or a misconfigured proxy.
    return InvalidResponseError(f"{what}: answer carries a DOCTYPE, refused")


def _clark(el: etree._Element) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    # Sloppy clients and servers write xmlns="DAV" without the colon; treat it as DAV:.
    if tag.startswith("{DAV}"):
        return "{DAV:}" + tag[5:]
    return tag


def _children(el: etree._Element, name: str) -> Iterator[etree._Element]:
    for child in el:
        tag = child.tag  # as _clark, inline: this runs for every element of every listing
        if tag == name or (isinstance(tag, str) and tag.startswith("{DAV}") and "{DAV:}" + tag[5:] == name):
            yield child


def _first_text(el: etree._Element, name: str) -> str | None:
    for child in _children(el, name):
        return (child.text or "").strip(_XML_SPACE)
    return None


@functools.lru_cache(maxsize=64)  # a handful of distinct lines, each met once per item
def parse_status(line: str | None) -> int | None:
    """``HTTP/1.1 404 Not Found`` -> 404."""
    if not line:
        return None
    match = _STATUS_CODE.search(line)
    return int(match.group(1)) if match else None


def _prop_value(el: etree._Element) -> PropValue:
    name = _clark(el)
    if name in _HREF_PROPS:
        return tuple((h.text or "").strip(_XML_SPACE) for h in _children(el, _HREF))
    if name in _SET_PROPS:
        return frozenset(_clark(c) for c in el if _clark(c))
    if name in _COMPONENT_PROPS:
        return tuple(str(c.get("name", "")).upper() for c in el if _clark(c).endswith("}comp"))
    text = (el.text or "") if len(el) == 0 else "".join(str(t) for t in el.itertext())
    # calendar-data is served byte for byte: keep its whitespace. Others are trimmed.
    return text if name == CALENDAR_DATA else text.strip(_XML_SPACE)


def _parse_response(el: etree._Element, what: str) -> list[DavResponse]:
    hrefs = [(h.text or "").strip(_XML_SPACE) for h in _children(el, _HREF)]
    if not hrefs or not all(hrefs):
        log.warning("%s: skipped a response without an href", what)
        return []
    status = parse_status(_first_text(el, _STATUS))
    props: dict[str, PropValue] = {}
    for propstat in _children(el, _PROPSTAT):
        code = parse_status(_first_text(propstat, _STATUS))
        # A propstat without status is taken as 200; only 2xx values are real (iCloud repeats
        # every property in a 404 propstat with an empty value).
        if code is not None and not 200 <= code < 300:
            continue
        for prop in _children(propstat, _PROP):
            for child in prop:
                name = _clark(child)
                if name:
                    props[name] = _prop_value(child)
    return [DavResponse(href=h, status=status, props=dict(props)) for h in hrefs]


_CR_REF = re.compile(rb"&#(?:13|[xX]0*[dD]);")
_ELEMENT_START = re.compile(rb"<[^?!]")
_CR_IN_TAG = re.compile(rb"<[^>]*\r")

# What an answer tells of its calendar-data's line ends (``DataAnswer.line_ends``).
KEPT = "kept"  # CRs survive parsing: the text is the server's bytes (Radicale, Xandikos)
NO_CR = "none"  # the body has no CR at all: LF as stored, or CRs dropped (SabreDAV 1.8)
UNKNOWN = "unknown"  # CDATA, or a CR where no reference may stand: the parser decided


def _line_ends(body: bytes) -> tuple[str, tuple[int, int] | None]:
    """What ``body`` tells of its calendar-data's line ends (KEPT, NO_CR or UNKNOWN), and the
    span (from the root's start to the last ``>``) whose literal CRs are to be written ``&#13;``,
    if any: an XML parser keeps a CR written so, where it turns a literal CRLF or CR into LF. A
    body that writes its CRs as ``&#13;`` already (lxml does) is kept as it is. Inside CDATA
    ``&#13;`` would stay literal, inside a tag it is not allowed, and before or after the root
    element (the CRLF after the XML declaration) neither: UNKNOWN, or left alone."""
    if b"<![CDATA[" in body:
        return UNKNOWN, None
    first, last = _ELEMENT_START.search(body), body.rfind(b">")
    if first is None or last < first.start():
        return UNKNOWN, None
    start = first.start()
    if body.find(b"\r", start, last) >= 0:
        if _CR_IN_TAG.search(body):
            return UNKNOWN, None
        return KEPT, (start, last)
    return (KEPT if _CR_REF.search(body, start, last) else NO_CR), None


def parse_multistatus(body: bytes, what: str) -> Multistatus:
    root = parse_xml(body, what)
    if _clark(root) != _MULTISTATUS:
        raise InvalidResponseError(f"{what}: expected a DAV:multistatus, got {root.tag!r}")
    responses: list[DavResponse] = []
    for el in _children(root, _RESPONSE):
        responses.extend(_parse_response(el, what))
    return Multistatus(responses=responses, sync_token=_first_text(root, SYNC_TOKEN))


@dataclass
class DataAnswer:
    """A calendar-data answer (multiget, query) read as a stream: ``responses`` parses as it is
    iterated, once, so that no tree of the whole answer is ever held (a query of a big calendar
    is tens of MB). It raises InvalidResponseError where the XML turns out bad."""

    responses: Iterator[DavResponse]
    line_ends: str  # KEPT, NO_CR or UNKNOWN: see _line_ends


_FEED = 1 << 20  # bytes handed to the parser at a time
# Answers smaller than this are parsed whole, which is faster; larger ones as a stream, which
# holds no tree of the whole: 4 MB of calendar-data (a query of about 2,500 items), 1 MB of a
# listing (about 3,000 items), whose tree is larger for its size.
STREAM_ABOVE = 4 << 20
STREAM_LISTING_ABOVE = 1 << 20


def _checked(body: bytes, what: str) -> bytes:
    """What parse_xml checks before and around parsing, for a body parsed as a stream."""
    _refuse_empty(body, what)
    body = _without_controls(body, what)
    first = _ELEMENT_START.search(body)
    if first is None:
        raise InvalidResponseError(f"{what}: no XML element in the answer")
    if b"<!DOCTYPE" in body[:first.start()]:
        raise _doctype_refused(what)
    return body


def iter_multistatus(body: bytes, what: str) -> Iterator[DavResponse]:
    """parse_multistatus's responses; a big answer (STREAM_LISTING_ABOVE) is parsed as it is iterated
    (once), never as one tree, and raises InvalidResponseError where the XML turns out bad."""
    if len(body) < STREAM_LISTING_ABOVE:
        return iter(parse_multistatus(body, what).responses)
    body = _checked(body, what)
    view = memoryview(body)
    return _stream((bytes(view[i:i + _FEED]) for i in range(0, len(body), _FEED)), b"", what)


def iter_data_answer(body: bytes, what: str) -> DataAnswer:
    """A multistatus of calendar-data, CRs kept where the body allows (_line_ends), parsed
    response by response with the same hardened settings as parse_xml: whole if it is small,
    as a stream if it is big."""
    body = _checked(body, what)
    line_ends, span = _line_ends(body)
    if len(body) < STREAM_ABOVE:
        kept = body
        if span is not None:
            start, last = span
            kept = body[:start] + body[start:last].replace(b"\r", b"&#13;") + body[last:]
        try:
            return DataAnswer(iter(parse_multistatus(kept, what).responses), line_ends)
        except InvalidResponseError:
            if span is None:
                raise
            # A CR the rewrite could not place (before a trailing comment): the stream below
            # stops at the root's end.
    view = memoryview(body)
    if span is not None:  # CRs to rewrite: fed in pieces, never a second copy of the whole
        start, last = span
        feeds: Iterator[bytes] = itertools.chain(
            (bytes(view[:start]),),
            (bytes(view[i:min(i + _FEED, last)]).replace(b"\r", b"&#13;") for i in range(start, last, _FEED)))
        tail = bytes(view[last:])
    else:
        feeds, tail = (bytes(view[i:i + _FEED]) for i in range(0, len(body), _FEED)), b""
    return DataAnswer(_stream(feeds, tail, what), line_ends)


def _stream(feeds: Iterator[bytes], tail: bytes, what: str) -> Iterator[DavResponse]:
    # Only the ends of response elements come up to Python (``tag``, filtered by lxml itself).
    parser = etree.XMLPullParser(events=("end",), tag=(_RESPONSE, "{DAV}response", _MULTISTATUS, "{DAV}multistatus"),
                                 resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                                 remove_comments=True, remove_pis=True, huge_tree=False)
    seen_root: list[bool] = []
    closed: list[bool] = []

    def parsed() -> Iterator[DavResponse]:
        events: Iterator[tuple[str, Any]] = parser.read_events()
        for _, el in events:
            parent = el.getparent()
            if parent is None:
                closed.append(True)  # the root's end: the rest is the epilog
                continue
            if parent.getparent() is not None:
                continue  # not a child of the root
            if not seen_root:
                if _clark(parent) != _MULTISTATUS:
                    raise InvalidResponseError(f"{what}: expected a DAV:multistatus, got {parent.tag!r}")
                seen_root.append(True)
            yield from _parse_response(el, what)
            el.clear()
            while el.getprevious() is not None:  # what was parsed goes
                del parent[0]

    try:
        for data in itertools.chain(feeds, (tail,)):
            parser.feed(data)
            yield from parsed()
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        yield from parsed()  # what came before the fault
        if not closed:  # after the root's end (a CR before a trailing comment): all is here
            raise InvalidResponseError(f"{what}: malformed XML ({exc})") from exc
        return
    if _clark(root) != _MULTISTATUS:
        raise InvalidResponseError(f"{what}: expected a DAV:multistatus, got {root.tag!r}")


def parse_error_precondition(body: bytes) -> str:
    """Local name of the first precondition in a ``DAV:error`` body, or ``""``."""
    if not body.lstrip().startswith(b"<"):
        return ""
    try:
        root = parse_xml(body, "error body")
    except InvalidResponseError:
        return ""
    if _clark(root) != _ERROR:
        return ""
    for child in root:
        name = _clark(child)
        if name:
            return name.rsplit("}", 1)[-1]
    return ""


def parse_proppatch_failures(body: bytes, what: str) -> list[str]:
    """Properties a PROPPATCH multistatus reports as not set (any non-2xx propstat)."""
    root = parse_xml(body, what)
    failed: list[str] = []
    for response in _children(root, _RESPONSE):
        for propstat in _children(response, _PROPSTAT):
            code = parse_status(_first_text(propstat, _STATUS))
            if code is not None and not 200 <= code < 300:
                for prop in _children(propstat, _PROP):
                    failed.extend(_clark(c).rsplit("}", 1)[-1] for c in prop)
    return failed
