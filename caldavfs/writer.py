"""The write path: local scratch files, uploads on close, deletes, renames, links, calendars.

Names that don't end in ``.ics``, and dotfiles, are scratch: editors' swap files, rsync's
``.NAME.XXXXXX`` and sed's temp files live in memory and are never uploaded. A ``NAME.ics``
written in a calendar is uploaded when it is closed (PUT with If-None-Match: * for a new name,
If-Match for an existing one); rename(2) and link(2) of scratch onto ``NAME.ics`` do the same
(khal, todoman and vdirsyncer write a temp file, then hard-link it). After each upload the
mount shows what the server stored. Nothing is lost: bytes an upload could not deliver are
kept in the conflicts folder and the call fails.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import quote

from caldavfs.errors import (
    AlreadyExistsError,
    CaldavfsError,
    ConflictError,
    DavError,
    DirectoryNotEmptyError,
    ForbiddenError,
    KeptError,
    MethodNotAllowedError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ReadOnlyError,
    RejectedError,
    ServerError,
)
from caldavfs.model import META_COLOR, META_DISPLAYNAME, Calendar, LocalFile
from caldavfs.tree import Tree, split_path

log = logging.getLogger(__name__)

_COLOR = re.compile(r"#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?")
_CALENDAR_START = re.compile(rb"^(\xef\xbb\xbf)?\s*BEGIN:VCALENDAR", re.I)
_CALENDAR_END = re.compile(rb"END:VCALENDAR", re.I)


def is_scratch(name: str) -> bool:
    """Local-only names: dotfiles and anything but ``*.ics`` (the metadata files aside)."""
    if name in (META_DISPLAYNAME, META_COLOR):
        return False
    return name.startswith(".") or not name.endswith(".ics")


def looks_like_icalendar(data: bytes) -> bool:
    return bool(_CALENDAR_START.match(data)) and _CALENDAR_END.search(data) is not None


def unfinished(data: bytes) -> bool:
    """A calendar begun and not ended: `{ echo BEGIN:VCALENDAR; cat events; ... } > x.ics` closes
    cat's copy of the file (a FLUSH) before the rest is written through the shell's."""
    return bool(_CALENDAR_START.match(data)) and _CALENDAR_END.search(data) is None


class Writer:
    def __init__(self, tree: Tree, conflicts_dir: Path, *, read_only: bool = False) -> None:
        self.tree = tree
        self.conflicts_dir = conflicts_dir
        self.read_only = read_only
        self._lock = threading.RLock()

    # --- what exists locally ---------------------------------------------------------

    def local(self, path: str) -> LocalFile | None:
        parts = split_path(path)
        if len(parts) != 2:
            return None
        cal = self.tree.find_calendar(parts[0])
        return cal.shown_local(parts[1]) if cal else None

    def _target(self, path: str) -> tuple[Calendar, str]:
        self._check_writable()
        parts = split_path(path)
        if len(parts) != 2:
            raise PermissionDeniedError(f"{path}: only files inside a calendar folder can be written")
        return self.tree.calendar(parts[0]), parts[1]

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("mounted read-only")

    # --- open, write, close ------------------------------------------------------------

    def create(self, path: str) -> LocalFile:
        cal, name = self._target(path)
        with self._lock:
            lf = cal.local.get(name)
            if lf is None:
                item = self.tree.item(cal, name)
                lf = LocalFile(bytearray(), time.time_ns(), base_etag=self.tree.base_etag(item))
                cal.local[name] = lf
            else:
                lf.data.clear()
            lf.dirty = not is_scratch(name)
            lf.refs += 1
            return lf

    def open(self, path: str, truncate: bool) -> LocalFile:
        cal, name = self._target(path)
        with self._lock:
            lf = cal.local.get(name)
            if lf is None:
                data = b"" if truncate else self.tree.read_file(path)
                item = self.tree.item(cal, name)
                # Until something is written the file is unchanged: vim compares the mtime it
                # read with the one it sees when it saves, and asks "file changed?" otherwise.
                mtime = item.shown_mtime if item is not None and not truncate else time.time_ns()
                lf = LocalFile(bytearray(data), mtime, base_etag=self.tree.base_etag(item))
                cal.local[name] = lf
            elif cal.shown_local(name) is not lf and not truncate:
                # Uploaded, RELEASE still on its way: the mount shows the stored version; so
                # does this open file (an O_APPEND write lands at the size the kernel was shown).
                with lf.lock:
                    lf.data[:] = self.tree.read_file(path)
            if truncate:
                lf.data.clear()
                lf.dirty = True
            lf.refs += 1
            return lf

    def write(self, lf: LocalFile, data: bytes, offset: int) -> int:
        with lf.lock:
            end = offset + len(data)
            if len(lf.data) < offset:
                lf.data.extend(b"\0" * (offset - len(lf.data)))
            lf.data[offset:end] = data
            lf.dirty = True
            lf.mtime_ns = time.time_ns()
        return len(data)

    def truncate(self, path: str | None, length: int, lf: LocalFile | None = None) -> None:
        if lf is None and path is not None:
            lf = self._held(path)
        if lf is not None:
            with lf.lock:
                del lf.data[length:]
                lf.data.extend(b"\0" * (length - len(lf.data)))
                lf.dirty = True
                lf.mtime_ns = time.time_ns()
            return
        # truncate(2) of a closed server item: change it and upload at once. The kernel turns
        # open(O_TRUNC) into truncate-to-0 then open: that write is based on what was read
        # before, not on the current version, so don't read it now.
        if path is None:
            raise NotFoundError("truncate of a removed file that is not open")
        opened = self.open(path, truncate=length == 0)
        try:
            self.truncate(path, length, opened)
            self.flush(path, opened, last=True)  # nothing else holds it: now or never
        finally:
            self.release(path, opened)

    def flush(self, path: str | None, lf: LocalFile, *, last: bool = False) -> None:
        """Upload a dirty item or metadata file (close and fsync come here; ``last``: the kernel's
        RELEASE, when no descriptor is left to write more)."""
        if path is None:
            return  # removed or replaced while open: its bytes go nowhere, as on a disk
        cal, name = self._target(path)
        with lf.lock:
            if not lf.dirty or is_scratch(name) or cal.local.get(name) is not lf:
                return
            data = bytes(lf.data)
            if not last and unfinished(data):
                log.debug("%s/%s: not uploaded yet, its END:VCALENDAR has not been written", cal.name, name)
                return
            if name == META_DISPLAYNAME:
                self._set_property(cal, name, data.decode("utf-8", "replace").rstrip("\r\n"))
            elif name == META_COLOR:
                self._set_property(cal, name, data.decode("ascii", "replace").strip())
            elif not data:
                return  # an empty new file (touch): nothing to upload yet
            else:
                try:
                    lf.base_etag = self._upload(cal, name, data, lf.base_etag)
                except KeptError:
                    lf.dirty = False  # the bytes are in the conflicts folder: not again on release
                    raise
                if lf.user_mtime is not None:  # cp -p, rsync --inplace: a time set while open
                    self.tree.set_mtime(cal, name, lf.user_mtime)
            lf.dirty = False

    def release(self, path: str | None, lf: LocalFile) -> None:
        parts = split_path(path) if path is not None else []
        # No request here: release must always let go of its reference.
        cal = self.tree.known_calendar(parts[0]) if parts else None
        with self._lock:
            lf.refs -= 1
            if cal is None or len(parts) != 2 or lf.refs > 0:
                return
            name = parts[1]
            if is_scratch(name) or cal.local.get(name) is not lf:
                return
            if not lf.dirty:
                del cal.local[name]  # the server holds it now
            elif not lf.data and name in cal.items:
                # `cmd > x.ics` that wrote nothing: an empty item can't be stored; keep the server's.
                log.warning("%s/%s: an empty file is not uploaded; it keeps the server's version", cal.name, name)
                del cal.local[name]
            # else: never uploaded (touch of a new name, or its bytes could not be kept): stays listed

    # --- uploads ---------------------------------------------------------------------

    def _upload(self, cal: Calendar, name: str, data: bytes, etag: str | None) -> str | None:
        """PUT ``data`` as ``name``; returns the stored etag (None when it could not be read
        back). On failure the bytes are kept and ``KeptError`` says where."""
        url = cal.info.url + quote(name)
        item = cal.items.get(name)
        try:
            item = self.tree.item(cal, name)
            url = item.info.url if item else url
            if not looks_like_icalendar(data):
                raise RejectedError(f"{cal.name}/{name}: not iCalendar data (no BEGIN:VCALENDAR), not uploaded")
            put_etag = self.tree.client.put(url, data, etag=etag)
        except CaldavfsError as exc:
            kept = self._keep(cal, name, data, exc)
            if item is not None and isinstance(exc, PreconditionFailedError):
                # The user has been told; a deliberate second try replaces the server's version.
                item.served_etag = None
            if kept is None:
                raise
            raise KeptError(str(exc), cause=exc, path=kept) from exc
        placeholder = cal.local.get(name)
        if placeholder is not None and placeholder.refs == 0:
            del cal.local[name]  # an empty `touch`ed file that this upload replaced
        try:
            return self.tree.after_upload(cal, name, url)
        except CaldavfsError as exc:
            # Stored; only reading it back failed. The next listing shows it.
            log.warning("%s/%s was saved, but reading it back failed (%s)", cal.name, name, exc)
            self.tree.mark_stale(cal)
            return put_etag

    def _keep(self, cal: Calendar, name: str, data: bytes, exc: BaseException) -> Path | None:
        """Save bytes the server did not take, where the README says they go; None if even
        that failed (then the bytes stay in memory, listed under their name)."""
        try:
            folder = self.conflicts_dir / cal.name
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.conflicts_dir, 0o700)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for n in range(1000):
                path = folder / (f"{stamp}-{name}" if n == 0 else f"{stamp}.{n}-{name}")
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                break
            else:
                raise OSError("too many kept copies with one name in one second")
        except OSError as err:
            log.critical("%s/%s was not saved on the server (%s) and could not be kept in %s (%s); "
                         "it stays in the mount until it is saved", cal.name, name, exc, self.conflicts_dir, err)
            return None
        log.error("%s/%s was not saved on the server (%s); your bytes are kept in %s", cal.name, name, exc, path)
        return path

    def _set_property(self, cal: Calendar, name: str, value: str) -> None:
        if name == META_COLOR:
            if not _COLOR.fullmatch(value):
                raise RejectedError(f"{cal.name}/color: {value!r} is not a #RRGGBB color")
            self.tree.client.set_calendar_properties(cal.info.url, color=value)
        else:
            self.tree.client.set_calendar_properties(cal.info.url, displayname=value)
        # Take the new value in now, so that a time set right after (rsync) is not undone.
        self.tree.invalidate_home()
        self.tree.find_calendar(cal.name)

    # --- namespace operations ----------------------------------------------------------

    def unlink(self, path: str) -> None:
        cal, name = self._target(path)
        with self._lock:
            if name in cal.local and (is_scratch(name) or self.tree.item(cal, name) is None):
                del cal.local[name]
                return
            if name in (META_DISPLAYNAME, META_COLOR):
                raise PermissionDeniedError(f"{path}: calendar properties can be changed, not removed")
            item = self.tree.item(cal, name)
            if item is None:
                raise NotFoundError(f"{path}: no such file")
            self.tree.client.delete(item.info.url, etag=item.info.etag)
            self.tree.after_delete(cal, name)
            cal.local.pop(name, None)  # a descriptor still open on it writes to a removed file

    def link(self, src: str, dst: str) -> None:
        """khal, todoman, vdirsyncer: write a temp file, link it to NAME.ics, unlink the temp."""
        src_cal, src_name = self._target(src)
        dst_cal, dst_name = self._target(dst)
        lf = src_cal.local.get(src_name)
        if lf is None or not is_scratch(src_name):
            raise PermissionDeniedError(f"{src}: only new files can be linked into a calendar")
        if self.tree.item(dst_cal, dst_name) is not None or dst_name in dst_cal.local:
            raise AlreadyExistsError(f"{dst}: exists")
        if is_scratch(dst_name):
            dst_cal.local[dst_name] = LocalFile(bytearray(lf.data), lf.mtime_ns)
            return
        self._upload(dst_cal, dst_name, bytes(lf.data), None)
        self._carry_mtime(dst_cal, dst_name, lf)

    def rename(self, old: str, new: str) -> None:
        old_cal, old_name = self._target(old)
        new_cal, new_name = self._target(new)
        with self._lock:
            lf = old_cal.local.get(old_name)
            if lf is not None and (is_scratch(old_name) or self.tree.item(old_cal, old_name) is None):
                self._rename_local(old_cal, old_name, new_cal, new_name, lf)
                return
            if lf is not None and lf.dirty:
                self.flush(old, lf, last=True)  # what was written and not saved yet moves with it
            item = self.tree.item(old_cal, old_name)
            if item is None:
                raise NotFoundError(f"{old}: no such file")
            data = self.tree.read_file(old)
            if is_scratch(new_name):
                # An editor moves the original aside (vim's backup): keep its bytes here,
                # and the item goes from the server until the new version is written.
                self.tree.client.delete(item.info.url, etag=self.tree.base_etag(item))
                self.tree.after_delete(old_cal, old_name)
                old_cal.local.pop(old_name, None)
                if lf is None or lf.refs == 0:  # else still open: it goes with its new name
                    lf = LocalFile(bytearray(data), time.time_ns())
                new_cal.local[new_name] = lf
                return
            self._move_item(old_cal, old_name, new_cal, new_name, data, item.info.url, item.info.etag)
            old_cal.local.pop(old_name, None)
            self._follow(new_cal, new_name, lf, self.tree.base_etag(self.tree.item(new_cal, new_name)))

    def _held(self, path: str) -> LocalFile | None:
        """The file the write path holds under ``path``, shown or not (see Calendar.shown_local)."""
        parts = split_path(path)
        cal = self.tree.find_calendar(parts[0]) if len(parts) == 2 else None
        return cal.local.get(parts[1]) if cal else None

    @staticmethod
    def _follow(cal: Calendar, name: str, lf: LocalFile | None, etag: str | None) -> None:
        """After a rename onto ``name``: a file still open goes with its new name (what is written
        to it later is saved there); what was held there before is replaced (a descriptor on it
        writes to a removed file)."""
        if lf is not None and lf.refs > 0:
            lf.base_etag = etag
            cal.local[name] = lf
        else:
            cal.local.pop(name, None)

    def _rename_local(self, old_cal: Calendar, old_name: str, new_cal: Calendar, new_name: str,
                      lf: LocalFile) -> None:
        if is_scratch(new_name) or new_name in (META_DISPLAYNAME, META_COLOR):
            del old_cal.local[old_name]
            new_cal.local[new_name] = lf
            if not is_scratch(new_name):
                lf.dirty = True
                self.flush(f"/{new_cal.name}/{new_name}", lf)
                new_cal.local.pop(new_name, None)
                self._carry_mtime(new_cal, new_name, lf)
            return
        existing = self.tree.item(new_cal, new_name)
        if not lf.data:
            # `touch a.ics; mv a.ics b.ics`: nothing to upload yet; an item can't be emptied.
            if existing is not None:
                raise RejectedError(f"/{new_cal.name}/{new_name}: an empty file can't replace an item")
            del old_cal.local[old_name]
            new_cal.local[new_name] = lf
            return
        # rsync's and sed's temp file onto NAME.ics: upload, replacing what is there.
        with lf.lock:
            etag = self._upload(new_cal, new_name, bytes(lf.data), self.tree.base_etag(existing))
            # The kernel may release the temp file after this rename, under its new name: what
            # is uploaded is not uploaded again (as a new file, which the server would refuse).
            lf.dirty = False
        del old_cal.local[old_name]
        self._carry_mtime(new_cal, new_name, lf)
        self._follow(new_cal, new_name, lf, etag)  # last: the rename has taken effect

    def _carry_mtime(self, cal: Calendar, name: str, lf: LocalFile) -> None:
        # rsync sets the time on its temp file before renaming it into place.
        if lf.user_mtime is not None:
            self.tree.set_mtime(cal, name, lf.user_mtime)

    def _move_item(self, old_cal: Calendar, old_name: str, new_cal: Calendar, new_name: str,
                   data: bytes, url: str, etag: str) -> None:
        existing = self.tree.item(new_cal, new_name)
        if existing is not None:
            # Replace the target with the source's bytes, then drop the source.
            self._upload(new_cal, new_name, data, self.tree.base_etag(existing))
            self.tree.client.delete(url, etag=etag)
            self.tree.after_delete(old_cal, old_name)
            return
        dst_url = new_cal.info.url + quote(new_name)
        try:
            self.tree.client.move(url, dst_url, etag=etag)
        except (MethodNotAllowedError, ForbiddenError, ConflictError, ServerError, PreconditionFailedError) as exc:
            # SOGo has no MOVE; Xandikos refuses one within a calendar (412 no-uid-conflict).
            log.info("MOVE refused (%s): copying and deleting instead", exc)
            self._copy_then_delete(old_cal, old_name, new_cal, new_name, data, url, etag)
            return
        self.tree.after_delete(old_cal, old_name)
        self.tree.after_upload(new_cal, new_name, dst_url)

    def _copy_then_delete(self, old_cal: Calendar, old_name: str, new_cal: Calendar, new_name: str,
                          data: bytes, url: str, etag: str) -> None:
        dst_url = new_cal.info.url + quote(new_name)
        try:
            self.tree.client.put(dst_url, data, etag=None)
        except DavError as exc:
            if exc.precondition != "no-uid-conflict":
                raise  # nothing changed on the server: the original stays where it was
            # The UID is taken while the original exists (Xandikos within a calendar; Cyrus and
            # iCloud across calendars): delete it first, then upload, keeping the bytes on failure.
            log.info("upload of %s refused while the original exists (%s)", new_name, exc)
            self.tree.client.delete(url, etag=etag)
            self.tree.after_delete(old_cal, old_name)
            self._upload(new_cal, new_name, data, None)
            return
        try:
            self.tree.after_upload(new_cal, new_name, dst_url)
        except CaldavfsError as exc:
            log.warning("%s/%s was saved, but reading it back failed (%s)", new_cal.name, new_name, exc)
            self.tree.mark_stale(new_cal)
        self.tree.client.delete(url, etag=etag)
        self.tree.after_delete(old_cal, old_name)

    def set_mtime(self, path: str, mtime_ns: int) -> None:
        parts = split_path(path)
        if not parts:
            return  # the root's time is its newest calendar's
        cal = self.tree.calendar(parts[0])
        if len(parts) == 1:
            self.tree.set_mtime(cal, None, mtime_ns)
            return
        lf = cal.local.get(parts[1])
        if lf is not None:
            lf.mtime_ns = lf.user_mtime = mtime_ns  # carried to the item when it is uploaded
            if cal.shown_local(parts[1]) is lf:
                return
            # Uploaded already (shutil.copy2 and curl -R set the time after close(2), before
            # the kernel's RELEASE): the item takes it now.
        self.tree.set_mtime(cal, parts[1], mtime_ns)

    # --- calendars --------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        self._check_writable()
        parts = split_path(path)
        if len(parts) != 1:
            raise PermissionDeniedError(f"{path}: folders exist only as calendars at the top")
        self.tree.invalidate_home()  # a calendar deleted on the server a moment ago may come back
        if self.tree.find_calendar(parts[0]) is not None:
            raise AlreadyExistsError(f"{path}: exists")
        url = self.tree.home_url + quote(parts[0]) + "/"
        self.tree.client.mkcalendar(url, displayname=None)
        self.tree.invalidate_home()

    def rmdir(self, path: str) -> None:
        self._check_writable()
        parts = split_path(path)
        if len(parts) != 1:
            raise NotFoundError(path)
        self.tree.invalidate_home()  # items another client added since the last listing count too
        cal = self.tree.calendar(parts[0])
        if self.tree.has_items(cal) or cal.local:
            raise DirectoryNotEmptyError(path)
        self.tree.client.delete(cal.info.url)
        self.tree.invalidate_home()
