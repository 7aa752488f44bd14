"""Real CalDAV servers on 127.0.0.1 for tests and benchmarks, and plain-`requests` seeding helpers.

No pytest here (scripts/bench reuses it) and no caldavfs import: what this module writes and reads with
plain HTTP is the truth a mount is compared with.

Facts probed with Radicale 3.9.0 and Xandikos 0.4.10 (see tests/data/README.md for the recorded answers):

- Radicale: principal and calendar-home-set are both /alice/. Basic auth (htpasswd, plain) is required;
  without credentials it answers 401 after a random 0.5-1.5 s delay, so every request sends Basic
  credentials up front (`requests` does so when given `auth=(user, pw)`).
- Xandikos: no auth (credentials are ignored). Started with `--autocreate --current-user-principal /alice/`
  the principal is /alice/ and the calendar-home-set /alice/calendars/ (empty; `--defaults` would add a
  calendar "calendar", an address book and /alice/inbox, /alice/outbox). It answers 415 to a body
  without an XML Content-Type, so every XML request says `Content-Type: application/xml`.
- Item names: both servers accept names with space, `%`, `@`, `+`, non-ASCII and without `.ics`, sent
  fully percent-encoded (`quote(name, safe="")`), and also a bare `@`/`+` or lower-case hex in the request
  URL. Both refuse `%2F` in a name (403). Hrefs come back encoded differently: Radicale sends `@` as
  `%40`; Xandikos leaves `@` bare. Both send `+` as `%2B`, space as `%20`, `%` as `%25` and UTF-8 bytes as
  upper-case hex. Compare hrefs after `unquote`.
- Neither stores the PUT bytes verbatim: both re-serialise (Radicale with vobject, Xandikos with
  icalendar), reordering properties and refolding lines; a bare-LF upload is served with CRLF. So the
  truth is always the GET body (SeededItem.body), never what was sent.
- SabreDAV 1.8.12 (Debian's php-sabre-dav; tests/sabredav/server.php under `php -S`, one process, SQLite):
  principal /principals/alice/, home /calendars/alice/ (which also lists outbox/), Basic auth. It stores the
  PUT bytes verbatim (LF stays LF), spells hrefs with lower-case hex (`a%2bb.ics`, `%40`), has no
  sync-collection (403) and answers a whole calendar-multiget 404 when one href is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import requests
from lxml import etree

NS_DAV = "DAV:"
NS_CALDAV = "urn:ietf:params:xml:ns:caldav"
NS_CS = "http://calendarserver.org/ns/"
NS_APPLE = "http://apple.com/ns/ical/"
XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}
HTTP_TIMEOUT = 10.0
START_TIMEOUT = 20.0


def free_port() -> int:
    """A port that was free a moment ago (racy by nature, good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    kind: str  # "radicale" | "xandikos" | "sabredav"
    base_url: str  # "http://127.0.0.1:PORT/"
    username: str
    password: str
    home_url: str  # calendar-home-set, absolute
    principal_url: str  # absolute
    storage: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    # What standard_dataset created, when it ran: {calendar name: SeededCalendar}.
    dataset: dict[str, SeededCalendar] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Pre-emptive Basic auth: Radicale stalls about a second before each 401 challenge.
        self.session.auth = (self.username, self.password)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    @property
    def port(self) -> int:
        return int(urlsplit(self.base_url).port or 0)

    def url(self, path: str) -> str:
        """Absolute URL for a server path or href ("/alice/work/"), or an absolute URL unchanged."""
        return urljoin(self.base_url, path)

    def request(self, method: str, url: str, **kw: object) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.url(url), **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate our own child by PID; kill it if it does not exit in time."""
        self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def _wait_until_up(server: Server, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: str = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            r = server.request("PROPFIND", "/", headers={"Depth": "0", **XML_HEADERS}, data=_PROPFIND_CUP,
                               timeout=1.0)
            if r.status_code == 207:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.05)
    rc = server.proc.poll()
    server.stop()
    raise RuntimeError(f"{what} did not come up on {server.base_url} (exit code {rc}, last: {last});"
                       f" log {server.log_path}:\n{server.log()}")


def _spawn(argv: list[str], log_path: Path, cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed here after the fork
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    finally:
        log.close()


def radicale_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "radicale", "--config", str(config)]


def start_radicale(tmpdir: str | os.PathLike[str], username: str = "alice",
                   password: str = "secret-pw") -> Server:
    root = Path(tmpdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    users = root / "users"
    users.write_text(f"{username}:{password}\n")
    storage = root / "collections"
    config = root / "radicale.conf"
    # owner_only: alice may create and change anything under /alice/. web = none: no HTML UI at /.
    config.write_text(f"""\
[server]
hosts = 127.0.0.1:{port}
[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
[rights]
type = owner_only
[storage]
filesystem_folder = {storage}
[web]
type = none
[logging]
level = info
""")
    log_path = root / "radicale.log"
    proc = _spawn(radicale_argv(config), log_path, root)
    base = f"http://127.0.0.1:{port}/"
    server = Server("radicale", base, username, password, home_url=f"{base}{username}/",
                    principal_url=f"{base}{username}/", storage=storage, proc=proc, log_path=log_path)
    _wait_until_up(server, "radicale")
    # Radicale creates the principal collection /alice/ on the first authenticated PROPFIND of it.
    server.request("PROPFIND", server.principal_url, headers={"Depth": "0", **XML_HEADERS},
                   data=_PROPFIND_CUP).raise_for_status()
    return server


def xandikos_argv(storage: Path, port: int, username: str) -> list[str]:
    return [sys.executable, "-m", "xandikos.web", "--directory", str(storage), "--autocreate",
            "--current-user-principal", f"/{username}/", "--listen-address", "127.0.0.1",
            "--port", str(port), "--no-detect-systemd", "--state-dir", str(storage.parent / "xandikos-state")]


def start_xandikos(tmpdir: str | os.PathLike[str], username: str = "alice",
                   password: str = "ignored") -> Server:
    root = Path(tmpdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = root / "xandikos"
    log_path = root / "xandikos.log"
    proc = _spawn(xandikos_argv(storage, port, username), log_path, root)
    base = f"http://127.0.0.1:{port}/"
    server = Server("xandikos", base, username, password, home_url=f"{base}{username}/calendars/",
                    principal_url=f"{base}{username}/", storage=storage, proc=proc, log_path=log_path)
    _wait_until_up(server, "xandikos")
    return server


SABREDAV_SCRIPT = Path(__file__).resolve().parent / "sabredav" / "server.php"


def sabredav_argv(port: int) -> list[str]:
    # PHP's built-in server, one process, every request routed to the script (Debian's php-sabre-dav 1.8).
    return ["php", "-S", f"127.0.0.1:{port}", str(SABREDAV_SCRIPT)]


def start_sabredav(tmpdir: str | os.PathLike[str], username: str = "alice",
                   password: str = "secret-pw") -> Server:
    root = Path(tmpdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = root / "sabredav"  # db.sqlite, created by server.php on the first request
    log_path = root / "sabredav.log"
    env = {"SABREDAV_DATA": str(storage), "SABREDAV_USER": username, "SABREDAV_PASSWORD": password}
    proc = _spawn(sabredav_argv(port), log_path, root, env)
    base = f"http://127.0.0.1:{port}/"
    server = Server("sabredav", base, username, password, home_url=f"{base}calendars/{username}/",
                    principal_url=f"{base}principals/{username}/", storage=storage, proc=proc,
                    log_path=log_path)
    _wait_until_up(server, "sabredav")
    return server


def start(kind: str, tmpdir: str | os.PathLike[str]) -> Server:
    if kind == "radicale":
        return start_radicale(tmpdir)
    if kind == "xandikos":
        return start_xandikos(tmpdir)
    if kind == "sabredav":
        return start_sabredav(tmpdir)
    raise ValueError(f"unknown server kind {kind!r}")


# --- seeding with plain requests -------------------------------------------------------------------

_PROPFIND_CUP = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                 b'<D:propfind xmlns:D="DAV:"><D:prop><D:current-user-principal/></D:prop></D:propfind>')

_PROPFIND_ETAGS = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                   b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>')


def _check(r: requests.Response, *ok: int) -> requests.Response:
    if r.status_code not in ok:
        raise RuntimeError(f"{r.request.method} {r.url} -> {r.status_code}: {r.text[:500]}")
    return r


def item_url(cal_url: str, name: str) -> str:
    """URL of `name` inside a calendar: the name fully percent-encoded (`@`, `+`, `%`, space, UTF-8)."""
    return cal_url.rstrip("/") + "/" + quote(name, safe="")


def mkcalendar(server: Server, name: str, displayname: str | None = None, color: str | None = None,
               components: Sequence[str] = ("VEVENT", "VTODO")) -> str:
    """MKCALENDAR `name` in the home-set; returns the calendar URL (with trailing slash)."""
    url = server.home_url.rstrip("/") + "/" + quote(name, safe="") + "/"
    props = []
    if displayname is not None:
        props.append(f"<D:displayname>{escape(displayname)}</D:displayname>")
    if color is not None:
        props.append(f"<A:calendar-color>{escape(color)}</A:calendar-color>")
    if components:
        comps = "".join(f'<C:comp name="{escape(c)}"/>' for c in components)
        props.append(f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>")
    body = ('<?xml version="1.0" encoding="utf-8"?>\n'
            f'<C:mkcalendar xmlns:D="{NS_DAV}" xmlns:C="{NS_CALDAV}" xmlns:A="{NS_APPLE}">'
            f"<D:set><D:prop>{''.join(props)}</D:prop></D:set></C:mkcalendar>")
    _check(server.request("MKCALENDAR", url, data=body.encode(), headers=XML_HEADERS), 201)
    return url


def put_item(server: Server, cal_url: str, name: str, ics: bytes, etag: str | None = None) -> str:
    """PUT an item (If-None-Match: * when new, If-Match when `etag`); returns the etag the server holds."""
    url = item_url(cal_url, name)
    headers = {"Content-Type": "text/calendar; charset=utf-8"}
    if etag is None:
        headers["If-None-Match"] = "*"
    else:
        headers["If-Match"] = etag
    r = _check(server.request("PUT", url, data=ics, headers=headers), 201, 204)
    got = r.headers.get("ETag")
    if got:
        return got
    # Not every server sends an ETag on PUT (SabreDAV 4 when it altered the data): ask for it.
    return _check(server.request("HEAD", url), 200).headers["ETag"]


def delete_item(server: Server, url: str, etag: str | None = None) -> None:
    headers = {"If-Match": etag} if etag else {}
    _check(server.request("DELETE", url, headers=headers), 200, 204)


def get_item(server: Server, url: str) -> bytes:
    """The item's bytes as a plain GET serves them: the reference a mount is compared with."""
    r = _check(server.request("GET", url, headers={"Accept-Encoding": "identity"}), 200)
    return r.content


def list_hrefs(server: Server, cal_url: str) -> dict[str, str]:
    """PROPFIND Depth 1 on a collection: {member href as the server spells it: etag} (collection excluded)."""
    r = _check(server.request("PROPFIND", cal_url, data=_PROPFIND_ETAGS,
                              headers={"Depth": "1", **XML_HEADERS}), 207)
    root = etree.fromstring(r.content, etree.XMLParser(resolve_entities=False, no_network=True))
    self_path = unquote(urlsplit(server.url(cal_url)).path).rstrip("/")
    out: dict[str, str] = {}
    for resp in root.iterfind(f"{{{NS_DAV}}}response"):
        href = resp.findtext(f"{{{NS_DAV}}}href") or ""
        if unquote(urlsplit(href).path).rstrip("/") == self_path:
            continue
        etag = ""
        for ps in resp.iterfind(f"{{{NS_DAV}}}propstat"):
            if " 200 " in (ps.findtext(f"{{{NS_DAV}}}status") or ""):
                etag = ps.findtext(f"{{{NS_DAV}}}prop/{{{NS_DAV}}}getetag") or etag
        out[href] = etag
    return out


# --- iCalendar samples -------------------------------------------------------------------------------

DTSTAMP = "20260101T000000Z"  # fixed, so bodies are reproducible


def fold(line: str, limit: int = 75) -> list[str]:
    """RFC 5545 folding: at most `limit` octets per physical line, never splitting a UTF-8 character."""
    raw = line.encode("utf-8")
    if len(raw) <= limit:
        return [line]
    out: list[str] = []
    start, width = 0, limit  # the first line has `limit` octets, continuations a space + limit-1
    while start < len(raw):
        end = min(start + width, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # step back off a continuation byte
            end -= 1
        out.append(("" if start == 0 else " ") + raw[start:end].decode("utf-8"))
        start, width = end, limit - 1
    return out


def text_value(s: str) -> str:
    """Escape a TEXT value (RFC 5545 3.3.11)."""
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _calendar(components: Iterable[list[str]], line_ending: str) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//caldavfs//tests//EN"]
    for comp in components:
        lines.extend(comp)
    lines.append("END:VCALENDAR")
    folded = [phys for logical in lines for phys in fold(logical)]
    return (line_ending.join(folded) + line_ending).encode("utf-8")


def _next_day(d: str) -> str:
    return (dt.datetime.strptime(d, "%Y%m%d") + dt.timedelta(days=1)).strftime("%Y%m%d")


def _event_lines(uid: str, summary: str, dtstart: str, *, allday: bool, rrule: str | None,
                 recurrence_id: str | None, description: str | None, alarm: bool,
                 extra_lines: Sequence[str]) -> list[str]:
    lines = ["BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{DTSTAMP}"]
    if allday:
        day = dtstart[:8]
        lines += [f"DTSTART;VALUE=DATE:{day}", f"DTEND;VALUE=DATE:{_next_day(day)}"]
    else:
        lines += [f"DTSTART:{dtstart}", "DURATION:PT1H"]
    if recurrence_id:
        lines.append(f"RECURRENCE-ID:{recurrence_id}")
    lines.append(f"SUMMARY:{text_value(summary)}")
    if rrule:
        lines.append(f"RRULE:{rrule}")
    if description is not None:
        lines.append(f"DESCRIPTION:{text_value(description)}")
    lines.extend(extra_lines)
    if alarm:
        lines += ["BEGIN:VALARM", "ACTION:DISPLAY", f"DESCRIPTION:{text_value(summary)}",
                  "TRIGGER:-PT15M", "END:VALARM"]
    lines.append("END:VEVENT")
    return lines


def make_event(uid: str, summary: str, *, dtstart: str = "20260105T090000Z", rrule: str | None = None,
               overrides: Sequence[tuple[str, str]] = (), allday: bool = False, alarm: bool = False,
               description: str | None = None, extra_lines: Sequence[str] = (),
               line_ending: str = "\r\n") -> bytes:
    """A VCALENDAR with one VEVENT (1 h, or all-day on dtstart's date).

    overrides: (recurrence-id, summary) pairs, each an extra VEVENT with RECURRENCE-ID (same UID),
    starting at the recurrence-id. extra_lines are raw content lines added to the master, unfolded.
    """
    comps = [_event_lines(uid, summary, dtstart, allday=allday, rrule=rrule, recurrence_id=None,
                          description=description, alarm=alarm, extra_lines=extra_lines)]
    for rid, osummary in overrides:
        comps.append(_event_lines(uid, osummary, rid, allday=allday, rrule=None, recurrence_id=rid,
                                  description=None, alarm=False, extra_lines=()))
    return _calendar(comps, line_ending)


def make_todo(uid: str, summary: str, *, due: str | None = None, status: str = "NEEDS-ACTION",
              completed: str | None = None, priority: int | None = None, description: str | None = None,
              extra_lines: Sequence[str] = (), line_ending: str = "\r\n") -> bytes:
    lines = ["BEGIN:VTODO", f"UID:{uid}", f"DTSTAMP:{DTSTAMP}", f"SUMMARY:{text_value(summary)}",
             f"STATUS:{status}"]
    if due:
        lines.append(f"DUE;VALUE=DATE:{due}" if len(due) == 8 else f"DUE:{due}")
    if completed:
        lines.append(f"COMPLETED:{completed}")
    if priority is not None:
        lines.append(f"PRIORITY:{priority}")
    if description is not None:
        lines.append(f"DESCRIPTION:{text_value(description)}")
    lines.extend(extra_lines)
    lines.append("END:VTODO")
    return _calendar([lines], line_ending)


def big_description(approx_bytes: int) -> str:
    """Mixed ASCII / Hangul / emoji text, so folding meets 1-, 3- and 4-byte characters at the boundary."""
    unit = "Lorem ipsum, dolor; sit amet. 회의록 요약 — 다음 단계 🗓️ check\n"
    n = approx_bytes // len(unit.encode()) + 1
    return unit * n


# --- the standard dataset --------------------------------------------------------------------------


@dataclass
class SeededItem:
    name: str  # the name as PUT (decoded), e.g. "team meeting.ics"
    href: str  # as the server spells it in PROPFIND answers
    url: str  # absolute
    etag: str
    body: bytes  # GET bytes
    uid: str
    sent: bytes  # what was PUT (servers may reorder or add lines)


@dataclass
class SeededCalendar:
    name: str  # last href segment, decoded
    href: str  # as the server spells it
    url: str
    displayname: str | None
    color: str | None
    components: tuple[str, ...]
    items: dict[str, SeededItem] = field(default_factory=dict)  # keyed by item name


# (calendar name, displayname, color, components)
STANDARD_CALENDARS: tuple[tuple[str, str, str | None, tuple[str, ...]], ...] = (
    ("work", "직장", "#FF8800", ("VEVENT", "VTODO")),
    ("home", "홈", None, ("VEVENT", "VTODO")),
    ("tasks", "미리 알림", None, ("VTODO",)),
)


def standard_items() -> dict[str, list[tuple[str, str, bytes]]]:
    """{calendar: [(item name, uid, ics bytes)]}: what standard_dataset PUTs."""
    long_summary = "A summary long enough to need folding: " + "회의 일정 확인 " * 12
    work = [
        ("team meeting.ics", "team-meeting@caldavfs.test", make_event("team-meeting@caldavfs.test",
                                                                      "Team meeting")),
        ("100%.ics", "percent@caldavfs.test", make_event("percent@caldavfs.test", "100% done",
                                                         dtstart="20260106T100000Z")),
        ("alice@example.com.ics", "alice@example.com", make_event("alice@example.com", "Mail-like name",
                                                                  dtstart="20260107T100000Z")),
        ("a+b.ics", "a-plus-b@caldavfs.test", make_event("a-plus-b@caldavfs.test", "a+b",
                                                          dtstart="20260108T100000Z")),
        ("회의.ics", "hoeui@caldavfs.test", make_event("hoeui@caldavfs.test", "회의",
                                                       dtstart="20260109T100000Z")),
        ("no-extension", "no-extension@caldavfs.test", make_event("no-extension@caldavfs.test",
                                                                  "Href without .ics",
                                                                  dtstart="20260110T100000Z")),
        ("big.ics", "big@caldavfs.test", make_event("big@caldavfs.test", "200 KB event",
                                                    dtstart="20260111T100000Z",
                                                    description=big_description(200_000))),
        ("weekly.ics", "weekly@caldavfs.test", make_event(
            "weekly@caldavfs.test", "Weekly sync", dtstart="20260105T140000Z",
            rrule="FREQ=WEEKLY;COUNT=10",
            overrides=(("20260112T140000Z", "Weekly sync (moved room)"),
                       ("20260119T140000Z", "Weekly sync (cancelled?)")))),
        ("alarm.ics", "alarm@caldavfs.test", make_event("alarm@caldavfs.test", "With a reminder",
                                                        dtstart="20260113T080000Z", alarm=True)),
        ("folded.ics", "folded@caldavfs.test", make_event("folded@caldavfs.test", long_summary,
                                                          dtstart="20260114T080000Z",
                                                          description="x" * 300)),
        ("todo-in-work.ics", "todo-work@caldavfs.test", make_todo("todo-work@caldavfs.test",
                                                                  "Write report", due="20260120T170000Z")),
    ]
    home = [
        ("birthday.ics", "birthday@caldavfs.test", make_event("birthday@caldavfs.test", "생일",
                                                              dtstart="20260214", allday=True,
                                                              rrule="FREQ=YEARLY")),
        ("dentist.ics", "dentist@caldavfs.test", make_event("dentist@caldavfs.test", "Dentist",
                                                            dtstart="20260203T153000Z", alarm=True)),
    ]
    tasks = [
        ("buy milk.ics", "milk@caldavfs.test", make_todo("milk@caldavfs.test", "우유 사기")),
        ("done.ics", "done@caldavfs.test", make_todo("done@caldavfs.test", "Finished thing",
                                                     status="COMPLETED", completed="20260102T120000Z")),
        ("prio.ics", "prio@caldavfs.test", make_todo("prio@caldavfs.test", "Urgent", priority=1,
                                                     due="20260115")),
    ]
    return {"work": work, "home": home, "tasks": tasks}


def standard_dataset(server: Server) -> dict[str, SeededCalendar]:
    """Create the project's standard test data on a fresh server; returns {calendar name: what exists}."""
    out: dict[str, SeededCalendar] = {}
    items = standard_items()
    home_path = urlsplit(server.home_url).path
    for name, displayname, color, comps in STANDARD_CALENDARS:
        url = mkcalendar(server, name, displayname, color, comps)
        cal = SeededCalendar(name, href=home_path + quote(name, safe="") + "/", url=url,
                             displayname=displayname, color=color, components=comps)
        for iname, uid, ics in items[name]:
            etag = put_item(server, url, iname, ics)
            iurl = item_url(url, iname)
            cal.items[iname] = SeededItem(iname, href="", url=iurl, etag=etag, body=b"", uid=uid, sent=ics)
        # The server's own spelling of each href, and its etag (Radicale's PUT ETag may predate a rewrite).
        for href, etag in list_hrefs(server, url).items():
            iname = unquote(href.rstrip("/").rsplit("/", 1)[-1])
            item = cal.items[iname]
            item.href, item.etag = href, etag
            item.body = get_item(server, item.url)
        out[name] = cal
    server.dataset = out
    return out


@contextlib.contextmanager
def with_calendar(kind: str, name: str, bodies: dict[str, bytes]) -> Iterator[tuple[Server, dict[str, bytes]]]:
    """A server of ``kind`` with the standard dataset plus calendar ``name`` holding ``bodies`` (item
    name -> bytes uploaded); yields it and each item's bytes as the server then serves them (GET)."""
    with tempfile.TemporaryDirectory(prefix=f"{name}-{kind}-") as tmp:
        srv = start(kind, Path(tmp))
        try:
            standard_dataset(srv)
            url = mkcalendar(srv, name)
            for item, body in bodies.items():
                put_item(srv, url, item, body)
            yield srv, {item: get_item(srv, item_url(url, item)) for item in bodies}
        finally:
            srv.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.02)
    return True
