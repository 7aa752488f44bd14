"""names: sanitising and assigning file names from href segments."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caldavfs import names

SEP = "/"


def _safe(name: str, *, item: bool) -> None:
    encoded = name.encode("utf-8")  # strict: valid UTF-8, no lone surrogates
    assert 0 < len(encoded) <= names.MAX_NAME_BYTES
    assert "/" not in name and "\0" not in name
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    assert name not in (".", "..") and not name.startswith(".")
    if item:
        assert name.endswith(".ics")


@pytest.mark.parametrize(("raw", "item", "expected"), [
    ("team meeting.ics", True, "team meeting.ics"),
    ("no-extension", True, "no-extension.ics"),
    ("회의.ics", True, "회의.ics"),
    ("a/b.ics", True, "a_b.ics"),
    ("a\0b", True, "a_b.ics"),
    ("tab\there\n.ics", True, "tab_here_.ics"),
    ("work", False, "work"),
    ("work.ics", False, "work.ics"),
])
def test_sanitize_examples(raw: str, item: bool, expected: str) -> None:
    assert names.sanitize(raw, item=item) == expected


@pytest.mark.parametrize("raw", ["", ".", "..", ".hidden", ".ics", "...", "\0", "/"])
@pytest.mark.parametrize("item", [True, False])
def test_sanitize_makes_dot_and_empty_names_safe(raw: str, item: bool) -> None:
    _safe(names.sanitize(raw, item=item), item=item)


def test_sanitize_invalid_utf8_is_replaced() -> None:
    raw = b"caf\xe9.ics".decode("utf-8", "surrogateescape")
    name = names.sanitize(raw, item=True)
    _safe(name, item=True)
    assert name == "caf\ufffd.ics"


@pytest.mark.parametrize("raw", ["a" * 300, "가" * 200, "a" * 252 + "가가", "x" * 251 + ".ics"])
def test_long_names_are_cut_on_a_character_boundary(raw: str) -> None:
    name = names.sanitize(raw, item=True)
    _safe(name, item=True)


def test_long_names_with_same_prefix_stay_apart() -> None:
    a, b = "a" * 300 + "1", "a" * 300 + "2"
    assert names.sanitize(a, item=True) != names.sanitize(b, item=True)


def test_collision_keeps_the_unchanged_name_and_hashes_the_others() -> None:
    raw = {"http://h/c/a_b.ics": "a_b.ics", "http://h/c/a%2Fb.ics": "a/b.ics", "http://h/c/a%00b.ics": "a\0b.ics"}
    got = names.assign(raw, item=True)
    assert got["http://h/c/a_b.ics"] == "a_b.ics"
    assert len(set(got.values())) == 3
    for key in ("http://h/c/a%2Fb.ics", "http://h/c/a%00b.ics"):
        assert got[key].startswith("a_b~") and got[key].endswith(".ics")


def test_collision_ics_and_no_extension() -> None:
    raw = {"http://h/c/x": "x", "http://h/c/x.ics": "x.ics"}
    got = names.assign(raw, item=True)
    assert len(set(got.values())) == 2
    assert all(n.endswith(".ics") for n in got.values())
    assert names.assign(dict(reversed(raw.items())), item=True) == got


def test_collision_without_a_natural_winner_is_order_independent() -> None:
    raw = {f"http://h/c/{quote(s)}": s for s in ["a/b", "a\0b", "a\x01b"]}
    expected = names.assign(raw, item=True)
    assert len(set(expected.values())) == 3
    keys = list(raw)
    for seed in range(6):
        random.Random(seed).shuffle(keys)
        assert names.assign({k: raw[k] for k in keys}, item=True) == expected


def _segments() -> st.SearchStrategy[str]:
    as_bytes = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
    alphabet = st.sampled_from(["a", "b", ".", "/", "\0", "\x01", "ics", ".ics", "가", " ", "%", "~"])
    tricky = st.lists(alphabet, max_size=8).map("".join)
    return st.one_of(st.text(max_size=300), as_bytes, tricky)


@settings(max_examples=300, deadline=None)
@given(st.lists(_segments(), max_size=12, unique=True), st.booleans(), st.randoms())
def test_assign_is_unique_safe_and_order_independent(segs: list[str], item: bool, rnd: random.Random) -> None:
    raw = {"http://h/c/" + quote(s, safe="", errors="surrogateescape"): s for s in segs}
    got = names.assign(raw, item=item)
    assert set(got) == set(raw)
    assert len(set(got.values())) == len(got)  # injective
    for name in got.values():
        _safe(name, item=item)
    keys = list(raw)
    rnd.shuffle(keys)
    assert names.assign({k: raw[k] for k in keys}, item=item) == got
