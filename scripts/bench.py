#!/usr/bin/env python3
"""Benchmark caldavfs against a local Radicale and print a markdown table (issue 3).

Run through ``scripts/bench`` (sets up the venv). Starts Radicale on 127.0.0.1 with generated
data, warms it up, then for each of ``--runs`` runs measures the floors (what the server and a
local copy cost) and the caldavfs rows, each on the mount states the row names:

  mount A (fresh):  mount time, cold ``ls -l`` of the biggest calendar, ``cat`` of one uncached item
  mount B (fresh):  cold ``rsync -a``, repeat within the TTL, repeat after the TTL expired,
                    repeat after 10 changed / 2 added / 1 deleted on the server
  mount C (remount, cache kept): mount + ``rsync -a``, then ``grep -r`` over everything

Wall times are medians over the runs. Requests and bytes are deltas of the mount's own counters
(the ``user.caldavfs.stats`` xattr), cross-checked against Radicale's log; peak RSS is the
daemon's VmHWM. A fresh mount starts with an empty cache: the daemon's XDG_CACHE_HOME points into
the bench's temporary folder and is wiped before mounts A and B (``--keep-cache`` keeps it).
The bench also checks what it copies (backup == server, byte for byte; file counts) and prints
PASS/FAIL, then the targets of issue 3 with MET/MISSED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import quote, unquote, urljoin

import requests
from lxml import etree

from caldavfs import __version__ as caldavfs_version
from caldavfs.client import DEFAULT_BATCH
from caldavfs.radicale_server import LocalRadicale
from caldavfs.sample import generate, mutate

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
CALDAVFS = REPO / ".venv" / "bin" / "caldavfs"
STATS_XATTR = "user.caldavfs.stats"
GREP_PATTERN = "Zugspitze"
# Radicale's log: "[time] [pid/thread] [INFO] PROPFIND response status for '/x/' ... in 0.047 seconds ...".
RADICALE_LINE = re.compile(rb"\[[^\]]*\] \[([^\]]*)\] ")
RADICALE_TIME = re.compile(rb" response status for .* in ([\d.]+) seconds")
# What `caldavfs -d` logs for every request it sends (dav.py): "METHOD URL -> STATUS in T s, N bytes".
REQUEST_LINE = re.compile(rb"caldavfs: DEBUG: ([A-Z-]+) \S+ -> \d+ in [\d.]+ s, (\d+) bytes")
DAV = "{DAV:}"
CAL = "{urn:ietf:params:xml:ns:caldav}"

REPORT_QUERY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    b"<D:prop><D:getetag/><C:calendar-data/></D:prop>"
    b'<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>'
)
PROPFIND_LISTING = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontentlength/><D:getlastmodified/>'
    b"</D:prop></D:propfind>"
)
# Warm-up of the home-set's change tags: Radicale computes them on first ask (~20 s at 6,000 items).
PROPFIND_HOME_TAGS = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"><D:prop>'
    b"<D:resourcetype/><CS:getctag/><D:sync-token/></D:prop></D:propfind>"
)
PROPFIND_HOME = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"><D:prop>'
    b"<D:resourcetype/><D:displayname/><CS:getctag/></D:prop></D:propfind>"
)

# Row keys, in table order, with their labels.
ROWS: list[tuple[str, str]] = [
    ("mount", "fresh mount (`caldavfs mount` until live)"),
    ("ls", "cold `ls -l` of the biggest calendar"),
    ("cat", "`cat` of one uncached item (calendar listed)"),
    ("cold", "cold `rsync -a` of the whole mount"),
    ("repeat", "repeat `rsync -a`, nothing changed, within the TTL"),
    ("expired", "repeat `rsync -a`, nothing changed, TTL expired"),
    ("changed", "`rsync -a` after 10 changed, 2 added, 1 deleted"),
    ("remount", "unmount, mount again, `rsync -a` (time incl. mount)"),
    ("grep", "`grep -r` over everything (on the remount, after its rsync)"),
]


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- the server side: plain requests ----------------------------------------------------------


@dataclass
class Item:
    href: str
    etag: str
    data: bytes


@dataclass
class Listing:
    etag: str
    size: int | None
    mtime: int | None


def name_of(href: str) -> str:
    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


def crlf(text: str) -> bytes:
    """calendar-data as the server stores it: XML parsing turned CRLF into LF."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def multistatus(body: bytes) -> Iterator[tuple[str, dict[str, etree._Element]]]:
    root = etree.fromstring(body, etree.XMLParser(huge_tree=True))
    for resp in root.iter(f"{DAV}response"):
        href = resp.findtext(f"{DAV}href") or ""
        props: dict[str, etree._Element] = {}
        for propstat in resp.iter(f"{DAV}propstat"):
            if " 200 " not in (propstat.findtext(f"{DAV}status") or ""):
                continue
            prop = propstat.find(f"{DAV}prop")
            if prop is not None:
                for p in prop:
                    props[str(p.tag)] = p
        yield href, props


class Server:
    """Direct HTTP to Radicale, for the floors, the changes and the checks."""

    def __init__(self, radicale: LocalRadicale) -> None:
        self.radicale = radicale
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.auth = (radicale.username, radicale.password)
        # The floors ask what caldavfs asks of a server on this machine: uncompressed answers
        # (dav.on_this_machine), which cost Radicale a fifth less than gzip.
        self.http.headers["Accept-Encoding"] = "identity"
        self.bytes = 0

    def _request(self, method: str, url: str, body: bytes | None = None, depth: str | None = None,
                 headers: dict[str, str] | None = None) -> requests.Response:
        h = dict(headers or {})
        if depth is not None:
            h["Depth"] = depth
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/xml; charset=utf-8"
        resp = self.http.request(method, url, data=body, headers=h, timeout=600)
        self.bytes += len(resp.content)
        return resp

    def report(self, slug: str) -> dict[str, Item]:
        resp = self._request("REPORT", self.radicale.calendar_url(slug), REPORT_QUERY, depth="1")
        if resp.status_code != 207:
            raise RuntimeError(f"REPORT {slug}: {resp.status_code}")
        items: dict[str, Item] = {}
        for href, props in multistatus(resp.content):
            data = props.get(f"{CAL}calendar-data")
            if data is None or data.text is None:
                continue
            items[name_of(href)] = Item(href, props[f"{DAV}getetag"].text or "", crlf(data.text))
        return items

    def listing(self, slug: str) -> dict[str, Listing]:
        resp = self._request("PROPFIND", self.radicale.calendar_url(slug), PROPFIND_LISTING, depth="1")
        if resp.status_code != 207:
            raise RuntimeError(f"PROPFIND {slug}: {resp.status_code}")
        out: dict[str, Listing] = {}
        for href, props in multistatus(resp.content):
            if f"{DAV}getetag" not in props:
                continue  # the collection itself
            size = props.get(f"{DAV}getcontentlength")
            modified = props.get(f"{DAV}getlastmodified")
            out[name_of(href)] = Listing(
                props[f"{DAV}getetag"].text or "",
                int(size.text) if size is not None and size.text else None,
                int(parsedate_to_datetime(modified.text).timestamp())
                if modified is not None and modified.text else None,
            )
        return out

    def home(self, body: bytes = PROPFIND_HOME) -> None:
        resp = self._request("PROPFIND", self.radicale.home_url, body, depth="1")
        if resp.status_code != 207:
            raise RuntimeError(f"PROPFIND home: {resp.status_code}")

    def item_url(self, slug: str, name: str) -> str:
        return urljoin(self.radicale.calendar_url(slug), quote(name))

    def get(self, slug: str, name: str) -> bytes:
        resp = self._request("GET", self.item_url(slug, name))
        if resp.status_code != 200:
            raise RuntimeError(f"GET {slug}/{name}: {resp.status_code}")
        return resp.content

    def put(self, slug: str, name: str, data: bytes, etag: str | None) -> None:
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        headers.update({"If-Match": etag} if etag else {"If-None-Match": "*"})
        resp = self._request("PUT", self.item_url(slug, name), data, headers=headers)
        if resp.status_code not in (200, 201, 204):
            raise RuntimeError(f"PUT {slug}/{name}: {resp.status_code} {resp.text[:200]}")

    def delete(self, slug: str, name: str, etag: str) -> None:
        resp = self._request("DELETE", self.item_url(slug, name), headers={"If-Match": etag})
        if resp.status_code not in (200, 204):
            raise RuntimeError(f"DELETE {slug}/{name}: {resp.status_code}")

    def count_log(self, offset: int) -> tuple[int, float]:
        """caldavfs requests Radicale logged since `offset`, and the seconds Radicale says it spent on them."""
        with open(self.radicale.log_path, "rb") as f:
            f.seek(offset)
            text = f.read()
        threads: set[bytes] = set()
        n, seconds = 0, 0.0
        for line in text.splitlines():
            m = RADICALE_LINE.match(line)
            if m is None:
                continue
            if b" request for " in line and b"using 'caldavfs/" in line:
                n += 1
                threads.add(m.group(1))
            elif m.group(1) in threads and (t := RADICALE_TIME.search(line)):
                seconds += float(t.group(1))
        return n, seconds

    def log_size(self) -> int:
        return self.radicale.log_path.stat().st_size


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    requests: int
    server_log: int
    received: int
    rss_kb: int
    server_s: float = 0.0
    methods: dict[str, int] = field(default_factory=dict)


@dataclass
class Results:
    rows: dict[str, list[Sample]] = field(default_factory=dict)
    floors: dict[str, list[float]] = field(default_factory=dict)
    floor_bytes: dict[str, int] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add_floor(self, key: str, seconds: float) -> None:
        self.floors.setdefault(key, []).append(seconds)

    def floor(self, key: str) -> float:
        return statistics.median(self.floors[key])

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, ok, detail))
        say(f"check {'PASS' if ok else 'FAIL'}: {name}{' (' + detail + ')' if detail else ''}")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class Copied:
    files: list[str]
    deleted: list[str]

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.files), len(self.deleted)

    def __str__(self) -> str:
        text = f"{len(self.files)} copied, {len(self.deleted)} deleted"
        if 0 < len(self.files) <= 20:
            text += ": " + ", ".join(self.files[:5]) + (" ..." if len(self.files) > 5 else "")
        return text


def rsync(src: Path, dst: Path) -> Copied:
    """`rsync -a --delete --itemize-changes src/ dst/`: the files copied and deleted."""
    done = subprocess.run(["rsync", "-a", "--delete", "--itemize-changes", f"{src}/", f"{dst}/"],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rsync {src} -> {dst} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return Copied([x.split(" ", 1)[1] for x in lines if x.startswith(">f")],
                  [x.split(" ", 1)[1].strip() for x in lines if x.startswith("*deleting")])


def grep_files(root: Path) -> set[str]:
    done = subprocess.run(["grep", "-rl", GREP_PATTERN, str(root)], capture_output=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"grep -r {root} failed: {done.stderr.decode()[-300:]}")
    return {os.path.relpath(p, root) for p in done.stdout.decode("utf-8", "replace").splitlines()}


def counter(stats: dict[str, object], key: str) -> int:
    value = stats.get(key, 0)
    return int(value) if isinstance(value, (int, float)) else 0


def logged_requests(text: bytes, methods: Counter[str] | None = None) -> tuple[int, int]:
    """(requests, bytes received) in a stretch of a `caldavfs -d` log; counts methods into `methods`."""
    n = got = 0
    for m in REQUEST_LINE.finditer(text):
        n += 1
        got += int(m.group(2))
        if methods is not None:
            methods[m.group(1).decode()] += 1
    return n, got


def is_mounted(path: Path) -> bool:
    """From /proc/self/mounts: a stat of the mount root would make caldavfs do work (and requests)."""
    want = str(path)
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == want:
                return True
    return False


def vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except OSError:
        pass
    return "zombie"


class Mounter:
    """Mounts caldavfs on one mount point, knows the daemon's PID, always unmounts."""

    def __init__(self, radicale: LocalRadicale, work: Path, ttl: float, extra: list[str],
                 xdg_cache: Path) -> None:
        self.radicale = radicale
        self.mnt = work / "mnt"
        self.logs = work / "logs"
        self.ttl = ttl
        self.extra = extra
        self.xdg_cache = xdg_cache
        self.pid: int | None = None
        self.count = 0
        self.log_path: Path | None = None
        self.log_offset = 0
        # Requests of the current mount so far, by our count of its -d log (the parent's stderr included).
        self.requests = 0
        self.received = 0
        self.methods: Counter[str] = Counter()
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    @property
    def mounted(self) -> bool:
        return is_mounted(self.mnt)

    def read_log(self) -> tuple[int, int]:
        """Requests and bytes the daemon logged since the last call; kept in self.requests/received."""
        if self.log_path is None or not self.log_path.exists():
            return 0, 0
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            text = f.read()
        # Only whole lines: the daemon may be halfway through one.
        end = text.rfind(b"\n") + 1
        self.log_offset += end
        n, got = logged_requests(text[:end], self.methods)
        self.requests += n
        self.received += got
        return n, got

    def mount(self) -> float:
        if self.mounted:
            raise RuntimeError(f"{self.mnt} is still mounted")
        self.count += 1
        self.log_path = self.logs / f"mount-{self.count}.log"
        self.log_offset = 0
        env = dict(os.environ, CALDAVFS_PASSWORD=self.radicale.password, XDG_CACHE_HOME=str(self.xdg_cache))
        cmd = [str(CALDAVFS), "mount", self.radicale.url, str(self.mnt), "--username", self.radicale.username,
               "--cache-ttl", f"{self.ttl:g}", "--log-file", str(self.log_path), "-d", *self.extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        seconds = time.perf_counter() - t0
        self.pid = self._find_daemon()
        if done.returncode != 0 or not self.mounted:
            raise RuntimeError(f"caldavfs mount failed ({done.returncode}): {done.stderr.decode()[-800:]}")
        if self.pid is None:
            raise RuntimeError("mounted, but no caldavfs process has the mount point in its argv")
        # Discovery ran in the parent, before the fork: its requests are on its stderr.
        self.methods = Counter()
        self.requests, self.received = logged_requests(done.stderr, self.methods)
        return seconds

    def _find_daemon(self) -> int | None:
        """The process whose argv is `caldavfs mount ... <our mount point> ...` (the forked server)."""
        want = str(self.mnt).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if want in argv and b"mount" in argv and any(a.endswith(b"caldavfs") for a in argv[:2]):
                return int(entry)
        return None

    def stats(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(os.getxattr(self.mnt, STATS_XATTR))
        return data

    def unmount(self) -> None:
        if self.mounted:
            for attempt in range(20):
                done = subprocess.run(["fusermount", "-u", str(self.mnt)], capture_output=True, check=False)
                if done.returncode == 0 or not self.mounted:
                    break
                time.sleep(0.25 if attempt < 19 else 0)
            if self.mounted:
                say(f"{self.mnt} busy: lazy unmount")
                subprocess.run(["fusermount", "-uz", str(self.mnt)], check=False)
        pid, self.pid = self.pid, None
        if pid is None:
            return
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_alive(pid):
                return
            say(f"caldavfs daemon {pid} still running after unmount: {sig.name}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(1)


# --- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.radicale = LocalRadicale(work / "storage", username="bench")
        self.server = Server(self.radicale)
        self.xdg_cache = work / "xdg-cache"
        self.mounter = Mounter(self.radicale, work, args.ttl, shlex.split(args.caldavfs_args), self.xdg_cache)
        self.results = Results()
        self.slugs: list[str] = []
        self.big = ""
        self.second = ""
        self.items_total = 0
        self.data_bytes = 0
        self.warm_up_s = 0.0
        self.ttl_notes: list[str] = []
        self.load_start = os.getloadavg()[0]

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        t0 = time.perf_counter()
        cals = generate(items=self.args.items, calendars=self.args.calendars, seed=0)
        self.radicale.seed(cals)
        say(f"seeded {sum(len(c.items) for c in cals)} items in {len(cals)} calendars "
            f"({', '.join(f'{c.slug}: {len(c.items)}' for c in cals)}) in {time.perf_counter() - t0:.1f} s")
        self.slugs = [c.slug for c in cals]
        by_size = sorted(cals, key=lambda c: len(c.items), reverse=True)
        self.big = by_size[0].slug
        events = [c.slug for c in by_size[1:] if "VEVENT" in c.components]
        self.second = events[0] if events else by_size[min(1, len(by_size) - 1)].slug
        self.radicale.start()
        say(f"Radicale at {self.radicale.url}; warming up (PROPFIND Depth 1 per calendar, then the home-set) ...")
        self.warm_up_s = timed(self.radicale.warm_up)
        self.warm_up_s += timed(lambda: self.server.home(PROPFIND_HOME_TAGS))
        say(f"warm-up took {self.warm_up_s:.1f} s")

    def wipe_cache(self) -> None:
        if not self.args.keep_cache:
            shutil.rmtree(self.xdg_cache, ignore_errors=True)
        self.xdg_cache.mkdir(parents=True, exist_ok=True)

    # -- floors -----------------------------------------------------------------------------

    def floors(self, run: int) -> tuple[dict[str, dict[str, Item]], dict[str, dict[str, Listing]]]:
        r = self.results
        b0 = self.server.bytes
        t0 = time.perf_counter()
        data = {slug: self.server.report(slug) for slug in self.slugs}
        r.add_floor("report", time.perf_counter() - t0)
        r.floor_bytes["report"] = self.server.bytes - b0
        b0 = self.server.bytes
        listings: dict[str, dict[str, Listing]] = {}
        total = 0.0
        for slug in self.slugs:
            t = time.perf_counter()
            listings[slug] = self.server.listing(slug)
            dt = time.perf_counter() - t
            total += dt
            if slug == self.big:
                r.add_floor("propfind_big", dt)
        r.add_floor("propfind", total)
        r.floor_bytes["propfind"] = self.server.bytes - b0
        r.add_floor("home", timed(self.server.home))
        some = sorted(data[self.big])[len(data[self.big]) // 2]
        r.add_floor("get", timed(lambda: self.server.get(self.big, some)))
        self.items_total = sum(len(v) for v in data.values())
        self.data_bytes = sum(len(i.data) for v in data.values() for i in v.values())

        # The same bytes on local disk, with the server's mtimes; rsync them into an empty folder.
        src, dst = self.work / "floor-src", self.work / f"floor-dst-{run}"
        shutil.rmtree(src, ignore_errors=True)
        for slug, items in data.items():
            (src / slug).mkdir(parents=True)
            for name, item in items.items():
                path = src / slug / name
                path.write_bytes(item.data)
                mtime = listings[slug].get(name, Listing("", None, None)).mtime
                if mtime is not None:
                    os.utime(path, (mtime, mtime))
        os.sync()  # the files just written are not still being written back while rsync is timed
        r.add_floor("rsync", timed(lambda: rsync(src, dst)))
        r.add_floor("rsync_noop", timed(lambda: rsync(src, dst)))
        r.add_floor("grep", timed(lambda: grep_files(src)))
        shutil.rmtree(dst, ignore_errors=True)
        return data, listings

    # -- rows -----------------------------------------------------------------------------

    def row(self, key: str, fn: Callable[[], T], *, fresh_counter: bool = False) -> T:
        """Run `fn` as row `key`; fresh_counter: `fn` mounts, so the counters start at zero."""
        m = self.mounter
        if not fresh_counter:
            stray, _ = m.read_log()
            if stray:
                say(f"note: {stray} requests between rows, before {key}")
        before = (0, 0) if fresh_counter else (m.requests, m.received)
        methods_before = Counter() if fresh_counter else Counter(m.methods)
        log_offset = self.server.log_size()
        os.sync()  # as before the local floors: no earlier writes are written back during the row
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        m.read_log()
        logged, server_s = self.server.count_log(log_offset)
        assert m.pid is not None
        sample = Sample(seconds, m.requests - before[0], logged, m.received - before[1], vm_hwm_kb(m.pid),
                        server_s, dict(m.methods - methods_before))
        self.results.rows.setdefault(key, []).append(sample)
        say(f"{key}: {seconds:.2f} s, {sample.requests} requests {sample.methods} (server log {logged}), "
            f"{sample.received / 1e6:.2f} MB, server {server_s:.2f} s, peak RSS {sample.rss_kb / 1024:.0f} MB")
        return out

    def unmount_checked(self, label: str) -> None:
        """Cross-check our count of the -d log with the daemon's own counter, then unmount."""
        m = self.mounter
        m.read_log()
        stats = m.stats()  # a getxattr may itself cause requests (root attributes): read the log again
        m.read_log()
        own, ours = counter(stats, "requests"), m.requests
        self.results.check(f"{label}: the `{STATS_XATTR}` request counter agrees with the -d log",
                           own == ours, f"xattr {own}, log {ours}")
        m.unmount()

    def compare_backup(self, backup: Path, data: dict[str, dict[str, Item]], label: str) -> None:
        missing = extra = differ = 0
        for slug, items in data.items():
            have = {p.name for p in (backup / slug).glob("*.ics")} if (backup / slug).is_dir() else set()
            missing += len(set(items) - have)
            extra += len(have - set(items))
            differ += sum(1 for n in set(items) & have if (backup / slug / n).read_bytes() != items[n].data)
        self.results.check(f"{label}: backup matches the server's calendar-query data byte for byte",
                           missing == extra == differ == 0,
                           f"{self.items_total_of(data)} items; {missing} missing, {extra} extra, {differ} differ")

    @staticmethod
    def items_total_of(data: dict[str, dict[str, Item]]) -> int:
        return sum(len(v) for v in data.values())

    def compare_get_sample(self, backup: Path, data: dict[str, dict[str, Item]], label: str, n: int = 50) -> None:
        pool = [(slug, name) for slug, items in data.items() for name in items]
        sample = random.Random(len(pool)).sample(pool, min(n, len(pool)))
        bad = [f"{s}/{x}" for s, x in sample
               if not (backup / s / x).exists() or self.server.get(s, x) != (backup / s / x).read_bytes()]
        self.results.check(f"{label}: {len(sample)} sampled items equal a GET byte for byte", not bad,
                           ", ".join(bad[:3]))

    def run(self, run: int) -> None:
        say(f"--- run {run + 1}/{self.args.runs}: floors")
        data, listings = self.floors(run)
        m, r = self.mounter, self.results
        big = self.mounter.mnt / self.big

        # Mount A: mount time, cold ls -l, cat of an uncached item.
        self.wipe_cache()
        say("mount A (fresh): mount, ls -l, cat")
        self.row("mount", m.mount, fresh_counter=True)
        self.row("ls", lambda: subprocess.run(["ls", "-l", str(big)], stdout=subprocess.DEVNULL, check=True))
        cat_name = sorted(n for n in data[self.big] if not n.startswith("bench-"))[-1]
        out = self.row("cat", lambda: subprocess.run(["cat", str(big / cat_name)], capture_output=True,
                                                     check=True).stdout)
        if run == 0:
            r.check("cat: bytes equal a GET of the item", out == self.server.get(self.big, cat_name))
        self.unmount_checked(f"run {run + 1} mount A")

        # Mount B: cold rsync, repeats, the change round.
        self.wipe_cache()
        say("mount B (fresh): cold rsync, repeats, changes")
        backup = self.work / f"backup-{run}"
        backup.mkdir()
        mounted_at = time.monotonic()
        self.row("mount", m.mount, fresh_counter=True)
        copied = self.row("cold", lambda: rsync(m.mnt, backup))
        self.compare_backup(backup, data, f"run {run + 1} cold rsync")
        if run == 0:
            self.compare_get_sample(backup, data, "cold rsync")
            wrong = sum(1 for slug, ls in listings.items() for name, li in ls.items()
                        if li.mtime is not None and (backup / slug / name).exists()
                        and int((backup / slug / name).stat().st_mtime) != li.mtime)
            r.check("cold rsync: every item keeps the server's getlastmodified as its mtime", wrong == 0,
                    f"{wrong} differ")
            files = sum(1 for p in backup.rglob("*") if p.is_file())
            r.check("cold rsync: every file of the backup was copied once",
                    copied.counts == (files, 0), f"{copied}; {files} files in the backup")

        copied = self.row("repeat", lambda: rsync(m.mnt, backup))
        elapsed = time.monotonic() - mounted_at
        within = elapsed < self.mounter.ttl
        if not within:
            self.ttl_notes.append(f"run {run + 1}: the within-TTL repeat ended {elapsed:.1f} s after the mount, "
                                  f"past the TTL of {self.mounter.ttl:g} s: raise --ttl")
        r.check(f"run {run + 1} repeat within TTL: nothing copied, and it really ran within the TTL",
                copied.counts == (0, 0) and within, f"{copied}, {elapsed:.1f} s after mount")
        last_listing = time.monotonic()

        self._sleep_until(last_listing + self.mounter.ttl + 1, "TTL expiry")
        copied = self.row("expired", lambda: rsync(m.mnt, backup))
        r.check(f"run {run + 1} repeat after TTL: nothing copied", copied.counts == (0, 0), f"{copied}")
        last_listing = time.monotonic()

        deleted = self.change(run, data)
        self._sleep_until(last_listing + self.mounter.ttl + 1, "TTL expiry after the changes")
        copied = self.row("changed", lambda: rsync(m.mnt, backup))
        r.check(f"run {run + 1} after changes: exactly 12 files copied and 1 deleted (--delete)",
                copied.counts == (12, 1), f"{copied}")
        now = {slug: self.server.report(slug) for slug in self.slugs}
        self.compare_backup(backup, now, f"run {run + 1} after changes")
        r.check(f"run {run + 1} after changes: the deleted item is gone from the backup",
                not (backup / deleted[0] / deleted[1]).exists(), "/".join(deleted))
        self.unmount_checked(f"run {run + 1} mount B")

        # Mount C: remount with the cache kept, rsync into the same backup, then grep.
        say("mount C (remount): rsync, grep")
        copied = self.row("remount", lambda: (m.mount(), rsync(m.mnt, backup))[1], fresh_counter=True)
        r.check(f"run {run + 1} remount: nothing copied", copied.counts == (0, 0), f"{copied}")
        found = self.row("grep", lambda: grep_files(m.mnt))
        expected = grep_files(backup)
        r.check(f"run {run + 1} grep -r: same files as grep over the backup", found == expected,
                f"{len(expected)} files" if found == expected else f"differ: {sorted(found ^ expected)[:3]}")
        self.unmount_checked(f"run {run + 1} mount C")
        shutil.rmtree(backup, ignore_errors=True)

    @staticmethod
    def _sleep_until(deadline: float, why: str) -> None:
        wait = deadline - time.monotonic()
        if wait > 0:
            say(f"waiting {wait:.1f} s for {why}")
            time.sleep(wait)

    def change(self, run: int, data: dict[str, dict[str, Item]]) -> tuple[str, str]:
        """10 changed (5 + 5), 2 added (biggest calendar), 1 deleted (second calendar), If-Match."""
        rng = random.Random(1000 + run)
        a = sorted(n for n in data[self.big] if not n.startswith("bench-"))[:-1]  # keep the cat item
        b = sorted(data[self.second])
        changed_a = rng.sample(a, 5)
        changed_b = rng.sample(b, 6)
        doomed = changed_b.pop()
        for slug, names in ((self.big, changed_a), (self.second, changed_b)):
            for name in names:
                item = data[slug][name]
                self.server.put(slug, name, mutate(item.data, run + 1), item.etag)
        for i in range(2):
            base = data[self.big][a[i]]
            old_uid, new_uid = a[i][: -len(".ics")], f"bench-{run + 1}-{i}-{rng.getrandbits(32):08x}"
            self.server.put(self.big, f"{new_uid}.ics", base.data.replace(old_uid.encode(), new_uid.encode()), None)
        self.server.delete(self.second, doomed, data[self.second][doomed].etag)
        say(f"changed 10 items, added 2 in {self.big}, deleted {self.second}/{doomed}")
        return self.second, doomed

    # -- report ---------------------------------------------------------------------------

    def report(self) -> str:
        r = self.results
        f = r.floor
        rsync_floor = f("rsync")
        floors: dict[str, tuple[str, float]] = {
            "ls": ("1 PROPFIND Depth 1 (that calendar)", f("propfind_big")),
            "cat": ("1 GET", f("get")),
            "cold": ("REPORT floor + local rsync", f("report") + rsync_floor),
            "repeat": ("local rsync", rsync_floor),
            "expired": ("local rsync + home-set PROPFIND", rsync_floor + f("home")),
            "changed": ("local rsync + home-set PROPFIND", rsync_floor + f("home")),
            "remount": ("local rsync + home-set PROPFIND", rsync_floor + f("home")),
            "grep": ("local `grep -r`", f("grep")),
        }
        out: list[str] = []
        a = self.args
        out.append(f"## caldavfs {caldavfs_version} benchmark: {self.items_total} items in {len(self.slugs)} "
                   f"calendars on Radicale (127.0.0.1), {self.data_bytes / 1e6:.1f} MB of calendar data")
        out.append("")
        out.append(f"{a.runs} run(s), medians; cache TTL {self.mounter.ttl:g} s; biggest calendar `{self.big}` "
                   f"({len(list((self.work / 'floor-src' / self.big).glob('*.ics')))} items at the last run); "
                   f"caldavfs args: `{a.caldavfs_args or '(none)'}`; disk cache "
                   f"{'kept between mounts' if a.keep_cache else 'wiped before each fresh mount'}. "
                   f"Server warmed up before timing (one PROPFIND Depth 1 per calendar, one on the home-set with "
                   f"getctag and sync-token: {self.warm_up_s:.1f} s). "
                   f"{os.cpu_count()} CPUs; load average {self.load_start:.1f} at the start, "
                   f"{os.getloadavg()[0]:.1f} at the end (other work on the machine skews the times).")
        out.append("")
        out.append("| row | wall s | server s | floor | floor s | ratio | requests | server log | methods (last run) "
                   "| received | peak RSS |")
        out.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
        for key, label in ROWS:
            samples = r.rows.get(key)
            if not samples:
                continue
            secs = statistics.median(s.seconds for s in samples)
            fl = floors.get(key)
            out.append("| " + " | ".join([
                label, f"{secs:.2f}", f"{statistics.median(s.server_s for s in samples):.2f}",
                fl[0] if fl else "-", f"{fl[1]:.2f}" if fl else "-",
                f"{secs / fl[1]:.1f} x" if fl and fl[1] > 0 else "-",
                _spread([s.requests for s in samples]), _spread([s.server_log for s in samples]),
                ", ".join(f"{k} {v}" for k, v in sorted(samples[-1].methods.items())) or "-",
                _mb(statistics.median(s.received for s in samples)),
                f"{max(s.rss_kb for s in samples) / 1024:.0f} MB",
            ]) + " |")
        out.append("")
        out.append("Requests and bytes: counted from the mount's `-d` log over the row (checked against the "
                   "`user.caldavfs.stats` counter at each unmount; reading that xattr during a row would itself "
                   "make caldavfs stat the root); the mount and remount rows count the new mount from zero "
                   "(discovery included). Two mounts per run are fresh, so the mount row has 2 samples a run. "
                   "Server log: "
                   "caldavfs requests in Radicale's log over the same span; server s: the time Radicale's log says "
                   "it spent answering them (median). Peak RSS: the daemon's VmHWM "
                   "since its mount (max over runs).")
        out.append("")
        out.append("### Floors (same run, medians)")
        out.append("")
        out.append("The floors' requests ask for uncompressed answers, as caldavfs does of a server on this machine.")
        out.append("")
        out.append("| floor | s | requests | received |")
        out.append("| --- | ---: | ---: | ---: |")
        n = len(self.slugs)
        for key, label, reqs, got in [
            ("report", "REPORT calendar-query with calendar-data, one per calendar, sequential", str(n),
             _mb(r.floor_bytes.get("report", 0))),
            ("propfind", "PROPFIND Depth 1 (getetag, getcontentlength, getlastmodified), one per calendar",
             str(n), _mb(r.floor_bytes.get("propfind", 0))),
            ("propfind_big", f"the same, `{self.big}` only", "1", "-"),
            ("home", "PROPFIND Depth 1 on the home-set (resourcetype, displayname, getctag)", "1", "-"),
            ("get", "GET of one item", "1", "-"),
            ("rsync", "local `rsync -a` of the same files into an empty folder", "0", "-"),
            ("rsync_noop", "local `rsync -a` again, nothing changed", "0", "-"),
            ("grep", f"local `grep -rl {GREP_PATTERN}` over the same files", "0", "-"),
        ]:
            out.append(f"| {label} | {f(key):.2f} | {reqs} | {got} |")
        out.append("")
        out.append("### Checks")
        out.append("")
        for name, ok, detail in r.checks:
            out.append(f"- {'PASS' if ok else 'FAIL'}: {name}{' (' + detail + ')' if detail else ''}")
        for note in self.ttl_notes:
            out.append(f"- NOTE: {note}")
        out.append("")
        out.append("### Targets (issue 3)")
        out.append("")
        for name, ok, detail in self.targets(floors):
            out.append(f"- {'MET' if ok else 'MISSED'}: {name} ({detail})")
        return "\n".join(out)

    def targets(self, floors: dict[str, tuple[str, float]]) -> list[tuple[str, bool, str]]:
        r = self.results
        med: dict[str, Sample] = {}
        for key, samples in r.rows.items():
            med[key] = Sample(statistics.median(s.seconds for s in samples), max(s.requests for s in samples),
                              max(s.server_log for s in samples),
                              int(statistics.median(s.received for s in samples)), max(s.rss_kb for s in samples))
        n = len(self.slugs)
        batch = DEFAULT_BATCH
        rsync_floor, home = r.floor("rsync"), r.floor("home")
        out: list[tuple[str, bool, str]] = []

        def t(name: str, ok: bool, detail: str) -> None:
            out.append((name, ok, detail))

        if "cold" in med:
            c = med["cold"]
            limit = 2 * floors["cold"][1]
            t("cold rsync time <= 2 x (REPORT floor + local rsync)", c.seconds <= limit,
              f"{c.seconds:.2f} s vs {limit:.2f} s: {c.seconds / limit:.1f} x the target")
            cap = 4 + 2 * n + math.ceil(self.items_total / batch)
            t(f"cold rsync requests <= 4 + 2 x calendars + ceil(items / {batch})", c.requests <= cap,
              f"{c.requests} vs {cap}")
        if "repeat" in med:
            c = med["repeat"]
            t("repeat within TTL: 0 requests", c.requests == 0, f"{c.requests}")
            t("repeat within TTL <= 2 x local rsync", c.seconds <= 2 * rsync_floor,
              f"{c.seconds:.2f} s vs {2 * rsync_floor:.2f} s")
        if "expired" in med:
            c = med["expired"]
            t("repeat after TTL: 1 request (the home-set)", c.requests <= 1, f"{c.requests}")
            limit = 2 * rsync_floor + home
            t("repeat after TTL <= 2 x local rsync + the home-set request", c.seconds <= limit,
              f"{c.seconds:.2f} s vs {limit:.2f} s")
        if "changed" in med:
            c = med["changed"]
            t("after changes: requests <= 1 + 2 per changed calendar (2 changed)", c.requests <= 5,
              f"{c.requests} vs 5")
        if "remount" in med:
            c = med["remount"]
            t("remount + rsync: requests <= 3 + calendars", c.requests <= 3 + n, f"{c.requests} vs {3 + n}")
            t("remount + rsync: no calendar data downloaded again", c.received < self.data_bytes / 10,
              f"received {_mb(c.received)} vs {_mb(self.data_bytes)} of data")
        if "ls" in med:
            c = med["ls"]
            t("cold ls -l of the biggest calendar: <= 3 requests", c.requests <= 3, f"{c.requests}")
        peak = max((s.rss_kb for samples in r.rows.values() for s in samples), default=0) / 1024
        cap_mb = 100 if self.items_total <= 6500 else 150
        t(f"peak RSS <= {cap_mb} MB", peak <= cap_mb, f"{peak:.0f} MB at {self.items_total} items")
        return out


def _spread(values: list[int]) -> str:
    med = statistics.median(values)
    text = f"{med:g}"
    if min(values) != max(values):
        text += f" ({min(values)}-{max(values)})"
    return text


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=6000, help="calendar objects in total (default 6000)")
    p.add_argument("--calendars", type=int, default=4, help="calendars (default 4)")
    p.add_argument("--runs", type=int, default=3, help="runs; the table shows medians (default 3)")
    p.add_argument("--ttl", type=float, default=30.0,
                   help="caldavfs --cache-ttl for every mount (default 30); the bench waits it out twice a run")
    p.add_argument("--caldavfs-args", default="", metavar="ARGS",
                   help='extra arguments for `caldavfs mount`, e.g. "--cache-dir /tmp/c" or "-v"')
    p.add_argument("--keep-cache", action="store_true",
                   help="don't wipe the daemon's XDG cache folder before the fresh mounts (warm cold rows)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    args = p.parse_args(argv)
    if args.items < 20 or args.runs < 1 or args.calendars < 2:
        p.error("need --items >= 20, --runs >= 1, --calendars >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("rsync", "fusermount", "grep"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found", file=sys.stderr)
            return 2
    if not CALDAVFS.exists():
        print(f"bench: {CALDAVFS} missing: run scripts/bench (it sets up the venv)", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    work = Path(tempfile.mkdtemp(prefix="caldavfs-bench-"))
    bench = Bench(args, work)
    started = time.perf_counter()
    try:
        bench.setup()
        for run in range(args.runs):
            bench.run(run)
        text = bench.report()
        print(text, flush=True)
        say(f"total {time.perf_counter() - started:.0f} s")
        return 0 if all(ok for _, ok, _ in bench.results.checks) else 1
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the cleanup even on a second Ctrl-C
        try:
            bench.mounter.unmount()
        except Exception as exc:  # keep cleaning up
            say(f"unmount failed: {exc!r}")
        bench.radicale.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
