"""The test harness itself: iCalendar builders (pure) and the seeded servers (integration)."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from tests import servers


@given(st.text(min_size=0, max_size=400))
def test_fold_respects_octets_and_characters(text: str) -> None:
    line = "DESCRIPTION:" + text.replace("\r", "").replace("\n", "")
    phys = servers.fold(line)
    assert all(len(p.encode()) <= 75 for p in phys)
    assert phys[0] + "".join(p[1:] for p in phys[1:]) == line  # unfolding gives the line back
    assert all(p.startswith(" ") for p in phys[1:])


def test_make_event_is_crlf_and_big() -> None:
    body = servers.make_event("u@x", "s", description=servers.big_description(200_000))
    assert len(body) > 200_000
    assert body.count(b"\n") == body.count(b"\r\n")
    assert max(len(line) for line in body.split(b"\r\n")) <= 75
    lf = servers.make_event("u@x", "s", line_ending="\n")
    assert b"\r" not in lf


def test_seeded_server_matches_dataset(server: servers.Server) -> None:
    for cal in server.dataset.values():
        hrefs = servers.list_hrefs(server, cal.url)
        assert {unquote(h) for h in hrefs} == {unquote(i.href) for i in cal.items.values()}
        for item in cal.items.values():
            assert hrefs[item.href] == item.etag
    item = server.dataset["work"].items["회의.ics"]
    assert servers.get_item(server, server.url(item.href)) == item.body
