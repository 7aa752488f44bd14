"""Write-path failures a real server won't produce on demand: nothing may be lost."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from caldavfs.errors import CaldavfsError, KeptError
from caldavfs.fs import errno_for
from caldavfs.writer import Writer
from tests.faults.stubdav import CAL, FakeCalDAV, FakeItem, ics
from tests.httpstub import Reply, Request


class RefusingCalDAV(FakeCalDAV):
    """No MOVE (405), and every PUT refused with 403 and no precondition (a read-only share)."""

    def handle(self, req: Request) -> Reply:
        if req.method == "PUT":
            return Reply(403, b"", {})
        if req.method == "DELETE":
            return Reply(204, b"", {})
        return super().handle(req)


def _methods(fake: FakeCalDAV) -> list[str]:
    return [r.method for r in fake.stub.requests]


def test_a_refused_move_never_deletes_the_original(tmp_path: Path) -> None:
    with RefusingCalDAV([FakeItem(CAL + "a.ics", ics("a@x"))]) as fake:
        tree = fake.tree()
        writer = Writer(tree, tmp_path / "conflicts")
        assert tree.read_file("/work/a.ics") == ics("a@x")
        with pytest.raises(CaldavfsError):
            writer.rename("/work/a.ics", "/work/b.ics")
        assert "DELETE" not in _methods(fake)
        assert "a.ics" in {name for name, _ in tree.readdir("/work")}


def test_a_refused_upload_keeps_the_bytes_and_says_why(tmp_path: Path) -> None:
    with RefusingCalDAV([FakeItem(CAL + "a.ics", ics("a@x"))]) as fake:
        tree = fake.tree()
        writer = Writer(tree, tmp_path / "conflicts")
        lf = writer.create("/work/new.ics")
        writer.write(lf, ics("new@x"), 0)
        with pytest.raises(KeptError) as exc:
            writer.flush("/work/new.ics", lf)
        assert errno_for(exc.value) == errno.EACCES  # the 403's errno, not a generic one
        kept = list((tmp_path / "conflicts" / "work").iterdir())
        assert [p.read_bytes() for p in kept] == [ics("new@x")]
        writer.release("/work/new.ics", lf)
        assert writer.local("/work/new.ics") is None  # kept on disk, not shown as if saved


def test_two_failures_in_one_second_keep_both_copies(tmp_path: Path) -> None:
    with RefusingCalDAV([]) as fake:
        writer = Writer(fake.tree(), tmp_path / "conflicts")
        for body in (ics("one@x"), ics("two@x")):
            lf = writer.create("/work/same.ics")
            writer.write(lf, body, 0)
            with pytest.raises(KeptError):
                writer.flush("/work/same.ics", lf)
            writer.release("/work/same.ics", lf)
        kept = sorted(p.read_bytes() for p in (tmp_path / "conflicts" / "work").iterdir())
        assert kept == sorted([ics("one@x"), ics("two@x")])
