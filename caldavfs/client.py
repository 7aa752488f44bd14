"""CalDAV semantics: discovery, calendars, listings, multiget, and exact item bytes.

Discovery follows RFC 6764 (``/.well-known/caldav``), RFC 5397 (current-user-principal)
and RFC 4791 6.2.1 (calendar-home-set). Hrefs are kept exactly as the server spelled
them for requests, and compared through ``canonical_href`` (servers differ in hex case
and in whether ``@`` is encoded). No filesystem names and no cache policy here.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from caldavfs import davxml as x
from caldavfs.dav import DavSession, origin
from caldavfs.errors import (
    CaldavfsError,
    DavError,
    InsufficientStorageError,
    InvalidResponseError,
    MethodNotAllowedError,
    NotCalDAVError,
    NotFoundError,
    ServerError,
    TransportError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

CALENDAR_PROPS = (
    x.RESOURCETYPE,
    x.DISPLAYNAME,
    x.GETCTAG,
    x.SYNC_TOKEN,
    x.CALENDAR_COLOR,
    x.SUPPORTED_COMPONENTS,
    # The collection's own mtime: where it covers its items (Radicale), a folder's stat needs no
    # listing of the calendar; costs next to nothing there (0.03 s for the whole home-set).
    x.GETLASTMODIFIED,
)
# One item's properties (after an upload).
ITEM_PROPS = (x.RESOURCETYPE, x.GETETAG, x.GETCONTENTLENGTH, x.GETLASTMODIFIED)
# A listing asks only for what the data can't tell: every property costs server time, and
# getcontentlength most (Radicale serialises each item for it: 0.39 s per 1,700 items against
# 0.26 without). Sizes come from the data, fetched with the listing (``Tree``), once the
# server's data answers have shown that they keep line ends (``Client.keeps_line_ends``).
LIST_PROPS = (x.RESOURCETYPE, x.GETETAG, x.GETLASTMODIFIED)
# A calendar listed cold with its data (``Client.list_whole``) takes etags from the data answer:
# the PROPFIND then asks only what that answer lacks (Radicale: 0.21 s per 1,700 items, against
# 0.32 with getetag, which it hashes each item's text for).
LITE_PROPS = (x.RESOURCETYPE, x.GETLASTMODIFIED)
DEFAULT_BATCH = 100

_SAFE = "/!$&'()*+,;=:@~"


# A listing with the data of its items (``Client.list_whole``).
Listing = tuple[dict[str, "ItemInfo"], list[tuple["ItemInfo", str, bytes]]]


# A path that canonical_href leaves as it is: no percent-escape to normalise, nothing quote()
# would escape, no "." or ".." segment for urljoin to resolve, no ";" it would take as params.
_PLAIN_PATH = re.compile(r"/(?!/)[A-Za-z0-9_.~!$&'()*+,=:@/-]*")  # "//" would start a host
# An absolute path that urljoin would leave as it is (no query, fragment, params or whitespace);
# its segments still need re-encoding (Radicale writes "@" as "%40").
_ABSOLUTE_PATH = re.compile(r"/(?!/)[^?#;\s]*")


def canonical_href(href: str, base: str) -> str:
    """One spelling per resource: absolute, percent-decoded then re-encoded uniformly.

    Each segment is decoded and encoded on its own, so an encoded ``/`` (``%2F``) stays
    inside its segment. Called once per item of every listing: a plain absolute path (most
    servers' hrefs) only gets the base's canonical origin put in front; another absolute path
    has only its last segment re-encoded anew (the folder's is remembered).
    """
    if "/." not in href:
        if _PLAIN_PATH.fullmatch(href):
            return _canonical_origin(base) + href
        if _ABSOLUTE_PATH.fullmatch(href):
            folder, _, last = href.rpartition("/")
            return _canonical_origin(base) + _canonical_folder(folder) + "/" + _canonical_segment(last)
    return _canonical(href, base)


def _canonical_segment(segment: str) -> str:
    return quote(unquote(segment, errors="surrogateescape"), safe=_SAFE[1:], errors="surrogateescape")


@functools.lru_cache(maxsize=256)
def _canonical_folder(path: str) -> str:
    return "/".join(_canonical_segment(seg) for seg in path.split("/"))


def _canonical(href: str, base: str) -> str:
    parts = urlsplit(urljoin(base, href.strip()))
    segments = [_canonical_segment(seg) for seg in parts.path.split("/")]
    path = "/".join(segments) or "/"
    scheme, host, port = origin(urlunsplit(parts))
    default = 443 if scheme == "https" else 80
    netloc = host if port == default else f"{host}:{port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def absolute_href(href: str, base: str) -> str:
    """``urljoin(base, href)``, quicker for an absolute path (most servers' hrefs)."""
    if "/." not in href and _ABSOLUTE_PATH.fullmatch(href):
        return _origin(base) + href
    return urljoin(base, href)


def _path(url: str) -> str:
    """``urlsplit(url).path``, quicker for a plain http(s) URL (no query, fragment or controls)."""
    if url.startswith(("http://", "https://")) and "?" not in url and "#" not in url and url.isprintable():
        start = url.find("/", url.find("//") + 2)
        if start >= 0:
            return url[start:]
    return urlsplit(url).path


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


@functools.lru_cache(maxsize=64)
def _canonical_origin(base: str) -> str:
    """``scheme://host[:port]`` of ``base`` as canonical_href spells it."""
    return _canonical("/", base)[:-1]


_QUERY = "REPORT calendar-query "  # how the logs and errors name the request


def last_segment(href: str) -> str:
    """The percent-decoded last path segment of an href (the name's source)."""
    path = _path(href).rstrip("/")
    return unquote(path.rsplit("/", 1)[-1], errors="surrogateescape")


def is_child(child: str, parent: str) -> bool:
    """True for a direct member: same origin, one more non-empty path segment."""
    parent = parent if parent.endswith("/") else parent + "/"
    if not child.startswith(parent):
        return False
    rest = child[len(parent):].rstrip("/")
    return bool(rest) and "/" not in rest and rest not in (".", "..", "%2E", "%2E%2E")


@dataclass(frozen=True)
class CalendarInfo:
    """A calendar collection as the home-set listing describes it."""

    url: str
    key: str
    displayname: str | None = None
    color: str | None = None
    ctag: str | None = None
    sync_token: str | None = None
    components: tuple[str, ...] = ()
    mtime_ns: int | None = None  # the collection's getlastmodified

    @property
    def change_tag(self) -> str | None:
        """What tells that anything in the calendar changed, if the server has it."""
        return self.ctag or self.sync_token


@dataclass(frozen=True)
class ItemInfo:
    """A calendar object resource as a Depth-1 listing describes it."""

    url: str
    key: str
    etag: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass
class SyncResult:
    """What changed in a calendar since a sync-token (RFC 6578)."""

    changed: dict[str, ItemInfo]
    removed: set[str]
    token: str


@dataclass
class WholeAnswer:
    """A cold calendar's answers (``Client.start_whole``): the calendar-query's answer, read while
    the PROPFIND was on its way, or why it failed; the PROPFIND's listing, without etags (None
    when the query failed)."""

    query: x.DataAnswer | bytes | CaldavfsError  # bytes: read where it is used (and refused there)
    listing: dict[str, ItemInfo] | None


class SyncTokenError(CaldavfsError):
    """The server no longer accepts the token (403/409/412 valid-sync-token): list in full."""


@dataclass(frozen=True)
class Discovery:
    home_url: str
    calendar_url: str | None = None  # set when the user's URL is itself one calendar


_MONTHS = {m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                         "Nov", "Dec"), 1)}
# RFC 9110's preferred form, which nearly every server sends: read without the email parser, which
# costs 10 us an item of every listing.
_IMF_FIXDATE = re.compile(r"\s*[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT\s*")


def parse_http_date(value: str | None) -> int | None:
    """getlastmodified -> ns since the epoch; also SOGo's "+0000" form. None when odd."""
    if not value:
        return None
    fixed = _IMF_FIXDATE.fullmatch(value)
    if fixed is not None and fixed.group(2) in _MONTHS:
        day, _, year, hour, minute, second = fixed.groups()
        try:
            when = datetime(int(year), _MONTHS[fixed.group(2)], int(day), int(hour), int(minute), int(second),
                            tzinfo=timezone.utc)
        except ValueError:
            return None
        return int(when.timestamp()) * 1_000_000_000
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        log.debug("unparseable getlastmodified %r", value)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return int(when.timestamp()) * 1_000_000_000
    except (OverflowError, OSError, ValueError):
        return None


_ICAL_STAMP = re.compile(rb"^(LAST-MODIFIED|DTSTAMP)(?:;[^:\r\n]*)?:(\d{8}T\d{6})Z?\s*$", re.M | re.I)


def data_mtime(data: bytes) -> int | None:
    """mtime from the item itself: the newest LAST-MODIFIED, else the newest DTSTAMP.

    For servers that send no getlastmodified (Xandikos); stable across remounts.
    """
    unfolded = re.sub(rb"\r?\n[ \t]", b"", data)
    found: dict[bytes, list[int]] = {b"LAST-MODIFIED": [], b"DTSTAMP": []}
    for match in _ICAL_STAMP.finditer(unfolded):
        try:
            when = datetime.strptime(match.group(2).decode(), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        found[match.group(1).upper()].append(int(when.timestamp()) * 1_000_000_000)
    stamps = found[b"LAST-MODIFIED"] or found[b"DTSTAMP"]
    return max(stamps) if stamps else None


def restore_bytes(text: str, expected_size: int | None, exact: bool = False) -> bytes | None:
    """The stored bytes of calendar-data, whose CRLFs an XML parser turns into LF unless they
    were kept (``exact``: ``davxml.iter_data_answer``).

    Most servers store CRLF; some (SabreDAV 1.8) keep bare LF as uploaded. Kept line ends, or
    else a known getcontentlength, tell which; without either, CRLF (RFC 5545's form). None
    when a known length matches no form.
    """
    if exact:
        data = text.encode("utf-8", "surrogateescape")
        if expected_size is None or len(data) == expected_size:
            return data
    lf = text.replace("\r\n", "\n").replace("\r", "\n")
    crlf = lf.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    if expected_size is None or len(crlf) == expected_size:
        return crlf
    plain = lf.encode("utf-8", "surrogateescape")
    if len(plain) == expected_size:
        return plain
    return None


def _calendar_info(url: str, response: x.DavResponse) -> CalendarInfo:
    url = url if url.endswith("/") else url + "/"
    return CalendarInfo(
        url=url,
        key=canonical_href(url, url),
        displayname=response.text(x.DISPLAYNAME) or None,
        color=response.text(x.CALENDAR_COLOR) or None,
        ctag=response.text(x.GETCTAG) or None,
        sync_token=response.text(x.SYNC_TOKEN) or None,
        components=response.hrefs(x.SUPPORTED_COMPONENTS),
        mtime_ns=parse_http_date(response.text(x.GETLASTMODIFIED)),
    )


def _item_info(url: str, key: str, response: x.DavResponse, lite: bool = False) -> ItemInfo | None:
    """An item's etag, length and mtime from its properties; None without an etag, unless
    ``lite`` (a listing that did not ask for it)."""
    etag = response.text(x.GETETAG) or ""
    if not etag and not lite:
        return None
    size_text = response.text(x.GETCONTENTLENGTH)
    return ItemInfo(url=url, key=key, etag=etag,
                    size=int(size_text) if size_text and size_text.isdigit() else None,
                    mtime_ns=parse_http_date(response.text(x.GETLASTMODIFIED)))


def _is_icalendar(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")[:15].upper() == b"BEGIN:VCALENDAR"


class Client:
    """CalDAV operations on one account, over a ``DavSession``."""

    def __init__(self, session: DavSession, batch: int = DEFAULT_BATCH) -> None:
        self.session = session
        self.batch = batch
        self._calendar_props: tuple[str, ...] = CALENDAR_PROPS
        self._no_query: set[str] = set()  # calendars whose server failed a calendar-query
        self._pool: ThreadPoolExecutor | None = None  # start_whole's threads
        self._pool_lock = threading.Lock()
        # Whether the server's calendar-data shows CRs (Radicale, Xandikos): then the bytes are
        # known without getcontentlength. None until a data answer came; until one showed CRs,
        # listings ask for the length, which tells CRLF from LF (SabreDAV 1.8 sends LF whatever
        # it stores).
        self.keeps_line_ends: bool | None = None

    # --- discovery --------------------------------------------------------------------

    def discover(self, url: str) -> Discovery:
        """Find the calendar home for ``url``: a server root, principal, home-set or calendar."""
        self.session.trust(url)
        parts = urlsplit(url)
        well_known = urlunsplit((parts.scheme, parts.netloc, "/.well-known/caldav", "", ""))
        candidates = [well_known, url] if parts.path in ("", "/") else [url, well_known]
        problems: list[str] = []
        for candidate in candidates:
            try:
                found = self._discover_from(candidate)
            except NotFoundError as exc:
                if candidate == url and parts.path not in ("", "/"):
                    # A mistyped calendar URL must not quietly mount the whole account.
                    raise NotCalDAVError(f"{url} does not exist on the server (HTTP 404)") from exc
                problems.append(str(exc))
                continue
            except (MethodNotAllowedError, InvalidResponseError) as exc:
                problems.append(str(exc))
                continue
            except DavError as exc:
                if isinstance(exc, UnauthorizedError):
                    raise
                problems.append(str(exc))
                continue
            if found is not None:
                log.info("calendar home: %s", found.home_url)
                return found
        detail = "; ".join(problems[-2:])
        raise NotCalDAVError(f"no CalDAV calendar home found at {url}" + (f" ({detail})" if detail else ""))

    def _propfind_one(self, url: str, props: Sequence[str]) -> x.DavResponse | None:
        answer = self.propfind(url, props, depth="0")
        for response in answer.responses:
            if response.status in (404, 410):
                # Xandikos answers a PROPFIND on a missing URL with 207 and an inner 404.
                raise NotFoundError(f"PROPFIND {url}: 404 inside 207", status=404, url=url)
            return response
        return None

    def _discover_from(self, url: str) -> Discovery | None:
        first = self._propfind_one(url, (x.RESOURCETYPE, x.CURRENT_USER_PRINCIPAL, x.CALENDAR_HOME_SET))
        if first is None:
            return None
        base = urljoin(url, first.href)
        if x.CALENDAR in first.markers():
            parent = urljoin(base.rstrip("/") + "/", "..")
            return Discovery(home_url=parent, calendar_url=base if base.endswith("/") else base + "/")
        homes = first.hrefs(x.CALENDAR_HOME_SET)
        if not homes:
            for principal in first.hrefs(x.CURRENT_USER_PRINCIPAL):
                principal_url = urljoin(base, principal)
                found = self._propfind_one(principal_url, (x.CALENDAR_HOME_SET,))
                if found is not None and found.hrefs(x.CALENDAR_HOME_SET):
                    homes = tuple(urljoin(principal_url, h) for h in found.hrefs(x.CALENDAR_HOME_SET))
                    base = principal_url
                    break
        if homes:
            home = urljoin(base, homes[0])
            # The server named this home (iCloud puts it on a pNN-caldav host): credentials may go
            # there, but never from https down to plain http.
            if not (urlsplit(url).scheme == "https" and urlsplit(home).scheme != "https"):
                self.session.trust(home)
            return Discovery(home_url=home if home.endswith("/") else home + "/")
        # No principal: a plain collection may still be a home if calendars live in it.
        if x.COLLECTION in first.markers() and self.list_calendars(base):
            return Discovery(home_url=base if base.endswith("/") else base + "/")
        return None

    # --- listings -----------------------------------------------------------------------

    def propfind(self, url: str, props: Sequence[str], depth: str) -> x.Multistatus:
        response = self.session.request("PROPFIND", url, body=x.propfind(props), depth=depth, ok=(207,))
        return x.parse_multistatus(response.body, f"PROPFIND {url}")

    def calendar_info(self, url: str) -> CalendarInfo | None:
        """One calendar's properties (PROPFIND Depth 0), for a mount of a single calendar."""
        found = self._propfind_one(url, CALENDAR_PROPS)
        if found is None or x.CALENDAR not in found.markers():
            return None
        return _calendar_info(url, found)

    def list_calendars(self, home_url: str) -> list[CalendarInfo]:
        """Calendars in the home-set, from one PROPFIND Depth 1 (with their change tags).

        The first answer tells which change tag the server has; later ones ask for that one
        only (each costs: on Radicale getctag and sync-token together take twice as long).
        """
        answer = self.propfind(home_url, self._calendar_props, depth="1")
        home_key = canonical_href(home_url, home_url)
        seen: set[str] = set()
        calendars: list[CalendarInfo] = []
        for response in answer.responses:
            url = urljoin(home_url, response.href)
            key = canonical_href(url, home_url)
            if not key.endswith("/"):
                key += "/"
            if key == home_key and response.status == 507:
                raise InvalidResponseError(f"PROPFIND {home_url}: the server truncated the listing (507)")
            if key == home_key or key in seen or response.status not in (None, 200):
                continue
            # Decide by the calendar marker alone: SOGo marks its personal calendar as
            # calendar and schedule-outbox at once.
            if x.CALENDAR not in response.markers():
                continue
            if not is_child(key, home_key):
                log.warning("%s: calendar %s is outside the home-set, skipped", home_url, response.href)
                continue
            seen.add(key)
            calendars.append(_calendar_info(url, response))
        if self._calendar_props is CALENDAR_PROPS and calendars:
            if all(c.ctag for c in calendars):
                self._calendar_props = tuple(p for p in CALENDAR_PROPS if p != x.SYNC_TOKEN)
            elif all(c.sync_token and not c.ctag for c in calendars):
                self._calendar_props = tuple(p for p in CALENDAR_PROPS if p != x.GETCTAG)
        return calendars

    def _list_props(self) -> tuple[str, ...]:
        return LIST_PROPS if self.keeps_line_ends else (*LIST_PROPS, x.GETCONTENTLENGTH)

    def list_items(self, calendar_url: str, *, lite: bool = False, answered: Callable[[], None] | None = None
                   ) -> dict[str, ItemInfo]:
        """Members of a calendar by canonical href, from one PROPFIND Depth 1. ``lite``: without
        etags (``ItemInfo.etag`` ""), for ``list_whole``, which takes them from the data.
        ``answered`` is called once the answer is in, before it is read."""
        props = LITE_PROPS if lite else self._list_props()
        answer = self.session.request("PROPFIND", calendar_url, body=x.propfind(props), depth="1", ok=(207,))
        if answered is not None:
            answered()
        cal_key = canonical_href(calendar_url, calendar_url)
        items: dict[str, ItemInfo] = {}
        for response in x.iter_multistatus(answer.body, f"PROPFIND {calendar_url}"):
            url = absolute_href(response.href, calendar_url)
            key = canonical_href(response.href if response.href.startswith("/") else url, calendar_url)
            if key.rstrip("/") == cal_key.rstrip("/"):
                if response.status in (404, 410):
                    raise NotFoundError(f"PROPFIND {calendar_url}: calendar is gone", status=404)
                if response.status == 507:
                    # A truncated listing (RFC 4918 / 6578): what it leaves out is not deleted.
                    raise InvalidResponseError(f"PROPFIND {calendar_url}: the server truncated the listing (507)")
                continue  # the collection itself (iCloud lists it among the items)
            if x.COLLECTION in response.markers() or response.status not in (None, 200):
                continue
            if not is_child(key, cal_key):
                log.warning("%s: item %r is outside the calendar, skipped", calendar_url, response.href)
                continue
            if key in items:
                log.warning("%s: duplicate href %r in one answer, kept the first", calendar_url, response.href)
                continue
            info = _item_info(url, key, response, lite)
            if info is None:
                log.warning("%s: item %r has no etag, skipped", calendar_url, response.href)
                continue
            items[key] = info
        return items

    def sync_items(self, calendar_url: str, token: str) -> SyncResult:
        """Changes since ``token`` ("" for everything) by sync-collection, following a 507
        (a truncated answer) with the token it gave until the server has said everything."""
        cal_key = canonical_href(calendar_url, calendar_url).rstrip("/")
        changed: dict[str, ItemInfo] = {}
        removed: set[str] = set()
        for _ in range(1000):  # a bound, in case a server keeps answering 507
            try:
                response = self.session.request(
                    "REPORT", calendar_url, body=x.sync_collection(token, self._list_props()[1:]), depth="0", ok=(207,))
            except DavError as exc:
                if exc.precondition == "valid-sync-token" or (token and exc.status in (403, 409, 412)):
                    # Radicale 403, Xandikos 412: the token is too old; DAViCal lists all instead.
                    raise SyncTokenError(f"{calendar_url}: sync-token refused ({exc})") from exc
                raise
            answer = x.parse_multistatus(response.body, f"REPORT sync-collection {calendar_url}")
            truncated = False
            for entry in answer.responses:
                url = absolute_href(entry.href, calendar_url)
                key = canonical_href(entry.href if entry.href.startswith("/") else url, calendar_url)
                if key.rstrip("/") == cal_key:
                    truncated = truncated or entry.status == 507
                    continue
                if not is_child(key, cal_key):
                    log.warning("%s: item %r is outside the calendar, skipped", calendar_url, entry.href)
                    continue
                if entry.status in (404, 410):
                    removed.add(key)
                    changed.pop(key, None)
                    continue
                info = _item_info(url, key, entry)
                if x.COLLECTION in entry.markers() or info is None:
                    continue
                changed[key] = info
                removed.discard(key)
            if not answer.sync_token:
                raise InvalidResponseError(f"{calendar_url}: sync-collection answer without a sync-token")
            token = answer.sync_token
            if not truncated:
                return SyncResult(changed, removed, token)
        raise InvalidResponseError(f"{calendar_url}: sync-collection never finished")

    # --- calendar data ------------------------------------------------------------------

    def fetch(self, calendar_url: str, items: Sequence[ItemInfo],
              batch: int | None = None) -> Iterator[tuple[ItemInfo, str, bytes]]:
        """Exact bytes of ``items`` by calendar-multiget in batches (of ``batch``, default the
        client's).

        Yields (item as asked, etag the server sent, bytes). A batch that times out, fails
        with 5xx or comes back short is asked again in smaller pieces; an href the server
        leaves out is asked again, never taken as deleted. Items the server says are gone
        are simply not yielded.
        """
        pending = list(items)
        size = max(1, batch or self.batch)
        timeouts = 0
        while pending:
            chunk, pending = pending[:size], pending[size:]
            try:
                got, missing = self._multiget(calendar_url, chunk)
            except NotFoundError as exc:
                # SabreDAV answers a whole multiget with 404 when one of its items is gone.
                if len(chunk) == 1:
                    log.info("%s is gone from the server", chunk[0].url)
                    continue
                size = max(1, len(chunk) // 2)
                log.info("multiget of %d items: %s; retrying %d at a time", len(chunk), exc, size)
                pending = chunk + pending
                continue
            except (TransportError, ServerError, InsufficientStorageError, InvalidResponseError) as exc:
                # A 507 on a REPORT means the server would not answer this many at once. A timeout
                # may mean the same, once; twice means the server is away: say so, don't wait on.
                if isinstance(exc, TransportError):
                    timeouts += 1
                if len(chunk) == 1 or timeouts > 1:
                    raise
                size = max(1, len(chunk) // 2)
                log.info("multiget of %d items failed (%s); retrying %d at a time", len(chunk), exc, size)
                pending = chunk + pending
                continue
            yield from got
            if missing:
                if len(chunk) == 1:
                    log.warning("%s: server left %s out of its answer", calendar_url, chunk[0].url)
                    continue
                # A short answer (Zoho stops at 100 without saying so): ask again, as many as it gave.
                size = max(1, len(got))
                pending = missing + pending

    def start_whole(self, calendar_url: str, answered: Callable[[], None] | None = None
                    ) -> Future[WholeAnswer] | None:
        """Send a cold calendar's requests for ``list_whole`` now, on a thread of the client's
        pool: the calendar-query, then once it is answered a PROPFIND for the server's mtimes
        alone. In that order an item changed between the two shows its old bytes with its new
        mtime, which its next listing moves on (``Item.settle``), never its new bytes with the old
        mtime, which a backup of the old bytes would take for unchanged. ``answered`` is called
        once both answers are in. None for a calendar whose server failed a query."""
        if calendar_url in self._no_query:
            return None
        with self._pool_lock:
            if self._pool is None:  # made on first use: the mount forks after the client exists
                # A calendar's requests, and those of the next ones a walk sends ahead (``Tree``).
                self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="caldavfs-query")
            return self._pool.submit(self._whole, calendar_url, answered)

    def _whole(self, calendar_url: str, answered: Callable[[], None] | None) -> WholeAnswer:
        try:
            body = self._query(calendar_url)
        except (DavError, InvalidResponseError, TransportError) as exc:
            return WholeAnswer(exc, None)  # list_whole lists in full
        # The PROPFIND goes out on its own thread, and the query's answer is read here while the
        # server works on it (Radicale: 0.15 s per 1,700 items; reading the answer: 0.05 s).
        listing: Future[dict[str, ItemInfo]] = Future()

        def propfind() -> None:
            try:
                listing.set_result(self.list_items(calendar_url, lite=True, answered=answered))
            except BaseException as exc:  # handed to the thread that waits for it
                listing.set_exception(exc)

        threading.Thread(target=propfind, name="caldavfs-query-propfind", daemon=True).start()
        query: x.DataAnswer | bytes
        try:
            query = x.iter_data_answer(body, _QUERY + calendar_url)
        except InvalidResponseError:
            query = body  # fetch_all refuses it again, and fetches the data another way
        return WholeAnswer(query, listing.result())

    def list_whole(self, calendar_url: str, started: Future[WholeAnswer]) -> Listing:
        """A calendar listed cold, with its data, from the answers ``start_whole`` asked for: etags,
        sizes and bytes from the calendar-query, mtimes from the PROPFIND. Returns the listing and
        the data of its items.

        Items the query and the multigets behind it leave out were deleted meanwhile and are
        not listed. A query that got no answer fails the listing (the server is away). Where the
        query was refused, its data's line ends can't tell sizes (no CR shown yet: SabreDAV 1.8),
        or it came without etags, the calendar is listed again in full (with getcontentlength
        where needed) and what data can be is matched to that listing.
        """
        answer = started.result()
        if isinstance(answer.query, CaldavfsError) or answer.listing is None:
            if isinstance(answer.query, CaldavfsError):
                self._query_failed(calendar_url, answer.query)
                if isinstance(answer.query, TransportError):
                    raise answer.query  # the server is away: a PROPFIND now would wait as long again
            return self.list_items(calendar_url), []
        lite = answer.listing
        got: list[tuple[ItemInfo, str, bytes]] = []
        for info, etag, data in self.fetch_all(calendar_url, list(lite.values()), answer.query):
            got.append((ItemInfo(url=info.url, key=info.key, etag=etag, size=len(data), mtime_ns=info.mtime_ns),
                        etag, data))
        if len(got) < len(lite):
            log.info("%s: %d listed items came with no data; taken as deleted meanwhile", calendar_url,
                     len(lite) - len(got))
        if self.keeps_line_ends and all(etag for _, etag, _ in got):
            return {info.key: info for info, _, _ in got}, got
        log.info("%s: the data answer can't tell sizes or etags; listing it in full", calendar_url)
        infos = self.list_items(calendar_url)
        matched: list[tuple[ItemInfo, str, bytes]] = []
        for info, etag, data in got:
            full = infos.get(info.key)
            if full is None or not etag or full.etag != etag:
                continue  # gone, changed, or without etag: fetched again for the new listing
            # Unless the line ends were kept, the data was taken for CRLF: the length tells.
            exact = data if self.keeps_line_ends else restore_bytes(data.decode("utf-8", "surrogateescape"), full.size)
            if exact is not None:
                matched.append((full, etag, exact))
        return infos, matched

    def _query(self, calendar_url: str) -> bytes:
        return self.session.request("REPORT", calendar_url, body=x.calendar_query(), depth="1", ok=(207,)).body

    def fetch_all(self, calendar_url: str, items: Sequence[ItemInfo], answer: x.DataAnswer | bytes | CaldavfsError
                  | None = None) -> Iterator[tuple[ItemInfo, str, bytes]]:
        """Exact bytes of ``items``, most of a calendar: all of it in one calendar-query REPORT
        (Radicale: 0.26 s for 1,700 items, against 0.38 s in multigets of 100 to 400; its
        ``answer`` already, if given: read or not, or why it failed), then by multiget what that
        answer left out. Yields as ``fetch`` does. A calendar whose server refuses or fails the
        query is fetched by multiget alone, from then on; one that failed for a passing reason
        (401, a 5xx but 501) tries again next time."""
        pending: Sequence[ItemInfo] = items
        if answer is not None or calendar_url not in self._no_query:
            try:
                if isinstance(answer, CaldavfsError):
                    raise answer
                body = answer if answer is not None else self._query(calendar_url)
            except (DavError, InvalidResponseError, TransportError) as exc:
                self._query_failed(calendar_url, exc)
            else:
                try:
                    read = body if isinstance(body, x.DataAnswer) else x.iter_data_answer(body, _QUERY + calendar_url)
                    got, pending = self._take(calendar_url, read, items)
                except InvalidResponseError as exc:  # found bad while it was read
                    self._query_failed(calendar_url, exc)
                    got = []
                yield from got
        if pending:
            yield from self.fetch(calendar_url, pending)

    def _query_failed(self, calendar_url: str, exc: CaldavfsError) -> None:
        """Multigets instead, from now on; or, for a passing reason (401, a 5xx but 501), this time."""
        if isinstance(exc, NotFoundError):
            raise exc
        log.info("%s%s: %s; fetching by calendar-multiget instead", _QUERY, calendar_url, exc)
        passing = isinstance(exc, UnauthorizedError) or (isinstance(exc, ServerError) and exc.status != 501)
        if not passing:
            self._no_query.add(calendar_url)

    def _multiget(
        self, calendar_url: str, chunk: Sequence[ItemInfo]
    ) -> tuple[list[tuple[ItemInfo, str, bytes]], list[ItemInfo]]:
        body = x.calendar_multiget(urlsplit(item.url).path for item in chunk)
        response = self.session.request("REPORT", calendar_url, body=body, depth="1", ok=(207,))
        return self._take(calendar_url, x.iter_data_answer(response.body, f"REPORT {calendar_url}"), chunk)

    def _take(
        self, calendar_url: str, answer: x.DataAnswer, asked: Sequence[ItemInfo]
    ) -> tuple[list[tuple[ItemInfo, str, bytes]], list[ItemInfo]]:
        """The data an answer holds for ``asked``, and the items it left out."""
        shown_cr = False
        by_key = {item.key: item for item in asked}
        paths = {_path(item.url): item.key for item in asked}
        got: list[tuple[ItemInfo, str, bytes]] = []
        # Items without a CR, in the first answer that may show whether the server keeps CRs:
        # LF as stored if another item shows one, else decided by length (or CRLF, RFC 5545's).
        undecided: list[tuple[ItemInfo, str, int | None, str]] = []
        for entry in answer.responses:
            # Servers mostly answer with the spelling they listed; normalise only when not.
            key = paths.get(entry.href) or canonical_href(urljoin(calendar_url, entry.href), calendar_url)
            item = by_key.pop(key, None)
            if item is None:
                continue  # not asked for, or a duplicate
            if entry.status in (404, 410):
                log.info("%s is gone from the server", item.url)
                continue
            text = entry.text(x.CALENDAR_DATA)
            etag = entry.text(x.GETETAG) or item.etag
            size = item.size if etag == item.etag else None
            if text is not None and answer.line_ends == x.KEPT:
                if "\r" in text:
                    shown_cr = True
                elif self.keeps_line_ends is None:
                    undecided.append((item, etag, size, text))
                    continue
            self._keep_one(got, item, etag, restore_bytes(text, size, self._exact(answer, text)) if text else None)
        for item, etag, size, text in undecided:
            self._keep_one(got, item, etag, restore_bytes(text, size, exact=shown_cr))
        if shown_cr and not self.keeps_line_ends:
            log.debug("%s: the server's calendar-data keeps its line ends", calendar_url)
            self.keeps_line_ends = True
        elif got and self.keeps_line_ends is None and answer.line_ends != x.UNKNOWN:
            self.keeps_line_ends = False  # no CR in any calendar-data: until an answer shows some
        return got, list(by_key.values())

    def _keep_one(self, got: list[tuple[ItemInfo, str, bytes]], item: ItemInfo, etag: str, data: bytes | None) -> None:
        if data is None or not _is_icalendar(data):
            # Neither CRLF nor LF gives the listed length, or no calendar-data came back
            # (Xandikos answers 404 for it on items stored without .ics): GET decides.
            data, get_etag = self.get(item.url)
            etag = get_etag or etag
        if not _is_icalendar(data):
            log.warning("%s: the server's data is not iCalendar (%r...), item skipped", item.url, data[:40])
            return
        got.append((item, etag, data))

    def _exact(self, answer: x.DataAnswer, text: str) -> bool:
        """Whether ``text``, calendar-data of ``answer``, is the server's bytes as it is. A CR in it
        was kept (KEPT); one without any CR is LF as stored on a server known to keep CRs, but
        may be SabreDAV 1.8's, which drops them, until one has shown them."""
        if answer.line_ends == x.UNKNOWN:
            return False
        return "\r" in text or self.keeps_line_ends is True

    def get(self, url: str) -> tuple[bytes, str]:
        response = self.session.request("GET", url, ok=(200,))
        return response.body, response.headers.get("ETag", "")

    # --- writes -------------------------------------------------------------------------

    def item_info(self, url: str) -> ItemInfo | None:
        """One item's etag, length and mtime (PROPFIND Depth 0); None when it is gone."""
        try:
            found = self._propfind_one(url, ITEM_PROPS)
        except NotFoundError:
            return None
        return _item_info(url, canonical_href(url, url), found) if found is not None else None

    def put(self, url: str, data: bytes, *, etag: str | None) -> str | None:
        """Upload an item: If-Match its etag to replace, If-None-Match: * to create.

        Returns the ETag header, which servers that rewrote the data may leave out.
        """
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if etag:
            headers["If-Match"] = etag
        else:
            headers["If-None-Match"] = "*"
        response = self.session.request("PUT", url, body=data, headers=headers, ok=(200, 201, 204))
        return response.headers.get("ETag") or None

    def delete(self, url: str, *, etag: str | None = None) -> None:
        headers = {"If-Match": etag} if etag else {}
        try:
            # Radicale answers 200 with a body; the others 204.
            self.session.request("DELETE", url, headers=headers, ok=(200, 204))
        except NotFoundError:
            if etag:
                raise
            # Cyrus answers 404 to a calendar DELETE that worked.

    def move(self, src: str, dst: str, *, etag: str | None) -> None:
        headers = {"Destination": dst, "Overwrite": "F"}
        if etag:
            headers["If-Match"] = etag
        self.session.request("MOVE", src, headers=headers, ok=(201, 204))

    def mkcalendar(self, url: str, displayname: str | None = None) -> None:
        body = x.mkcalendar(displayname)
        self.session.request("MKCALENDAR", url, body=body, ok=(200, 201))

    def set_calendar_properties(self, url: str, *, displayname: str | None = None,
                                color: str | None = None) -> None:
        """Change a calendar's displayname and/or Apple calendar-color (PROPPATCH)."""
        props: dict[str, str | None] = {}
        if displayname is not None:
            props[x.DISPLAYNAME] = displayname
        if color is not None:
            props[x.CALENDAR_COLOR] = color
        self.proppatch(url, props)

    def proppatch(self, url: str, props: dict[str, str | None]) -> None:
        response = self.session.request("PROPPATCH", url, body=x.proppatch(props), ok=(200, 207))
        if response.status == 207:
            for entry in x.parse_proppatch_failures(response.body, f"PROPPATCH {url}"):
                raise DavError(f"PROPPATCH {url}: the server refused {entry}", status=403, url=url)

