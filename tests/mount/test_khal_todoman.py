"""khal and todoman, unmodified, on a real mount of fresh Radicale and Xandikos servers (issue 6).

Both tools get their own config, data and cache folders under tmp_path (XDG_CONFIG_HOME, XDG_DATA_HOME,
XDG_CACHE_HOME, HOME), one vdir per calendar, UTC and fixed date/time formats. What they write is checked
with plain HTTP against the server (tests.servers), never through the mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests import servers
from tests.mount.conftest import Mounted

pytestmark = [pytest.mark.mount, pytest.mark.integration]

BIN = Path(sys.executable).parent
TTL = 1.0
SETTLE = TTL + 1.0 + 0.6  # the mount's TTL, the kernel's attr/entry cache (1 s), a margin
METADATA = {"displayname", "color"}
SEEDED_UID = "khal-seeded@caldavfs.test"
SEEDED_SUMMARY = "Seeded for khal"
CHANGING_UID = "khal-changing@caldavfs.test"


@dataclass
class Tools:
    srv: servers.Server
    mnt: Path
    env: dict[str, str]
    log: Callable[[], str]

    def _run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, timeout=120, check=False,
                              stdin=subprocess.DEVNULL)
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        assert done.returncode == 0, (f"{argv} exited {done.returncode}\nstdout:\n{out}\nstderr:\n{err}\n"
                                      f"caldavfs log:\n{self.log()[-4000:]}")
        return out

    def khal(self, *args: str) -> str:
        return self._run([str(BIN / "khal"), *args])

    def khal_list(self, start: str, delta: str) -> list[str]:
        out = self.khal("list", "--format", "{start} {title}", "--day-format", "", start, delta)
        return [line for line in out.splitlines() if line.strip()]

    def todo(self, *args: str) -> str:
        return self._run([str(BIN / "todo"), *args])

    def todos(self, *args: str) -> list[dict[str, Any]]:
        """`todo --porcelain list ARGS` as JSON (not used for `new`: todoman 4.7.0's porcelain formatter
        rejects the --priority default "" there)."""
        todos: list[dict[str, Any]] = json.loads(self._run([str(BIN / "todo"), "--porcelain", "list", *args]))
        return todos


def write_configs(mnt: Path, home: Path) -> dict[str, str]:
    """khal and todoman configs under home/.config; returns the tools' environment."""
    config, data, cache = home / ".config", home / ".local" / "share", home / ".cache"
    for d in (config / "khal", config / "todoman", data, cache):
        d.mkdir(parents=True, exist_ok=True)
    cals = "".join(f"[[{name}]]\npath = {mnt / name}\ntype = calendar\n" for name in ("work", "home", "tasks"))
    (config / "khal" / "config").write_text(
        f"[calendars]\n{cals}"
        "[locale]\ntimeformat = %H:%M\ndateformat = %Y-%m-%d\nlongdateformat = %Y-%m-%d\n"
        "datetimeformat = %Y-%m-%d %H:%M\nlongdatetimeformat = %Y-%m-%d %H:%M\n"
        "local_timezone = UTC\ndefault_timezone = UTC\nfirstweekday = 0\n"
        "[default]\ndefault_calendar = work\n", encoding="utf-8")
    (config / "todoman" / "config.py").write_text(
        f"path = {str(mnt / '*')!r}\ndate_format = '%Y-%m-%d'\ntime_format = '%H:%M'\n"
        f"cache_path = {str(cache / 'todoman.sqlite3')!r}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALDAVFS_", "KHAL", "TODOMAN"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(config), XDG_DATA_HOME=str(data), XDG_CACHE_HOME=str(cache),
               TZ="UTC", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


@pytest.fixture
def tools(fresh_server: servers.Server, mount_factory: Callable[..., Mounted], tmp_path: Path) -> Tools:
    srv = fresh_server
    home_cal = srv.dataset["home"].url
    servers.put_item(srv, home_cal, "seeded.ics",
                     servers.make_event(SEEDED_UID, SEEDED_SUMMARY, dtstart="20260310T100000Z"))
    servers.put_item(srv, home_cal, "changing.ics",
                     servers.make_event(CHANGING_UID, "Before the change", dtstart="20260312T080000Z"))
    m = mount_factory(srv, ttl=TTL)
    return Tools(srv, m.path, write_configs(m.path, tmp_path / "home"), m.log)


def server_names(srv: servers.Server, cal_url: str) -> dict[str, str]:
    """{decoded name: href} of a calendar's members on the server."""
    return {unquote(urlsplit(h).path.rstrip("/").rsplit("/", 1)[-1]): h for h in servers.list_hrefs(srv, cal_url)}


def assert_no_leftovers(t: Tools, cal: str) -> None:
    """Only items and metadata files in the mount, only items on the server: no temp file stayed behind."""
    url = t.srv.dataset[cal].url
    on_server = set(server_names(t.srv, url))
    listed = set(os.listdir(t.mnt / cal)) - METADATA
    seeded_odd = {n for n in t.srv.dataset[cal].items if not n.endswith(".ics")}  # "no-extension" is shown + .ics
    assert {n for n in on_server - seeded_odd if not n.endswith(".ics")} == set(), on_server
    assert {n for n in listed if not n.endswith(".ics")} == set(), listed


def todo_by_summary(t: Tools, summary: str) -> dict[str, Any]:
    todos = t.todos("--status", "ANY")
    found = [td for td in todos if td["summary"] == summary]
    assert len(found) == 1, (summary, todos)
    return found[0]


# --- khal --------------------------------------------------------------------------------------------


def test_khal_list_shows_events(tools: Tools) -> None:
    assert tools.khal_list("2026-03-10", "1d") == [f"2026-03-10 10:00 {SEEDED_SUMMARY}"]
    week = tools.khal_list("2026-01-05", "1d")
    assert "2026-01-05 09:00 Team meeting" in week, week
    assert "2026-01-05 14:00 Weekly sync" in week, week
    assert any("Dentist" in line for line in tools.khal_list("2026-02-03", "1d"))


def test_khal_new_creates_event_on_server(tools: Tools) -> None:
    cal = tools.srv.dataset["work"]
    before = server_names(tools.srv, cal.url)
    listed_before = set(os.listdir(tools.mnt / "work"))
    tools.khal("new", "-a", "work", "2026-03-11", "09:00", "10:00", "Created by khal")

    after = server_names(tools.srv, cal.url)
    new = set(after) - set(before)
    assert len(new) == 1 and set(before) <= set(after), (before, after)
    (name,) = new
    body = servers.get_item(tools.srv, tools.srv.url(after[name]))
    assert b"SUMMARY:Created by khal" in body, body
    assert name.endswith(".ics")
    assert set(os.listdir(tools.mnt / "work")) == listed_before | {name}
    assert_no_leftovers(tools, "work")
    assert tools.khal_list("2026-03-11", "1d") == ["2026-03-11 09:00 Created by khal"]


def test_khal_sees_server_changes(tools: Tools) -> None:
    assert tools.khal_list("2026-03-12", "1d") == ["2026-03-12 08:00 Before the change"]
    srv, url = tools.srv, tools.srv.dataset["home"].url
    etag = servers.list_hrefs(srv, url)[server_names(srv, url)["changing.ics"]]
    servers.put_item(srv, url, "changing.ics",
                     servers.make_event(CHANGING_UID, "After the change", dtstart="20260312T080000Z"), etag=etag)
    time.sleep(SETTLE)
    assert tools.khal_list("2026-03-12", "1d") == ["2026-03-12 08:00 After the change"]


# --- todoman -----------------------------------------------------------------------------------------


def test_todo_list_shows_todos(tools: Tools) -> None:
    todos = tools.todos()
    summaries = {td["summary"] for td in todos}
    assert {"우유 사기", "Urgent", "Write report"} <= summaries, todos
    assert "Finished thing" not in summaries  # completed: hidden by default
    lists = {td["summary"]: td["list"] for td in todos}
    assert lists["우유 사기"] == tools.srv.dataset["tasks"].displayname


def test_todo_new_creates_todo_on_server(tools: Tools) -> None:
    cal = tools.srv.dataset["tasks"]
    before = server_names(tools.srv, cal.url)
    assert cal.displayname is not None
    tools.todo("new", "-l", cal.displayname, "Created by todoman")

    after = server_names(tools.srv, cal.url)
    new = set(after) - set(before)
    assert len(new) == 1 and set(before) <= set(after), (before, after)
    (name,) = new
    body = servers.get_item(tools.srv, tools.srv.url(after[name]))
    assert b"BEGIN:VTODO" in body and b"SUMMARY:Created by todoman" in body, body
    assert_no_leftovers(tools, "tasks")
    assert "Created by todoman" in {td["summary"] for td in tools.todos()}


def test_todo_done_writes_through(tools: Tools) -> None:
    cal = tools.srv.dataset["tasks"]
    todo = todo_by_summary(tools, "우유 사기")
    tools.todo("done", str(todo["id"]))

    body = servers.get_item(tools.srv, cal.items["buy milk.ics"].url)
    assert b"STATUS:COMPLETED" in body, body
    assert set(server_names(tools.srv, cal.url)) == set(cal.items)
    assert_no_leftovers(tools, "tasks")
    assert todo_by_summary(tools, "우유 사기")["completed"]


def test_todo_delete_removes_on_server(tools: Tools) -> None:
    cal = tools.srv.dataset["tasks"]
    todo = todo_by_summary(tools, "Urgent")
    tools.todo("delete", "--yes", str(todo["id"]))

    assert set(server_names(tools.srv, cal.url)) == set(cal.items) - {"prio.ics"}
    assert "prio.ics" not in os.listdir(tools.mnt / "tasks")
    assert "Urgent" not in {td["summary"] for td in tools.todos("--status", "ANY")}


def test_todo_move_between_lists(tools: Tools) -> None:
    """todoman moves a todo with rename(2) from one calendar folder into another."""
    tasks, work = tools.srv.dataset["tasks"], tools.srv.dataset["work"]
    assert work.displayname is not None
    todo = todo_by_summary(tools, "Urgent")
    tools.todo("move", "-l", work.displayname, str(todo["id"]))

    assert set(server_names(tools.srv, tasks.url)) == set(tasks.items) - {"prio.ics"}
    moved = server_names(tools.srv, work.url)
    assert "prio.ics" in moved, moved
    assert b"SUMMARY:Urgent" in servers.get_item(tools.srv, tools.srv.url(moved["prio.ics"]))
    assert todo_by_summary(tools, "Urgent")["list"] == work.displayname


def test_todo_sees_server_changes(tools: Tools) -> None:
    """todoman's cache keeps a file's todos until that file's st_mtime_ns changes."""
    assert todo_by_summary(tools, "Write report")
    srv, cal = tools.srv, tools.srv.dataset["work"]
    item = cal.items["todo-in-work.ics"]
    servers.put_item(srv, cal.url, item.name, servers.make_todo(item.uid, "Rewrite report", due="20260120T170000Z"),
                     etag=servers.list_hrefs(srv, cal.url)[item.href])
    time.sleep(SETTLE)
    summaries = {td["summary"] for td in tools.todos()}
    assert "Rewrite report" in summaries and "Write report" not in summaries, summaries
