"""Deterministic, realistic sample calendar data for the demo, the benchmark and tests.

Pure standard library and no I/O: ``generate()`` returns calendars whose items are iCalendar bytes
(CRLF, folded at 75 octets on UTF-8 boundaries). The default set mirrors the seed document's iCloud
account: ``home`` (홈), ``work`` (직장) and ``tasks`` (미리 알림, todos only).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

__all__ = ["SampleCalendar", "generate", "mutate", "fold", "escape_text"]


@dataclass
class SampleCalendar:
    slug: str
    displayname: str
    color: str
    components: tuple[str, ...]
    items: list[tuple[str, bytes]] = field(default_factory=list)


# slug, displayname, color (iCloud's palette), components
_CALENDARS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("home", "홈", "#34AADC", ("VEVENT",)),
    ("work", "직장", "#CC73E1", ("VEVENT",)),
    ("tasks", "미리 알림", "#FF9500", ("VTODO",)),
    ("personal", "Persönlich ✨", "#FF2968", ("VEVENT", "VTODO")),
]

_PRODIDS = [
    "-//Apple Inc.//iPhone OS 17.5.1//EN",
    "-//Apple Inc.//macOS 14.5//EN",
    "-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN",
    "-//caldavfs//sample data 1.0//EN",
]

_EVENT_SUMMARIES = [
    "Team standup", "Dentist appointment", "Quarterly review with finance", "Lunch with Sam",
    "Flight to Berlin (LH 713)", "1:1 with manager", "Yoga class", "Parent-teacher meeting",
    "팀 회의", "치과 예약", "부모님과 저녁 식사", "분기 실적 검토", "헬스장 PT", "서울 출장", "한국어 수업",
    "東京出張", "歯医者の予約", "プロジェクト定例会議", "花見 🌸", "ラーメン屋で昼食",
    "Besprechung mit Jürgen Müller", "Zahnarzttermin in Köln", "Übergabe der Schlüssel",
    "Straßenfest in München", "Grüße an Oma überbringen",
    "Συνάντηση ομάδας", "Γενέθλια της Ελένης", "Ταξίδι στην Αθήνα",
    "🎉 Release party", "☕ Coffee with Alex", "🏃‍♀️ Morning run", "👨‍👩‍👧 Family dinner", "🎂 생일 파티",
]

_TODO_SUMMARIES = [
    "Buy milk 🥛", "Renew passport", "Call mom ☎️", "Book train tickets", "Water the plants 🪴",
    "우유 사기", "세금 신고하기", "택배 반품 신청", "자동차 보험 갱신",
    "請求書を支払う", "年賀状を書く", "Steuererklärung abgeben", "Fahrrad zur Inspektion bringen",
    "Πληρωμή λογαριασμού ρεύματος", "Κλείσιμο ραντεβού στον γιατρό",
]

_SENTENCES = [
    "Please bring the printed agenda and last quarter's numbers.",
    "Dial-in: +1 555 0100, PIN 4242#; the room has no projector, so share your screen.",
    "Remember: the parking garage closes at 22:00, take the north exit.",
    "회의실은 본관 10층입니다. 출입증을 꼭 지참해 주세요.",
    "지난 회의록을 미리 읽어 오시고, 질문은 슬랙 채널에 남겨 주세요.",
    "점심은 회사 근처 한식당에서 먹을 예정입니다; 예약은 제가 하겠습니다.",
    "資料は共有フォルダにあります。事前に目を通しておいてください。",
    "会議の後、近くの居酒屋で懇親会を予定しています。",
    "Bitte die Unterlagen für die Übergabe mitbringen, außerdem die Schlüssel für Büro 3.",
    "Treffpunkt: Haupteingang, Königstraße 12, 70173 Stuttgart; Anfahrt mit der S-Bahn.",
    "Μην ξεχάσεις το δώρο και την τούρτα, ξεκινάμε στις 19:00.",
    "Η αίθουσα βρίσκεται στον δεύτερο όροφο, δίπλα στο κυλικείο.",
    "Don't forget the 🎁 and the 🎂! Party starts at 7 — bring friends 🥳.",
    "Notes:\n- confirm catering\n- send invites\n- book the room, 2 hours",
    "Link: https://meet.example.com/j/8675309?pwd=Q2FsZGF2ZnMgc2FtcGxlIGRhdGE",
]

_LOCATIONS = [
    "서울특별시 강남구 테헤란로 152, 10층",
    "Konferenzraum „Zugspitze“, 3. OG",
    "東京都渋谷区神南1-2-3",
    "Starbucks; 5th Ave & 42nd St, New York",
    "Αίθουσα 2, Πανεπιστήμιο Αθηνών",
    "Home",
    "Zoom",
]

_PEOPLE = [
    ("Müller, Jörg", "joerg.mueller@example.de"),
    ("김민수", "minsu.kim@example.kr"),
    ("山田 太郎", "taro.yamada@example.jp"),
    ("Ελένη Παπαδοπούλου", "eleni@example.gr"),
    ("Sam O'Neil", "sam@example.com"),
]

# (TZID, VTIMEZONE lines) for the zones timed events use; Seoul has no DST, the others do.
_TIMEZONES: dict[str, list[str]] = {
    "Asia/Seoul": [
        "BEGIN:VTIMEZONE", "TZID:Asia/Seoul",
        "BEGIN:STANDARD", "DTSTART:19880509T030000", "TZNAME:KST",
        "TZOFFSETFROM:+1000", "TZOFFSETTO:+0900", "END:STANDARD",
        "END:VTIMEZONE",
    ],
    "Europe/Berlin": [
        "BEGIN:VTIMEZONE", "TZID:Europe/Berlin",
        "BEGIN:DAYLIGHT", "DTSTART:19810329T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
        "TZNAME:CEST", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200", "END:DAYLIGHT",
        "BEGIN:STANDARD", "DTSTART:19961027T030000", "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
        "TZNAME:CET", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "END:STANDARD",
        "END:VTIMEZONE",
    ],
    "America/New_York": [
        "BEGIN:VTIMEZONE", "TZID:America/New_York",
        "BEGIN:DAYLIGHT", "DTSTART:20070311T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU",
        "TZNAME:EDT", "TZOFFSETFROM:-0500", "TZOFFSETTO:-0400", "END:DAYLIGHT",
        "BEGIN:STANDARD", "DTSTART:20071104T020000", "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU",
        "TZNAME:EST", "TZOFFSETFROM:-0400", "TZOFFSETTO:-0500", "END:STANDARD",
        "END:VTIMEZONE",
    ],
}
_TZIDS = list(_TIMEZONES)

# Fixed epoch: output must not depend on when it is generated.
_EPOCH = datetime(2025, 1, 6, 0, 0, 0)
_MIN_SIZE, _MAX_SIZE = 600, 3900  # targets; real sizes land in 0.5-4 KB


def escape_text(value: str) -> str:
    """RFC 5545 TEXT escaping."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def fold(line: str) -> bytes:
    """One logical line as CRLF-terminated physical lines of at most 75 octets, never splitting UTF-8."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return raw + b"\r\n"
    parts = []
    start, limit = 0, 75
    while len(raw) - start > limit:
        cut = start + limit
        while raw[cut] & 0xC0 == 0x80:  # continuation byte: back up to the character's start
            cut -= 1
        parts.append(raw[start:cut])
        start, limit = cut, 74  # continuation lines start with a space
    parts.append(raw[start:])
    return b"\r\n ".join(parts) + b"\r\n"


# These take `date` so that one formatter type fits all-day and timed values (datetime is a date).
def _utc(dt: date) -> str:
    return dt.strftime("%Y%m%dT%H%M%SZ")


def _local(dt: date) -> str:
    return dt.strftime("%Y%m%dT%H%M%S")


def _day(dt: date) -> str:
    return dt.strftime("%Y%m%d")


def _duration(minutes: int) -> str:
    """RFC 5545 duration in the normal form servers write back (PT1H, not PT60M; P1D)."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    time_part = (f"{hours}H" if hours else "") + (f"{mins}M" if mins else "")
    return "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")


def _uid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}".upper() + "@caldavfs.example"


def _description(rng: random.Random, budget: int, long_line: bool) -> str:
    """Sentences until about `budget` UTF-8 bytes; `long_line` makes one unbroken paragraph."""
    out: list[str] = []
    size = 0
    while size < budget:
        s = rng.choice(_SENTENCES)
        if long_line:
            s = s.replace("\n", " ")
        out.append(s)
        size += len(s.encode("utf-8")) + 2
    return (" " if long_line else "\n\n").join(out)


def _alarm(rng: random.Random) -> list[str]:
    minutes = rng.choice([5, 10, 15, 30, 60, 1440])
    return [
        "BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Reminder",
        f"TRIGGER:-{_duration(minutes)}", f"X-WR-ALARMUID:{_uid(rng)[:36]}", "END:VALARM",
    ]


def _event(rng: random.Random, uid: str, stamp: datetime) -> tuple[list[str], set[str]]:
    """VEVENT component(s) for one item, and the TZIDs they use."""
    tzids: set[str] = set()
    begin = _EPOCH + timedelta(days=rng.randrange(-200, 400), hours=rng.randrange(7, 20),
                               minutes=rng.choice([0, 15, 30, 45]))
    start: date = begin
    kind = rng.random()
    if kind < 0.2:  # all-day, sometimes several days
        start, params, fmt = begin.date(), ";VALUE=DATE", _day
        length = timedelta(days=rng.choice([1, 1, 1, 2, 3, 7]))
        shift = timedelta(days=1)
    else:
        if kind < 0.85:  # timed in a named zone
            tzid = rng.choice(_TZIDS)
            tzids.add(tzid)
            params, fmt = f";TZID={tzid}", _local
        else:
            params, fmt = "", _utc
        length = timedelta(minutes=rng.choice([30, 45, 60, 90, 120]))
        shift = timedelta(hours=1)
    use_duration = kind >= 0.85

    def timing(prefix: str, begin: date) -> list[str]:
        if use_duration:
            return [f"{prefix}{params}:{fmt(begin)}", f"DURATION:{_duration(length.seconds // 60)}"]
        end = f"DTEND{params}:{fmt(begin + length)}"
        return [f"{prefix}{params}:{fmt(begin)}", end]

    summary = rng.choice(_EVENT_SUMMARIES)
    lines = ["BEGIN:VEVENT", f"UID:{uid}", *timing("DTSTART", start), f"DTSTAMP:{_utc(stamp)}",
             f"CREATED:{_utc(stamp - timedelta(days=rng.randrange(0, 90)))}",
             f"LAST-MODIFIED:{_utc(stamp)}", "SEQUENCE:0", f"SUMMARY:{escape_text(summary)}"]
    if rng.random() < 0.5:
        lines.append(f"LOCATION:{escape_text(rng.choice(_LOCATIONS))}")
    if rng.random() < 0.25:
        name, mail = rng.choice(_PEOPLE)
        lines.append(f'ORGANIZER;CN="{name}":mailto:{mail}')
        for name, mail in rng.sample(_PEOPLE, rng.randint(1, 3)):
            lines.append(f'ATTENDEE;CN="{name}";PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:{mail}')
    if rng.random() < 0.1:
        lines.append("TRANSP:TRANSPARENT")

    overrides: list[str] = []
    if rng.random() < 0.3:  # recurring
        freq, step = rng.choice([("DAILY", 1), ("WEEKLY", 7), ("WEEKLY", 14), ("MONTHLY", 0), ("YEARLY", 0)])
        rule = f"RRULE:FREQ={freq}" + (";INTERVAL=2" if step == 14 else "")
        if rng.random() < 0.5:
            rule += f";COUNT={rng.randint(10, 40)}"
        lines.append(rule)
        if step and rng.random() < 0.4:  # two occurrences cancelled
            skipped = sorted(fmt(start + timedelta(days=step * k)) for k in rng.sample(range(1, 5), 2))
            lines.append(f"EXDATE{params}:{','.join(skipped)}")
        if step and rng.random() < 0.35:  # one occurrence moved and renamed, in the same file
            moved = start + timedelta(days=step * rng.randint(5, 8))
            overrides = ["BEGIN:VEVENT", f"UID:{uid}", f"RECURRENCE-ID{params}:{fmt(moved)}",
                         *timing("DTSTART", moved + shift), f"DTSTAMP:{_utc(stamp)}",
                         f"LAST-MODIFIED:{_utc(stamp)}", "SEQUENCE:1",
                         f"SUMMARY:{escape_text(summary + ' (verschoben / 변경됨)')}", "END:VEVENT"]
    alarm = _alarm(rng) if rng.random() < 0.4 else []
    return lines + ["__DESCRIPTION__"] + alarm + ["END:VEVENT"] + overrides, tzids


def _todo(rng: random.Random, uid: str, stamp: datetime) -> list[str]:
    lines = ["BEGIN:VTODO", f"UID:{uid}", f"DTSTAMP:{_utc(stamp)}",
             f"CREATED:{_utc(stamp - timedelta(days=rng.randrange(0, 60)))}",
             f"LAST-MODIFIED:{_utc(stamp)}", "SEQUENCE:0",
             f"SUMMARY:{escape_text(rng.choice(_TODO_SUMMARIES))}"]
    due = _EPOCH + timedelta(days=rng.randrange(-60, 120), hours=rng.choice([9, 12, 17, 23]))
    r = rng.random()
    fmt, params = (_day, ";VALUE=DATE") if r < 0.4 else (_utc, "")
    if r < 0.8:
        lines.append(f"DUE{params}:{fmt(due)}")
        if rng.random() < 0.15:  # a repeating chore; RRULE needs a DTSTART of DUE's value type
            lines += [f"DTSTART{params}:{fmt(due - timedelta(days=1))}", "RRULE:FREQ=WEEKLY;BYDAY=SA"]
    lines.append(f"PRIORITY:{rng.choice([0, 0, 1, 5, 9])}")
    status = rng.choices(["NEEDS-ACTION", "IN-PROCESS", "COMPLETED"], [5, 1, 3])[0]
    lines.append(f"STATUS:{status}")
    if status == "COMPLETED":
        lines += [f"COMPLETED:{_utc(stamp)}", "PERCENT-COMPLETE:100"]
    elif status == "IN-PROCESS":
        lines.append(f"PERCENT-COMPLETE:{rng.choice([10, 25, 50, 75])}")
    alarm = _alarm(rng) if rng.random() < 0.25 else []
    return lines + ["__DESCRIPTION__"] + alarm + ["END:VTODO"]


def _item(rng: random.Random, component: str) -> tuple[str, bytes]:
    uid = _uid(rng)
    stamp = _EPOCH - timedelta(seconds=rng.randrange(0, 400 * 86400))
    tzids: set[str] = set()
    if component == "VEVENT":
        body, tzids = _event(rng, uid, stamp)
    else:
        body = _todo(rng, uid, stamp)
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{rng.choice(_PRODIDS)}", "CALSCALE:GREGORIAN"]
    for tzid in sorted(tzids):
        head += _TIMEZONES[tzid]
    long_line = rng.random() < 0.03
    if long_line:  # a very long unbroken line, as pasted from a chat or mail
        body.insert(-1, "URL:https://example.com/" + "/".join(_uid(rng)[:8] for _ in range(40)))
    skeleton = b"".join(fold(x) for x in head + body + ["END:VCALENDAR"] if x != "__DESCRIPTION__")
    # Sizes skewed to small, as real calendars are; the description fills up to the target.
    target = min(_MAX_SIZE, int(_MIN_SIZE + rng.expovariate(1 / 700)))
    if long_line:
        target = max(target, 3000)
    budget = int((target - len(skeleton)) * 0.9) - 20
    desc = _description(rng, budget, long_line) if budget > 0 else ""
    lines = [f"DESCRIPTION:{escape_text(desc)}" if x == "__DESCRIPTION__" else x
             for x in head + body + ["END:VCALENDAR"] if x != "__DESCRIPTION__" or desc]
    return uid + ".ics", b"".join(fold(x) for x in lines)


def _calendar_specs(calendars: int) -> list[tuple[str, str, str, tuple[str, ...]]]:
    if calendars < 1:
        raise ValueError("calendars must be at least 1")
    specs = _CALENDARS[:calendars]
    for i in range(len(specs), calendars):
        specs.append((f"cal-{i + 1}", f"Kalender {i + 1} · 캘린더", "#%06X" % (0x1BADF8 + 0x10101 * i),
                      ("VEVENT",)))
    return specs


def generate(items: int = 300, calendars: int | None = None, seed: int = 0) -> list[SampleCalendar]:
    """`items` calendar objects spread over `calendars` calendars (default 3), deterministic per seed."""
    if items < 0:
        raise ValueError("items must not be negative")
    specs = _calendar_specs(3 if calendars is None else calendars)
    rng = random.Random(seed)
    result = [SampleCalendar(slug, name, color, comps) for slug, name, color, comps in specs]
    # Todo-only calendars share ~15% of the items; the rest is spread evenly over the others.
    todo_cals = [c for c in result if c.components == ("VTODO",)]
    other = [c for c in result if c.components != ("VTODO",)]
    n_todo = round(items * 0.15) if todo_cals and other else (items if todo_cals else 0)
    counts: dict[str, int] = {}
    for group, total in ((todo_cals, n_todo), (other, items - n_todo)):
        for i, cal in enumerate(group):
            counts[cal.slug] = total // len(group) + (1 if i < total % len(group) else 0)
    for cal in result:
        for _ in range(counts[cal.slug]):
            if cal.components == ("VTODO",) or ("VTODO" in cal.components and rng.random() < 0.2):
                cal.items.append(_item(rng, "VTODO"))
            else:
                cal.items.append(_item(rng, "VEVENT"))
    return result


_REV = re.compile(r" \(rev \d+\)$")
_MUTATED = ("SUMMARY", "LAST-MODIFIED", "DTSTAMP", "SEQUENCE")


def mutate(item: bytes, n: int) -> bytes:
    """A changed version of `item`: revision `n` in SUMMARY and SEQUENCE, LAST-MODIFIED/DTSTAMP later.

    Applies to each VEVENT/VTODO in the file; mutate(mutate(x, 1), 2) carries only "(rev 2)".
    """
    logical: list[str] = []
    for physical in item.decode("utf-8").split("\r\n"):
        if physical.startswith((" ", "\t")) and logical:
            logical[-1] += physical[1:]
        elif physical:
            logical.append(physical)
    out: list[str] = []
    stack: list[list[str | bool]] = []  # [component name, has SEQUENCE]
    for line in logical:
        name = re.split("[;:]", line, maxsplit=1)[0].upper()
        top = stack[-1] if stack else None
        if name == "BEGIN":
            stack.append([line[6:].upper(), False])
        elif name == "END" and stack:
            if top and top[0] in ("VEVENT", "VTODO") and not top[1]:
                out.append(f"SEQUENCE:{n}")
            stack.pop()
        elif top and top[0] in ("VEVENT", "VTODO") and name in _MUTATED:
            key, value = line.split(":", 1)
            if name == "SUMMARY":
                value = _REV.sub("", value) + f" (rev {n})"
            elif name == "SEQUENCE":
                value, top[1] = str(n), True
            else:
                value = _utc(datetime.strptime(value[:15], "%Y%m%dT%H%M%S") + timedelta(hours=n))
            line = f"{key}:{value}"
        out.append(line)
    return b"".join(fold(x) for x in out)
