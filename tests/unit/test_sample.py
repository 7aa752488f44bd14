"""caldavfs.sample: well-formed, deterministic iCalendar; and LocalRadicale serves what it seeds."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from caldavfs import sample


def unfold(data: bytes) -> list[str]:
    """Logical lines; asserts the physical form (CRLF only, <= 75 octets, valid UTF-8)."""
    assert data.endswith(b"\r\n")
    physical = data[:-2].split(b"\r\n")
    assert all(b"\r" not in p and b"\n" not in p for p in physical), "bare CR or LF"
    logical: list[str] = []
    for p in physical:
        assert len(p) <= 75, f"physical line of {len(p)} octets: {p!r}"
        text = p.decode("utf-8")  # raises if a fold split a character
        if text.startswith(" "):
            assert logical, "continuation line first"
            logical[-1] += text[1:]
        else:
            logical.append(text)
    return logical


def check_item(name: str, data: bytes) -> str:
    """Structure of one item; returns its UID."""
    lines = unfold(data)
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    stack: list[str] = []
    for line in lines:
        if line.startswith("BEGIN:"):
            stack.append(line[6:])
        elif line.startswith("END:"):
            assert stack and stack.pop() == line[4:], f"unbalanced {line} in {name}"
    assert not stack
    assert "VERSION:2.0" in lines and any(x.startswith("PRODID:") for x in lines)
    uids = {x[4:] for x in lines if x.startswith("UID:")}
    assert len(uids) == 1, f"{name}: UIDs {uids}"
    for prop in ("DTSTAMP", "LAST-MODIFIED"):
        assert any(x.startswith(prop + ":") for x in lines), f"{name} lacks {prop}"
    assert name.endswith(".ics")
    return uids.pop()


@pytest.fixture(scope="module")
def default_set() -> list[sample.SampleCalendar]:
    return sample.generate()


def test_default_set_mirrors_the_icloud_account(default_set: list[sample.SampleCalendar]) -> None:
    assert [(c.slug, c.displayname, c.components) for c in default_set] == [
        ("home", "홈", ("VEVENT",)), ("work", "직장", ("VEVENT",)), ("tasks", "미리 알림", ("VTODO",))]
    assert all(re.fullmatch(r"#[0-9A-F]{6}", c.color) for c in default_set)
    assert sum(len(c.items) for c in default_set) == 300
    assert len(default_set[2].items) == 45  # ~15% todos


def test_every_item_is_well_formed(default_set: list[sample.SampleCalendar]) -> None:
    uids, names = [], []
    for cal in default_set:
        for name, data in cal.items:
            uids.append(check_item(name, data))
            names.append(name)
            kinds = {x for x in unfold(data) if x in ("BEGIN:VEVENT", "BEGIN:VTODO")}
            assert kinds <= {f"BEGIN:{c}" for c in cal.components}
            assert 500 <= len(data) <= 4096, (name, len(data))
    assert len(set(uids)) == len(uids)
    assert len(set(names)) == len(names)


def test_content_variety(default_set: list[sample.SampleCalendar]) -> None:
    blob = b"".join(d for c in default_set for _, d in c.items)
    lines = Counter(re.split(r"[;:]", x, maxsplit=1)[0]
                    for c in default_set for _, d in c.items for x in unfold(d))
    for prop in ("RRULE", "EXDATE", "RECURRENCE-ID", "BEGIN", "TRIGGER", "DUE", "PRIORITY", "COMPLETED"):
        assert lines[prop] > 0, prop
    for needle in ("BEGIN:VTIMEZONE", "DTSTART;TZID=", "DTSTART;VALUE=DATE:", "STATUS:COMPLETED"):
        assert needle.encode() in blob, needle
    text = blob.decode()
    for script in (r"[가-힣]", r"[ぁ-んァ-ン]", r"[äöüß]", r"[α-ω]", "[\U0001f300-\U0001faff]"):
        assert re.search(script, text), script
    sizes = [len(d) for c in default_set for _, d in c.items]
    assert min(sizes) < 1000 and max(sizes) > 3000
    # A few items carry a very long logical line.
    assert any(len(x) > 1000 for c in default_set for _, d in c.items for x in unfold(d))


def test_deterministic_per_seed() -> None:
    assert sample.generate(50, seed=7) == sample.generate(50, seed=7)
    assert sample.generate(50, seed=7) != sample.generate(50, seed=8)


@pytest.mark.parametrize(("items", "calendars"), [(0, 3), (1, 3), (7, 1), (101, 4), (40, 6)])
def test_item_counts(items: int, calendars: int) -> None:
    cals = sample.generate(items, calendars=calendars)
    assert len(cals) == calendars
    assert sum(len(c.items) for c in cals) == items
    assert len({c.slug for c in cals}) == calendars
    if calendars >= 4:
        assert cals[3].slug == "personal" and cals[3].components == ("VEVENT", "VTODO")


def test_scales_to_20000_items() -> None:
    cals = sample.generate(20_000)
    assert sum(len(c.items) for c in cals) == 20_000
    assert len({n for c in cals for n, _ in c.items}) == 20_000


def test_fold_never_splits_a_character() -> None:
    for text in ("x" * 200, "가" * 100, "🏃‍♀️" * 40, "a" + "ü" * 100):
        folded = sample.fold("DESCRIPTION:" + text)
        assert "".join(unfold(folded)) == "DESCRIPTION:" + text


def test_mutate_changes_summary_sequence_and_times(default_set: list[sample.SampleCalendar]) -> None:
    for cal in default_set:
        for name, data in cal.items[:20]:
            changed = sample.mutate(data, 3)
            assert changed != data
            assert check_item(name, changed) == check_item(name, data)
            lines = unfold(changed)
            assert any(x.startswith("SUMMARY:") and x.endswith(" (rev 3)") for x in lines)
            assert "SEQUENCE:3" in lines
            old = [x for x in unfold(data) if x.startswith("LAST-MODIFIED:")]
            new = [x for x in lines if x.startswith("LAST-MODIFIED:")]
            assert len(old) == len(new) and all(n > o for o, n in zip(old, new, strict=True))
            again = sample.mutate(changed, 4)
            assert " (rev 3)" not in again.decode() and "SEQUENCE:4" in unfold(again)


def _normalised(data: bytes) -> list[str]:
    """What survives Radicale's re-serialisation (vobject), as a sorted multiset of logical lines.

    Radicale 3.9 serves `vobject.serialize()` of what it parsed, not the stored bytes. It
    - reorders properties (UID, RECURRENCE-ID, DTSTART, DURATION, DTEND first, the rest alphabetical)
      and sub-components (VTIMEZONE STANDARD before DAYLIGHT);
    - drops the quotes around parameter values that do not need them (CN="김민수" -> CN=김민수);
    - normalises durations (PT60M -> PT1H), which is why sample writes them in normal form;
    - folds by characters, not octets: a line under 75 characters stays unfolded even when it is longer
      than 75 octets (up to ~120 octets with Korean/Greek text), so served lines can exceed the limit.
    CRLF line endings, values and escaping are kept.
    """
    text = data.decode("utf-8")
    assert "\n" not in text.replace("\r\n", "")
    logical = re.sub(r"\r\n[ \t]", "", text).split("\r\n")
    out = []
    for line in logical:
        if not line:
            continue
        parts = re.match(r'((?:[^":]|"[^"]*")*):(.*)', line)  # the first ':' outside quotes
        assert parts, line
        out.append(parts[1].replace('"', "") + ":" + parts[2])
    return sorted(out)


@pytest.mark.integration
def test_local_radicale_serves_seeded_calendars(tmp_path: Path) -> None:
    requests = pytest.importorskip("requests")
    from caldavfs.radicale_server import LocalRadicale

    cals = sample.generate(120, calendars=4, seed=3)
    server = LocalRadicale(tmp_path / "radicale")
    server.seed(cals)
    with server:
        server.warm_up()
        session = requests.Session()
        session.auth = (server.username, server.password)
        body = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:I="http://apple.com/ns/ical/">
<D:prop><D:displayname/><I:calendar-color/><C:supported-calendar-component-set/><D:resourcetype/>
<D:getetag/></D:prop></D:propfind>"""
        home = session.request("PROPFIND", server.home_url, data=body, headers={"Depth": "1"}, timeout=30)
        assert home.status_code == 207
        import xml.etree.ElementTree as ET

        ns = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav", "I": "http://apple.com/ns/ical/"}
        found = {}
        for resp in ET.fromstring(home.content).findall("D:response", ns):
            href = resp.findtext("D:href", namespaces=ns) or ""
            if resp.find(".//C:calendar", ns) is None:
                continue
            comps = tuple(c.get("name") for c in resp.findall(".//C:comp", ns))
            found[unquote(href.rstrip("/").rsplit("/", 1)[-1])] = (
                resp.findtext(".//D:displayname", namespaces=ns),
                resp.findtext(".//I:calendar-color", namespaces=ns), comps)
        assert found == {c.slug: (c.displayname, c.color, c.components) for c in cals}

        for cal in cals:
            listing = session.request("PROPFIND", server.calendar_url(cal.slug), headers={"Depth": "1"},
                                      data=b'<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
                                           b"</D:prop></D:propfind>", timeout=30)
            assert listing.status_code == 207
            root = ET.fromstring(listing.content)
            lengths = {unquote(r.findtext("D:href", namespaces=ns) or "").rsplit("/", 1)[-1]:
                       r.findtext(".//D:getcontentlength", namespaces=ns)
                       for r in root.findall("D:response", ns)}
            lengths.pop("", None)  # the collection itself
            assert set(lengths) == {name for name, _ in cal.items}
            for name, data in cal.items:
                got = session.get(server.calendar_url(cal.slug) + quote(name), timeout=30)
                assert got.status_code == 200, name
                assert got.content.endswith(b"\r\n")
                assert _normalised(got.content) == _normalised(data), name
                assert lengths[name] == str(len(got.content))
