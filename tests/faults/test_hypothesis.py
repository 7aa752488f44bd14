"""Property-based tests: davxml.parse_multistatus on generated (and mangled) multistatus documents, and
names.assign over random href sets."""

from __future__ import annotations

import random
from urllib.parse import quote, unquote

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from caldavfs import davxml as x
from caldavfs import names
from caldavfs.errors import InvalidResponseError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

D = "DAV:"
XML_WS = " \t\r\n"


def _xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or 0x10000 <= o <= 0x10FFFF


xml_text = st.text(st.characters(blacklist_categories=("Cs",)).filter(_xml_char), max_size=40)

percent_escape = st.integers(0, 255).map(lambda b: f"%{b:02X}" if b % 2 else f"%{b:02x}")
segment = st.lists(st.one_of(xml_text.filter(lambda s: "/" not in s), percent_escape), min_size=1, max_size=6).map(
    "".join)


@st.composite
def hrefs(draw: st.DrawFn) -> str:
    segs = draw(st.lists(segment, min_size=1, max_size=4))
    prefix = draw(st.sampled_from(["/", "http://127.0.0.1:5232/", "https://example.com/dav/", "", "../"]))
    suffix = draw(st.sampled_from(["", "/", ".ics"]))
    href = prefix + "/".join(segs) + suffix
    assume(href.strip(XML_WS))
    return href


status_line = st.one_of(
    st.integers(100, 599).map(lambda c: f"HTTP/1.1 {c} Whatever"),
    xml_text,
)

prop_names = st.sampled_from([x.GETETAG, x.DISPLAYNAME, x.GETCTAG, x.GETLASTMODIFIED, "{urn:x-odd}thing",
                              "bare", x.CALENDAR_DATA])


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, int | None, dict[str, str]]]]:
    root = etree.Element(f"{{{D}}}multistatus", nsmap={"D": D})
    expected: list[tuple[str, int | None, dict[str, str]]] = []
    for _ in range(draw(st.integers(0, 6))):
        href = draw(hrefs())
        resp = etree.SubElement(root, f"{{{D}}}response")
        etree.SubElement(resp, f"{{{D}}}href").text = href
        status: int | None = None
        if draw(st.booleans()):
            line = draw(status_line)
            etree.SubElement(resp, f"{{{D}}}status").text = line
            status = x.parse_status(line)
        good: dict[str, str] = {}
        for _ in range(draw(st.integers(0, 3))):
            code = draw(st.sampled_from([200, 404, 403, 207, None]))
            ps = etree.SubElement(resp, f"{{{D}}}propstat")
            prop = etree.SubElement(ps, f"{{{D}}}prop")
            values = draw(st.dictionaries(prop_names, xml_text, max_size=3))
            for name, value in values.items():
                etree.SubElement(prop, name).text = value
            if code is not None:
                etree.SubElement(ps, f"{{{D}}}status").text = f"HTTP/1.1 {code} X"
            if code is None or 200 <= code < 300:
                for name, value in values.items():
                    good[name] = value if name == x.CALENDAR_DATA else value.strip(XML_WS)
        expected.append((href, status, good))
    body = etree.tostring(root, xml_declaration=True, encoding=draw(st.sampled_from(["utf-8", "utf-16"])))
    return body, expected


def _doc(*hrefs_: str) -> tuple[bytes, list[tuple[str, int | None, dict[str, str]]]]:
    root = etree.Element(f"{{{D}}}multistatus", nsmap={"D": D})
    for href in hrefs_:
        etree.SubElement(etree.SubElement(root, f"{{{D}}}response"), f"{{{D}}}href").text = href
    return etree.tostring(root, xml_declaration=True, encoding="utf-8"), [(h, None, {}) for h in hrefs_]


@SETTINGS
@given(documents())
@example(_doc("/alice/work/%2E%2E%2F", "/alice/work/a%00b", "http://h/%E2%80%AE.ics", "/alice/work/회의.ics"))
# Raw (unencoded) Unicode spaces at the end of an href are part of it; only XML whitespace may go.
@example(_doc("/alice/work/meeting\u00a0", "/alice/work/\u3000", "/alice/work/x\u2028"))
def test_parse_multistatus_gives_back_what_was_sent(doc: tuple[bytes, list[tuple[str, int | None, dict]]]) -> None:
    body, expected = doc
    ms = x.parse_multistatus(body, "generated")
    assert len(ms.responses) == len(expected)
    for got, (href, status, good) in zip(ms.responses, expected, strict=True):
        assert got.href == href.strip(XML_WS), (got.href, href)
        assert got.status == status
        for name, value in good.items():
            if name == x.CALENDAR_DATA:
                # XML turns a bare CR into LF (lxml writes it as &#13; so it survives).
                assert got.props.get(name) == value
            else:
                assert got.props.get(name) == value


@SETTINGS
@given(documents(), st.data())
def test_parse_multistatus_mangled_raises_only_invalid_response(doc: tuple[bytes, list], data: st.DataObject) -> None:
    body, _ = doc
    mangle = data.draw(st.sampled_from(["truncate", "insert", "replace", "doctype", "garbage"]))
    if mangle == "truncate":
        body = body[: data.draw(st.integers(0, max(0, len(body) - 1)))]
    elif mangle == "insert":
        at = data.draw(st.integers(0, len(body)))
        body = body[:at] + data.draw(st.binary(min_size=1, max_size=20)) + body[at:]
    elif mangle == "replace":
        at = data.draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:at] + data.draw(st.binary(min_size=1, max_size=1)) + body[at + 1:]
    elif mangle == "doctype":
        body = b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e "' + b"A" * 10 + b'">]>' + body.split(b"?>", 1)[-1]
    else:
        body = data.draw(st.binary(max_size=200))
    try:
        ms = x.parse_multistatus(body, "mangled")
    except InvalidResponseError:
        return
    assert isinstance(ms, x.Multistatus)
    for r in ms.responses:
        assert isinstance(r.href, str) and r.href


# --- names.assign ----------------------------------------------------------------------------------

raw_segments = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.text(max_size=4), percent_escape), max_size=30).map(
        lambda parts: unquote("".join(parts), errors="surrogateescape")),
    st.sampled_from([".", "..", "", ".ics", "x", "x.ics", "a/b.ics", "a_b.ics", "\0", "\x01.ics", "~", "_",
                     "é" * 200, "y" * 300]),
)


@st.composite
def href_sets(draw: st.DrawFn) -> dict[str, str]:
    raws = draw(st.lists(raw_segments, max_size=25))
    out: dict[str, str] = {}
    for n, raw in enumerate(raws):
        key = "http://h/cal/" + quote(raw, safe="", errors="surrogateescape")
        if draw(st.booleans()):
            key += "/"  # collections and items may differ by a trailing slash only
        if key in out:
            key += f"?dup{n}"
        out[key] = raw
    return out


def _check_safe(result: dict[str, str], raw_by_key: dict[str, str], item: bool) -> None:
    assert set(result) == set(raw_by_key)
    inverse = {name: key for key, name in result.items()}
    assert len(inverse) == len(result), "two hrefs got the same name"
    for name in result.values():
        encoded = name.encode("utf-8")  # strict: no lone surrogates
        assert 0 < len(encoded) <= 255, name
        assert "/" not in name and "\0" not in name, repr(name)
        assert name not in (".", ".."), name
        assert not name.startswith("."), name
        assert not any(ord(c) < 32 or ord(c) == 127 for c in name), repr(name)
        if item:
            assert name.endswith(".ics"), name


@SETTINGS
@given(href_sets(), st.booleans(), st.randoms(use_true_random=False))
def test_assign_unique_reversible_safe_order_independent(raw_by_key: dict[str, str], item: bool,
                                                         rnd: random.Random) -> None:
    result = names.assign(raw_by_key, item=item)
    _check_safe(result, raw_by_key, item)
    keys = list(raw_by_key)
    rnd.shuffle(keys)
    assert names.assign({k: raw_by_key[k] for k in keys}, item=item) == result


@SETTINGS
@given(href_sets(), href_sets())
def test_assign_stable_for_unchanged_simple_names(a: dict[str, str], b: dict[str, str]) -> None:
    """A name that needed no change and collides with nothing keeps that name whatever else is listed."""
    merged = {**a, **b}
    result = names.assign(merged, item=True)
    _check_safe(result, merged, True)
