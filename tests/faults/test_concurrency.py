"""8 readers at once (find | xargs -P8 cat, and a thread pool doing open+fstat+read) while the server
changes items and the listing refreshes: no wrong bytes, no size that disagrees with the bytes read from
the same fd, no deadlock, no traceback in the daemon's log."""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import servers
from tests.mount.conftest import mount

pytestmark = [pytest.mark.mount, pytest.mark.integration]

ITEMS = 100
RUN_FOR = 10.0
BOUND = 60.0
_PIECE = re.compile(rb"BEGIN:VCALENDAR\r\n.*?END:VCALENDAR\r\n", re.S)


def _event(n: int, version: int) -> bytes:
    # A different length on every version: padding grows and shrinks.
    return servers.make_event(f"c{n}@caldavfs.test", f"Item {n} v{version}",
                              description="d" * ((version * 37 + n) % 400))


def _valid(data: bytes) -> bool:
    return (data.startswith(b"BEGIN:VCALENDAR\r\n") and data.endswith(b"END:VCALENDAR\r\n")
            and data.count(b"BEGIN:VCALENDAR") == 1 and data.count(b"END:VCALENDAR") == 1)


def test_parallel_readers_while_server_changes(tmp_path: Path) -> None:
    server = servers.start_radicale(tmp_path / "radicale")
    try:
        cal = servers.mkcalendar(server, "load")
        etags = {n: servers.put_item(server, cal, f"c{n}.ics", _event(n, 0)) for n in range(ITEMS)}
        with mount(server, ttl=1, workdir=tmp_path / "m") as m:
            folder = m.path / "load"
            assert len([n for n in os.listdir(folder) if n.endswith(".ics")]) == ITEMS
            stop = threading.Event()
            problems: list[str] = []
            counts = {"xargs": 0, "fd": 0, "changes": 0}
            lock = threading.Lock()
            recent: list[int] = [0]  # recently changed items: where a stale size would show

            def problem(text: str) -> None:
                with lock:
                    problems.append(text)

            def changer() -> None:
                version = 0
                rnd = random.Random(4)
                while not stop.is_set():
                    version += 1
                    n = rnd.randrange(ITEMS)
                    try:
                        etags[n] = servers.put_item(server, cal, f"c{n}.ics", _event(n, version), etag=etags[n])
                        counts["changes"] += 1
                        recent[:] = [n, *recent[:3]]
                    except Exception as exc:  # noqa: BLE001 - reported as a test problem
                        problem(f"changer: {exc!r}")
                    stop.wait(0.3)

            def xargs_loop() -> None:
                script = f"set -o pipefail; find {folder} -name '*.ics' -print0 | xargs -0 -P8 -n 10 cat"
                while not stop.is_set():
                    try:
                        done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=BOUND)
                    except subprocess.TimeoutExpired:
                        problem("find | xargs -P8 cat hung")
                        return
                    if done.returncode != 0:
                        problem(f"xargs cat exited {done.returncode}: {done.stderr.decode(errors='replace')[:500]}")
                        continue
                    out = done.stdout
                    pieces = _PIECE.findall(out)
                    if b"".join(pieces) != out or len(pieces) != ITEMS:
                        problem(
                            f"xargs cat gave {len(pieces)} whole objects for {ITEMS} files, "
                            f"{len(out) - len(b''.join(pieces))} stray bytes (a file cut short merges with the next)"
                        )
                    with lock:
                        counts["xargs"] += 1

            def fd_reader(seed: int) -> None:
                rnd = random.Random(seed)
                while not stop.is_set():
                    n = rnd.choice(recent) if rnd.random() < 0.5 else rnd.randrange(ITEMS)
                    name = f"c{n}.ics"
                    path = folder / name
                    try:
                        os.stat(path)
                        fd = os.open(path, os.O_RDONLY)
                        try:
                            size = os.fstat(fd).st_size
                            chunks = []
                            while True:
                                chunk = os.read(fd, 1 << 16)
                                if not chunk:
                                    break
                                chunks.append(chunk)
                            data = b"".join(chunks)
                            size_after = os.fstat(fd).st_size
                        finally:
                            os.close(fd)
                    except OSError as exc:
                        problem(f"{name}: {exc!r}")
                        continue
                    # The item may change on the server between the fstat and the read: the bytes read
                    # must then be one of the two versions the file really had, whole (README,
                    # "Caching and consistency"); never a size that belongs to neither.
                    if len(data) not in (size, size_after):
                        problem(f"{name}: fstat said {size} bytes (after the read: {size_after}), read {len(data)}")
                    if not _valid(data):
                        problem(f"{name}: not one whole iCalendar object: {data[:60]!r}...{data[-40:]!r}")
                    with lock:
                        counts["fd"] += 1

            threads = [threading.Thread(target=changer, daemon=True), threading.Thread(target=xargs_loop, daemon=True)]
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                for t in threads:
                    t.start()
                futures = [pool.submit(fd_reader, seed) for seed in range(8)]
                time.sleep(RUN_FOR)
                stop.set()
                for f in futures:
                    f.result(timeout=BOUND)
                for t in threads:
                    t.join(BOUND)
                    assert not t.is_alive(), "a reader or the changer did not finish: deadlock?"
            assert time.monotonic() - started < RUN_FOR + BOUND

            assert counts["changes"] >= 10 and counts["fd"] >= 50 and counts["xargs"] >= 1, counts
            unique = sorted(set(problems))
            assert not unique, f"{len(problems)} problems ({counts}):\n" + "\n".join(unique[:30])

            # After the storm the mount shows exactly what the server holds.
            time.sleep(1.5)
            for n in range(ITEMS):
                body = servers.get_item(server, servers.item_url(cal, f"c{n}.ics"))
                assert (folder / f"c{n}.ics").read_bytes() == body
            assert "Traceback" not in m.log()
    finally:
        server.stop()
