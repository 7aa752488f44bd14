"""Read-only behaviour of a real mount, on Radicale and on Xandikos seeded with standard_dataset.

One mount per server is shared by the module (the data never changes); tests that need a second
mount (remount stability) make their own.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.conftest import KINDS
from tests.mount.conftest import Mounted, expected_name, mount, run

pytestmark = [pytest.mark.mount, pytest.mark.integration]


@pytest.fixture(scope="module", params=KINDS)
def mounted(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Server, Mounted]]:
    server: servers.Server = request.getfixturevalue(request.param)
    with mount(server, workdir=tmp_path_factory.mktemp(f"mnt-{request.param}")) as m:
        yield server, m


@pytest.fixture(scope="module", params=KINDS)
def ro_mounted(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Server, Mounted]]:
    """A `-o ro` mount for the write-refusal tests: the shared servers' data must never change, also once
    the write path makes a default mount writable."""
    server: servers.Server = request.getfixturevalue(request.param)
    with mount(server, extra_args=["-o", "ro"], workdir=tmp_path_factory.mktemp(f"ro-{request.param}")) as m:
        yield server, m


def expected_tree(server: servers.Server) -> dict[str, bytes]:
    """{relative path: bytes} of every file the mount must show for the seeded items."""
    out: dict[str, bytes] = {}
    for cal in server.dataset.values():
        for item in cal.items.values():
            out[f"{cal.name}/{expected_name(item.name)}"] = item.body
    return out


def expected_listing(cal: servers.SeededCalendar) -> set[str]:
    names = {expected_name(n) for n in cal.items}
    if cal.displayname is not None:
        names.add("displayname")
    if cal.color is not None:
        names.add("color")
    return names


def all_paths(root: Path) -> list[Path]:
    out = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        out += [Path(dirpath, d) for d in dirnames] + [Path(dirpath, f) for f in filenames]
    return out


def test_ls_root_shows_exactly_the_calendars(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    out = run(["ls", "-1", "-a", str(m.path)]).stdout.decode()
    names = set(out.splitlines()) - {".", ".."}
    assert names == set(server.dataset), out  # no inbox, outbox or other non-calendar collection


def test_ls_l_calendar_shows_every_item(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    for cal in server.dataset.values():
        listing = run(["ls", "-1", "-a", str(m.path / cal.name)]).stdout.decode()
        assert set(listing.splitlines()) - {".", ".."} == expected_listing(cal)
        long = run(["ls", "-l", "-a", str(m.path / cal.name)]).stdout.decode()
        for name in expected_listing(cal):
            assert name in long, f"{name!r} missing from ls -l:\n{long}"
    # The awkward names from the seed are all there, decoded.
    work = set(os.listdir(m.path / "work"))
    for name in ("team meeting.ics", "100%.ics", "alice@example.com.ics", "a+b.ics", "회의.ics",
                 "no-extension.ics"):
        assert name in work


def test_vdir_metadata(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    for cal in server.dataset.values():
        d = m.path / cal.name
        if cal.displayname is not None:
            raw = (d / "displayname").read_bytes()
            assert raw == cal.displayname.encode("utf-8"), raw  # no trailing newline
        else:
            assert not (d / "displayname").exists()
        if cal.color is not None:
            color = (d / "color").read_bytes().decode()
            assert color.strip().upper() == cal.color.upper(), color
            assert len(color.strip()) == 7 and color.startswith("#"), color
        else:
            assert not (d / "color").exists()


def test_stat_sizes_blocks_modes_owner(mounted: tuple[servers.Server, Mounted]) -> None:
    _server, m = mounted
    files = 0
    for p in all_paths(m.path):
        st = os.stat(p)
        assert st.st_uid == os.getuid(), p
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, (p, oct(st.st_mode))
            continue
        files += 1
        assert stat.S_ISREG(st.st_mode), p
        assert stat.S_IMODE(st.st_mode) == 0o600, (p, oct(st.st_mode))
        data = run(["cat", str(p)]).stdout
        assert st.st_size == len(data), (p, st.st_size, len(data))
        assert st.st_blocks == math.ceil(st.st_size / 512), (p, st.st_size, st.st_blocks)
        # and again after the read: the size must not change once the data is known
        assert os.stat(p).st_size == len(data), p
    assert files >= sum(len(c.items) for c in _server.dataset.values())


def test_cat_is_byte_identical_to_get(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    for cal in server.dataset.values():
        for item in cal.items.values():
            got = run(["cat", str(m.path / cal.name / expected_name(item.name))]).stdout
            assert got == servers.get_item(server, item.url), item.name


def test_inodes_stable_and_distinct(mounted: tuple[servers.Server, Mounted]) -> None:
    _server, m = mounted
    paths = all_paths(m.path)
    first = {p: os.stat(p).st_ino for p in paths}
    second = {p: os.stat(p).st_ino for p in paths}
    assert first == second
    assert len(set(first.values())) == len(first), "two paths share an inode number"


def test_inodes_and_mtimes_stable_across_remount(mounted: tuple[servers.Server, Mounted],
                                                 tmp_path: Path) -> None:
    server, m = mounted
    rel = [p.relative_to(m.path) for p in all_paths(m.path)]
    # Read everything first, so that sizes and mtimes that depend on the data are settled.
    run(["tar", "cf", "/dev/null", "."], cwd=m.path)
    before = {r: os.stat(m.path / r) for r in rel}
    time.sleep(1.1)  # a second mount at a later second: mtimes must not follow the mount time
    with mount(server, workdir=tmp_path) as m2:
        rel2 = [p.relative_to(m2.path) for p in all_paths(m2.path)]
        assert sorted(map(str, rel2)) == sorted(map(str, rel))
        run(["tar", "cf", "/dev/null", "."], cwd=m2.path)
        after = {r: os.stat(m2.path / r) for r in rel}
    for r in rel:
        if r == Path("."):
            continue  # the mount root's inode is always 1
        assert after[r].st_ino == before[r].st_ino, f"inode of {r} changed across a remount"
        assert after[r].st_mtime_ns == before[r].st_mtime_ns, (
            f"mtime of {r} changed across a remount: {before[r].st_mtime_ns} -> {after[r].st_mtime_ns}")
        assert after[r].st_size == before[r].st_size, r
    for r in rel:
        # Seeded before either mount started: an mtime at or after the mount is the mount time.
        assert before[r].st_mtime <= m.started, f"mtime of {r} ({before[r].st_mtime}) is after the mount"
        assert before[r].st_mtime > 0, f"mtime of {r} is the epoch"


def test_grep_r_finds_known_summary(mounted: tuple[servers.Server, Mounted]) -> None:
    _server, m = mounted
    out = run(["grep", "-rl", "SUMMARY:Dentist", str(m.path)]).stdout.decode()
    assert out.splitlines() == [str(m.path / "home" / "dentist.ics")]
    out = run(["grep", "-rl", "SUMMARY:우유 사기", str(m.path)]).stdout.decode()
    assert out.splitlines() == [str(m.path / "tasks" / "buy milk.ics")]


def test_find_lists_every_file(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    out = run(["find", ".", "-type", "f"], cwd=m.path).stdout.decode()
    found = {line[2:] for line in out.splitlines()}
    want = set(expected_tree(server))
    for cal in server.dataset.values():
        want |= {f"{cal.name}/{n}" for n in expected_listing(cal) if n in ("displayname", "color")}
    assert found == want
    dirs = run(["find", ".", "-type", "d"], cwd=m.path).stdout.decode().splitlines()
    assert set(dirs) == {"."} | {f"./{c}" for c in server.dataset}


def test_tar_members_equal_get(mounted: tuple[servers.Server, Mounted]) -> None:
    server, m = mounted
    done = run(["tar", "cf", "-", "."], cwd=m.path)
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        for info in tar:
            if info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                members[os.path.normpath(info.name)] = f.read()
    for rel, body in expected_tree(server).items():
        assert rel in members, f"{rel} missing from the tar"
        assert members[rel] == body, rel
    assert b"file changed as we read it" not in done.stderr, done.stderr


def test_rsync_backup_is_exact_and_second_run_copies_nothing(mounted: tuple[servers.Server, Mounted],
                                                             tmp_path: Path) -> None:
    server, m = mounted
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["rsync", "-a", f"{m.path}/", f"{backup}/"])
    for cal in server.dataset.values():
        for item in cal.items.values():
            got = (backup / cal.name / expected_name(item.name)).read_bytes()
            assert got == servers.get_item(server, item.url), f"{cal.name}/{item.name}"
        if cal.displayname is not None:
            assert (backup / cal.name / "displayname").read_bytes() == cal.displayname.encode()
    again = run(["rsync", "-a", "--itemize-changes", f"{m.path}/", f"{backup}/"]).stdout.decode()
    assert again == "", f"a second rsync -a changed something:\n{again}"


@pytest.mark.parametrize("argv", [
    ["touch", "{mnt}/work/team meeting.ics"],
    ["touch", "{mnt}/work/new.ics"],
    ["sh", "-c", "echo hello > '{mnt}/work/new.ics'"],
    ["sh", "-c", "echo hello >> '{mnt}/work/team meeting.ics'"],
    ["rm", "{mnt}/work/team meeting.ics"],
    ["mkdir", "{mnt}/newcal"],
    ["rmdir", "{mnt}/home"],
    ["mv", "{mnt}/work/a+b.ics", "{mnt}/work/c.ics"],
], ids=["touch-existing", "touch-new", "create", "append", "rm", "mkdir", "rmdir", "rename"])
def test_writes_fail_with_erofs(ro_mounted: tuple[servers.Server, Mounted], argv: list[str]) -> None:
    server, m = ro_mounted
    cmd = [a.format(mnt=m.path) for a in argv]
    done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    assert done.returncode != 0, cmd
    assert "Read-only file system" in done.stderr.decode(errors="replace"), done.stderr
    # nothing changed
    assert set(os.listdir(m.path)) == set(server.dataset)
    assert set(os.listdir(m.path / "work")) == expected_listing(server.dataset["work"])


def test_write_syscalls_get_erofs(ro_mounted: tuple[servers.Server, Mounted]) -> None:
    _server, m = ro_mounted
    target = m.path / "work" / "team meeting.ics"
    attempts = {
        "open O_WRONLY": lambda: os.open(target, os.O_WRONLY),
        "open O_CREAT": lambda: os.open(m.path / "work" / "x.ics", os.O_WRONLY | os.O_CREAT, 0o600),
        "truncate": lambda: os.truncate(target, 0),
        "unlink": lambda: os.unlink(target),
        "mkdir": lambda: os.mkdir(m.path / "x"),
        "chmod": lambda: os.chmod(target, 0o644),
        "utime": lambda: os.utime(target, (0, 0)),
        "symlink": lambda: os.symlink("x", m.path / "work" / "l.ics"),
    }
    for what, call in attempts.items():
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EROFS, f"{what}: {exc.value!r}"
