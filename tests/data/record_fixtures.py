"""Record real Radicale, Xandikos and SabreDAV answers into tests/data/.

Re-run from the project root: .venv/bin/python -m tests.data.record_fixtures [KIND ...]
(default: radicale xandikos sabredav; captures.json and facts.json keep the entries of other kinds).

Every response body is saved byte for byte as `requests` hands it over (Accept-Encoding: identity, so
nothing was decompressed); the request body sent is saved beside it as `..._request.xml`, and the
method, URL path, request headers, status and response headers of each capture go to captures.json.
Hrefs, etags, sync tokens, dates and the port differ between runs: tests must not pin them to a run.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from lxml import etree

from tests import servers as S

DATA = Path(__file__).resolve().parent
NS = {"D": S.NS_DAV, "C": S.NS_CALDAV}

HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
PROPFIND_PRINCIPAL = (HEAD + f'<D:propfind xmlns:D="DAV:" xmlns:C="{S.NS_CALDAV}"><D:prop>'
                      "<D:current-user-principal/><C:calendar-home-set/><D:resourcetype/>"
                      "</D:prop></D:propfind>")
PROPFIND_HOME = (HEAD + f'<D:propfind xmlns:D="DAV:" xmlns:C="{S.NS_CALDAV}" xmlns:CS="{S.NS_CS}"'
                 f' xmlns:A="{S.NS_APPLE}"><D:prop>'
                 "<D:resourcetype/><D:displayname/><CS:getctag/><D:sync-token/><A:calendar-color/>"
                 "<C:supported-calendar-component-set/></D:prop></D:propfind>")
PROPFIND_CAL = (HEAD + '<D:propfind xmlns:D="DAV:"><D:prop>'
                "<D:getetag/><D:getcontentlength/><D:getlastmodified/><D:getcontenttype/><D:resourcetype/>"
                "</D:prop></D:propfind>")
MULTIGET = (HEAD + f'<C:calendar-multiget xmlns:D="DAV:" xmlns:C="{S.NS_CALDAV}">'
            "<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>")
QUERY = (HEAD + f'<C:calendar-query xmlns:D="DAV:" xmlns:C="{S.NS_CALDAV}">'
         '<D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR">'
         '<C:comp-filter name="VTODO"/></C:comp-filter></C:filter></C:calendar-query>')
SYNC = (HEAD + '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>'
        "<D:sync-level>1</D:sync-level><D:prop><D:getetag/><D:getcontentlength/></D:prop>"
        "</D:sync-collection>")

# Items of "work" fetched by the recorded multiget (plus one that does not exist).
MULTIGET_NAMES = ("team meeting.ics", "alice@example.com.ics", "회의.ics", "weekly.ics", "folded.ics")


def capture(srv: S.Server, log: dict[str, Any], what: str, method: str, url: str, body: str,
            depth: str | None) -> bytes:
    headers = {**S.XML_HEADERS, "Accept-Encoding": "identity"}
    if depth is not None:
        headers["Depth"] = depth
    r = srv.request(method, url, data=body.encode(), headers=headers)
    name = f"{srv.kind}_{what}"
    (DATA / f"{name}_request.xml").write_bytes(body.encode())
    (DATA / f"{name}.xml").write_bytes(r.content)
    log[name] = {
        "method": method, "path": urlsplit(srv.url(url)).path, "request_headers": headers,
        "status": r.status_code,
        "response_headers": {k: v for k, v in r.headers.items() if k.lower() in
                             ("content-type", "content-length", "content-encoding", "dav", "etag")},
    }
    print(f"{name}: {method} {log[name]['path']} -> {r.status_code} {len(r.content)} bytes")
    return r.content


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))


def crlf(text: str) -> bytes:
    # lxml hands calendar-data over with LF only (XML end-of-line normalisation): restore CRLF.
    return re.sub(r"\r?\n", "\r\n", text).encode("utf-8")


def multiget_data(xml: bytes) -> dict[str, str]:
    out = {}
    for resp in parse(xml).iterfind("D:response", NS):
        data = resp.find("D:propstat/D:prop/C:calendar-data", NS)
        if data is not None and data.text:
            out[resp.findtext("D:href", namespaces=NS) or ""] = data.text
    return out


def listing(xml: bytes) -> dict[str, dict[str, str]]:
    out = {}
    for resp in parse(xml).iterfind("D:response", NS):
        props = {etree.QName(p).localname: (p.text or "") for p in
                 resp.iterfind("D:propstat[D:status='HTTP/1.1 200 OK']/D:prop/*", NS)}
        out[resp.findtext("D:href", namespaces=NS) or ""] = props
    return out


def record(kind: str, tmp: Path, log: dict[str, Any], facts: dict[str, Any]) -> None:
    srv = S.start(kind, tmp / kind)
    try:
        ds = S.standard_dataset(srv)
        work, home, tasks = ds["work"], ds["home"], ds["tasks"]
        capture(srv, log, "propfind_root", "PROPFIND", "/", PROPFIND_PRINCIPAL, "0")
        capture(srv, log, "propfind_principal", "PROPFIND", srv.principal_url, PROPFIND_PRINCIPAL, "0")
        capture(srv, log, "propfind_home", "PROPFIND", srv.home_url, PROPFIND_HOME, "1")
        cal_xml = capture(srv, log, "propfind_calendar", "PROPFIND", work.url, PROPFIND_CAL, "1")
        # Hrefs as a client builds them (fully percent-encoded), not as the server spells them.
        path = urlsplit(work.url).path
        hrefs = [path + quote(n, safe="") for n in MULTIGET_NAMES] + [path + "does-not-exist.ics"]
        mg = capture(srv, log, "multiget", "REPORT", work.url,
                     MULTIGET.format(hrefs="".join(f"<D:href>{h}</D:href>" for h in hrefs)), "1")
        if log[f"{kind}_multiget"]["status"] != 207:
            # SabreDAV 1.8 answers the whole report 404 for one missing href: ask again without it.
            mg = capture(srv, log, "multiget_found", "REPORT", work.url,
                         MULTIGET.format(hrefs="".join(f"<D:href>{h}</D:href>" for h in hrefs[:-1])), "1")
        # An item stored under a name without .ics (Xandikos types it application/octet-stream).
        capture(srv, log, "multiget_noext", "REPORT", work.url,
                MULTIGET.format(hrefs=f"<D:href>{work.items['no-extension'].href}</D:href>"), "1")
        capture(srv, log, "calendar_query", "REPORT", tasks.url, QUERY, "1")
        initial = capture(srv, log, "sync_initial", "REPORT", home.url, SYNC.format(token=""), "0")
        # SabreDAV 1.8 has no sync-collection (403): nothing to ask changes of.
        has_sync = log[f"{kind}_sync_initial"]["status"] == 207
        token = (parse(initial).findtext("D:sync-token", namespaces=NS) or "") if has_sync else ""
        # One new item, one changed, one deleted; then ask what changed since `token`.
        S.put_item(srv, home.url, "new item.ics", S.make_event("new@caldavfs.test", "New", alarm=True))
        dentist = home.items["dentist.ics"]
        S.put_item(srv, home.url, "dentist.ics",
                   S.make_event("dentist@caldavfs.test", "Dentist (moved)", dtstart="20260204T153000Z"),
                   etag=dentist.etag)
        S.delete_item(srv, home.items["birthday.ics"].url, home.items["birthday.ics"].etag)
        if has_sync:
            capture(srv, log, "sync_changes", "REPORT", home.url, SYNC.format(token=token), "0")
            capture(srv, log, "sync_bad_token", "REPORT", home.url,
                    SYNC.format(token=token.rstrip("0123456789abcdef") + "0" * 8), "0")

        # GET bodies of the multiget items, and the CRLF question for every item of the dataset.
        manifest: dict[str, Any] = {}
        for n in (*MULTIGET_NAMES, "no-extension"):
            item = work.items[n]
            fname = f"{kind}_get_{hashlib.sha1(n.encode()).hexdigest()[:8]}.ics"
            (DATA / fname).write_bytes(item.body)
            manifest[item.href] = {"name": n, "file": fname, "etag": item.etag, "get_length": len(item.body)}
        for href, props in listing(cal_xml).items():
            if href in manifest:
                manifest[href]["getcontentlength"] = props.get("getcontentlength")
                manifest[href]["getlastmodified"] = props.get("getlastmodified")
        (DATA / f"{kind}_items.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")

        crlf_ok, len_ok, lastmod, total = 0, 0, 0, 0
        mismatches: list[str] = []
        no_data: list[str] = []
        for cal in (work, tasks):  # home was just changed; work and tasks still match the seed
            props = listing(srv.request("PROPFIND", cal.url, data=PROPFIND_CAL.encode(),
                                        headers={**S.XML_HEADERS, "Depth": "1"}).content)
            body = MULTIGET.format(hrefs="".join(f"<D:href>{i.href}</D:href>" for i in cal.items.values()))
            data = multiget_data(srv.request("REPORT", cal.url, data=body.encode(),
                                             headers={**S.XML_HEADERS, "Depth": "1"}).content)
            for item in cal.items.values():
                total += 1
                p = props[item.href]
                len_ok += p.get("getcontentlength") == str(len(item.body))
                lastmod += bool(p.get("getlastmodified"))
                if item.href not in data:
                    no_data.append(item.href)
                    continue
                got = crlf(data[item.href])
                crlf_ok += got == item.body
                if got != item.body:
                    mismatches.append(item.href)
        recorded = multiget_data(mg)
        facts[kind] = {
            "items_checked": total, "multiget_crlf_equals_get": crlf_ok,
            "getcontentlength_equals_get_length": len_ok, "getlastmodified_present": lastmod,
            "mismatches": mismatches, "multiget_without_calendar_data": no_data,
            "recorded_multiget_hrefs": sorted(recorded),
            "principal": urlsplit(srv.principal_url).path, "home": urlsplit(srv.home_url).path,
        }
    finally:
        srv.stop()


def _load(name: str, drop: tuple[str, ...]) -> dict[str, Any]:
    """The entries of tests/data/NAME whose key starts with none of `drop` (those are re-recorded)."""
    path = DATA / name
    old: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return {k: v for k, v in old.items() if not k.startswith(drop)}


def main(argv: list[str]) -> int:
    kinds = tuple(argv) or ("radicale", "xandikos", "sabredav")
    log = _load("captures.json", tuple(f"{k}_" for k in kinds))
    facts = _load("facts.json", kinds)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            record(kind, Path(tmp), log, facts)
    (DATA / "captures.json").write_text(json.dumps(log, indent=1) + "\n")
    (DATA / "facts.json").write_text(json.dumps(facts, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(facts, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
