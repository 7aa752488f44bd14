"""Command line: argument parsing, credentials, wiring, and the one exception -> message map.

``caldavfs mount [options] URL MOUNTPOINT`` checks the URL and the credentials, then
mounts; by default it returns once the mount is live. mfusepy is imported lazily, so
``--help`` and the error paths work without libfuse.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from caldavfs import __version__, memory
from caldavfs.cache import ContentCache
from caldavfs.client import DEFAULT_BATCH, Client
from caldavfs.credentials import Credentials, password_from_command, resolve_credentials
from caldavfs.dav import DavSession
from caldavfs.diskcache import DiskCache
from caldavfs.errors import (
    CaldavfsError,
    ConfigError,
    ForbiddenError,
    InvalidResponseError,
    NotCalDAVError,
    TransportError,
    UnauthorizedError,
)
from caldavfs.mounthelper import helper_argv
from caldavfs.tree import Tree

log = logging.getLogger("caldavfs")

DEFAULT_TTL = 60.0
DEFAULT_TIMEOUT = 30.0
# Kernel-side caching: names for a second (rclone's documented safe floor); attributes for a
# second too, but only where the daemon can take them back when an item changes (libfuse 3,
# see fuselib), so that a size is never older than the bytes an open file reads; auto_cache
# drops a file's pages when its mtime or size moved, which every change does.
DEFAULT_FUSE_OPTIONS: dict[str, str | bool] = {
    "use_ino": True,
    "auto_cache": True,
    "entry_timeout": "1",
    "attr_timeout": "1",
    # Reads go to the daemon, which serves each open file the one version it opened: the kernel's
    # page cache would otherwise mix versions of an item that changed while it was being read.
    "direct_io": True,
    # A file removed or renamed over while open is gone at once, as on a disk; without this
    # libfuse renames it to .fuse_hiddenN, which here would DELETE the item before its
    # replacement is uploaded (sed -i while the file is open elsewhere).
    "hard_remove": True,
    "subtype": "caldavfs",
}


def fuse_options(user: dict[str, str | bool], fsname: str) -> dict[str, str | bool]:
    """The options the mount runs with: the defaults, what libfuse needs, then the user's."""
    from caldavfs import fuselib

    options = dict(DEFAULT_FUSE_OPTIONS)
    options["fsname"] = fsname
    if fuselib.LIBFUSE_MAJOR >= 3:
        # Workers keep their Python thread state: they must not end (fuselib._pin_thread_state).
        options["max_idle_threads"] = fuselib.IDLE_WORKERS
    else:
        # open(O_TRUNC) arrives as one open with O_TRUNC, not open then truncate: a write that
        # replaces an item is then based on the version the user read (libfuse 3 always does).
        options["atomic_o_trunc"] = True
    if not fuselib.can_invalidate():
        options["attr_timeout"] = "0"  # nothing could take a cached size back
    options.update(user)
    if options.get("allow_other") or options.get("allow_root"):
        # Others may look in: let the kernel check the 0600/0700 modes. Without allow_other only
        # the mounting user gets in anyway, and the permission checks would make the kernel ask
        # for the root's attributes on every path lookup.
        options.setdefault("default_permissions", True)
    return options


def message_for(exc: BaseException) -> str:
    """The one place that turns an error into the line a user reads."""
    if isinstance(exc, UnauthorizedError):
        return f"authentication failed: the server refused the username or password ({exc})"
    if isinstance(exc, ForbiddenError):
        return f"access denied by the server ({exc})"
    if isinstance(exc, NotCalDAVError):
        return f"{exc}; is this a CalDAV server URL?"
    if isinstance(exc, TransportError):
        return f"cannot reach the server: {exc}"
    if isinstance(exc, InvalidResponseError):
        return f"the server's answer was not usable: {exc}"
    if isinstance(exc, CaldavfsError):
        return str(exc)
    return f"unexpected error: {exc!r} (run with --debug for details)"


# --- options ------------------------------------------------------------------------------


def _parse_fuse_options(values: Sequence[str]) -> dict[str, str | bool]:
    options: dict[str, str | bool] = {}
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, val = part.partition("=")
            options[key] = val if sep else True
    return options


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", default=os.environ.get("CALDAVFS_USERNAME"),
                        help="account name (default: $CALDAVFS_USERNAME, or the login in ~/.netrc)")
    parser.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    parser.add_argument("--password-command", metavar="CMD",
                        help="run CMD (through the shell) and take the first line it prints as the password")
    parser.add_argument("--keyring", action="store_true",
                        help="take the password from the system keyring (service caldavfs:HOST, the username; "
                        "needs the 'keyring' package: pip install 'caldavfs[keyring]')")
    parser.add_argument("--token-command", metavar="CMD",
                        help="OAuth servers (Google): run CMD for a bearer token; run again when it is refused")
    parser.add_argument("--ca-cert", metavar="FILE", help="trust this CA bundle for the server's TLS certificate")
    parser.add_argument("--insecure", action="store_true",
                        help="do NOT verify the server's TLS certificate (logged loudly; for tests only)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"longest wait for one request (default {DEFAULT_TIMEOUT:g})")


def _add_mount_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-o", dest="fuse_options", action="append", default=[], metavar="OPT[,OPT...]",
                        help="FUSE mount options, e.g. ro,allow_other")
    parser.add_argument("--cache-ttl", type=float, default=DEFAULT_TTL, metavar="SECONDS",
                        help=f"ask the server for changes at most this often (default {DEFAULT_TTL:g})")
    parser.add_argument("--cache-size", type=int, default=64, metavar="MB",
                        help="memory for calendar data (default 64)")
    parser.add_argument("--no-disk-cache", action="store_true",
                        help="keep nothing on disk: a remount lists and downloads everything again")
    parser.add_argument("--disk-cache-size", type=int, default=512, metavar="MB",
                        help="bound of the disk cache (default 512)")
    parser.add_argument("--read-only", action="store_true", help="refuse every write (EROFS), like -o ro")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where caldavfs keeps its cache and conflicts/ (default ~/.cache/caldavfs)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--log-file", metavar="FILE", help="where a background mount writes its log")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("-d", "--debug", action="store_true",
                        help="log every request (method, URL, status, time; never credentials)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caldavfs", description="Mount a CalDAV account as a directory.")
    parser.add_argument("--version", action="version", version=f"caldavfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    mount = sub.add_parser("mount", help="mount a CalDAV account",
                           description="Mount a CalDAV account: one folder per calendar, one .ics per item. "
                           "The password comes from --password-file, --password-command, "
                           "$CALDAVFS_PASSWORD, ~/.netrc, or a prompt; never from the command line.")
    mount.add_argument("url", help="server root, principal, calendar home or one calendar URL")
    mount.add_argument("mountpoint", help="an empty directory")
    _add_connection_options(mount)
    _add_mount_options(mount)

    demo = sub.add_parser("demo", help="start a local demo server with sample calendars and mount it")
    demo.add_argument("mountpoint", nargs="?", help="where to mount (default: a new temporary folder)")
    demo.add_argument("--items", type=int, default=300, help="number of sample items (default 300)")
    _add_mount_options(demo)

    umount = sub.add_parser("umount", help="unmount a caldavfs mount")
    umount.add_argument("mountpoint")

    status = sub.add_parser("status", help="show a running mount's server, calendars, cache and requests")
    status.add_argument("mountpoint")

    prefetch = sub.add_parser("prefetch", help="read every item of a running mount once, so that its disk "
                              "cache holds everything for offline use (shows progress)")
    prefetch.add_argument("mountpoint")
    return parser


# --- mounting -----------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="caldavfs: %(levelname)s: %(message)s", stream=sys.stderr)
    # mfusepy logs every ENOENT of a getattr at debug level: keep that out of -d output.
    logging.getLogger("mfusepy").setLevel(logging.WARNING if not args.debug else logging.INFO)


def _check_mountpoint(path: str) -> str:
    mountpoint = os.path.abspath(path)
    if not os.path.isdir(mountpoint):
        raise ConfigError(f"mount point {path} is not a directory")
    if os.path.ismount(mountpoint):
        raise ConfigError(f"{path} is already a mount point")
    return mountpoint


def build_tree(url: str, creds: Credentials, args: argparse.Namespace) -> Tree:
    """Discover the account and list its calendars once, so failures surface before mounting."""
    verify: bool | str = True
    if getattr(args, "ca_cert", None):
        verify = args.ca_cert
    if getattr(args, "insecure", False):
        log.warning("TLS certificate verification is OFF (--insecure): anyone on the path can "
                    "read and change your calendars")
        verify = False
    token_command = getattr(args, "token_command", None)
    session = DavSession(username=creds.username, password=creds.password,
                         timeout=getattr(args, "timeout", DEFAULT_TIMEOUT), verify=verify,
                         token_command=(lambda: password_from_command(token_command)) if token_command else None)
    client = Client(session, batch=max(1, args.batch))
    found = client.discover(url)
    disk = None
    if not args.no_disk_cache:
        disk = DiskCache(cache_dir(args), f"{creds.username or ''} {found.home_url}",
                         max_bytes=max(1, args.disk_cache_size) * 1024 * 1024)
    tree = Tree(client, found.home_url, calendar_url=found.calendar_url, disk=disk,
                cache=ContentCache(max(1, args.cache_size) * 1024 * 1024), ttl=max(0.0, args.cache_ttl))
    names = tree.calendar_names()
    log.info("%d calendars: %s", len(names), ", ".join(names))
    return tree


def serve(tree: Tree, mountpoint: str, args: argparse.Namespace, *, fsname: str,
          on_ready: Callable[[], None] | None = None) -> None:
    """Run the FUSE loop in this process until unmounted (blocking)."""
    from caldavfs import fuselib  # lazily: libfuse is needed only from here on
    from caldavfs.fs import CaldavFS
    from caldavfs.fuselib import FUSE
    from caldavfs.writer import Writer

    memory.limit_arenas()
    options = fuse_options(_parse_fuse_options(args.fuse_options), fsname)
    fuselib.quiet_known_noise()
    read_only = bool(args.read_only or options.get("ro"))
    writer = Writer(tree, cache_dir(args) / "conflicts", read_only=read_only)
    try:
        with _signals_to_libfuse():
            FUSE(CaldavFS(tree, writer, on_ready=on_ready), mountpoint, foreground=True, **options)
    except RuntimeError as exc:
        # libfuse 3's fuse_main returns 8 when SIGTERM, SIGINT or SIGHUP ended its loop (it
        # unmounted first): the way a foreground mount is meant to end, not a failure.
        if fuselib.LIBFUSE_MAJOR < 3 or exc.args != (8,):
            raise
        log.info("unmounted on a signal")


@contextlib.contextmanager
def _signals_to_libfuse() -> Iterator[None]:
    """libfuse unmounts and ends its loop on SIGTERM and SIGHUP only where no handler is set: it
    leaves a program's own alone (the demo's, which stops its server if set-up is cut short), and
    Python's would wait for the loop to end. Hand them to libfuse for the loop (mfusepy does so for
    SIGINT), and take them back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def cache_dir(args: argparse.Namespace) -> Path:
    """--cache-dir, else $XDG_CACHE_HOME/caldavfs (~/.cache/caldavfs)."""
    if getattr(args, "cache_dir", None):
        return Path(args.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "caldavfs"


def mount_background(tree: Tree, mountpoint: str, args: argparse.Namespace, fsname: str) -> int:
    """Fork; the child serves the mount, the parent returns 0 once the mount is live."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        os.setsid()

        def ready() -> None:
            os.write(write_end, b"ok")
            os.close(write_end)
            _detach_stdio(args.log_file)

        code = 0
        try:
            serve(tree, mountpoint, args, fsname=fsname, on_ready=ready)
        except BaseException as exc:  # report to the waiting parent, whatever happened
            with contextlib.suppress(OSError):
                os.write(write_end, b"error:" + message_for(exc).encode())
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read(4096)
    if answer.startswith(b"ok"):
        return 0
    detail = answer[len(b"error:"):].decode(errors="replace") if answer else "the mount process ended"
    print(f"caldavfs: mounting failed: {detail}", file=sys.stderr)
    return 1


def _notify_systemd() -> None:
    """Tell systemd (Type=notify) that the mount is live."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]  # an abstract socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", target)


def _detach_stdio(log_file: str | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    target = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else devnull
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(target, 2)


def cmd_mount(args: argparse.Namespace) -> int:
    _setup_logging(args)
    mountpoint = _check_mountpoint(args.mountpoint)
    if args.log_file:
        try:  # now, while there is someone to tell; the mount process opens it once it is live
            os.close(os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {args.log_file}: {exc.strerror}") from exc
    creds = resolve_credentials(args, args.url, interactive=sys.stdin.isatty())
    tree = build_tree(args.url, creds, args)
    parts = urlsplit(args.url)
    fsname = f"caldavfs:{parts.scheme}://{parts.netloc}{parts.path}"
    if args.foreground:
        serve(tree, mountpoint, args, fsname=fsname, on_ready=_notify_systemd)
        return 0
    return mount_background(tree, mountpoint, args, fsname)


def cmd_demo(args: argparse.Namespace) -> int:
    from caldavfs.radicale_server import LocalRadicale
    from caldavfs.sample import generate

    _setup_logging(args)
    workdir = Path(tempfile.mkdtemp(prefix="caldavfs-demo-"))
    mountpoint = _check_mountpoint(args.mountpoint) if args.mountpoint else str(workdir / "mnt")
    os.makedirs(mountpoint, exist_ok=True)
    server = LocalRadicale(workdir / "storage")
    server.seed(generate(items=args.items))
    server.start()
    try:
        creds = Credentials(server.username, server.password)
        args.timeout, args.ca_cert, args.insecure = DEFAULT_TIMEOUT, None, False
        tree = build_tree(server.url, creds, args)
        calendars = tree.calendar_names()

        def ready() -> None:
            print(f"caldavfs demo: Radicale at {server.url} with {args.items} sample items, "
                  f"mounted at {mountpoint}\n"
                  f"  calendars: {' '.join(calendars)}\n"
                  f"  try:  ls -l {mountpoint}/work\n"
                  f"        cat {mountpoint}/work/displayname; echo\n"
                  f"        grep -rl 'Dentist' {mountpoint}\n"
                  f"        rsync -a {mountpoint}/ /tmp/calendar-backup/\n"
                  f"  Ctrl-C unmounts, stops the server and removes its files.", flush=True)

        signal.signal(signal.SIGTERM, signal.default_int_handler)
        serve(tree, mountpoint, args, fsname=f"caldavfs:{server.url}", on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    for tool in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount"]):
        if shutil.which(tool[0]):
            return subprocess.run([*tool, args.mountpoint], check=False).returncode
    raise ConfigError("no fusermount or umount found")


def cmd_status(args: argparse.Namespace) -> int:
    try:
        raw = os.getxattr(args.mountpoint, "user.caldavfs.stats")
    except OSError as exc:
        raise ConfigError(f"{args.mountpoint} is not a running caldavfs mount ({exc.strerror})") from exc
    info = json.loads(raw)
    print(f"server:     {info['server']} ({'reachable' if info['reachable'] else 'UNREACHABLE'})")
    print(f"calendars:  {', '.join(info['calendars'])} ({info['items']} items)")
    print(f"cache:      {info['cache_entries']} items, {info['cache_bytes']} bytes in memory, "
          f"{info['cache_hits']} hits, {info['cache_misses']} misses")
    methods = ", ".join(f"{k} {v}" for k, v in sorted(info["by_method"].items()))
    print(f"requests:   {info['requests']} ({methods}), {info['bytes_received']} bytes received")
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    root = Path(args.mountpoint)
    if not root.is_dir():
        raise ConfigError(f"{args.mountpoint} is not a folder")
    calendars = sorted(p for p in root.iterdir() if p.is_dir())
    files = [f for cal in calendars for f in sorted(cal.iterdir()) if f.name.endswith(".ics")]
    failed = 0
    total_bytes = 0
    interactive = sys.stderr.isatty()
    for n, path in enumerate(files, 1):
        try:
            total_bytes += len(path.read_bytes())
        except OSError as exc:
            failed += 1
            print(f"caldavfs: {path}: {exc.strerror}", file=sys.stderr)
        if interactive or n == len(files) or n % 500 == 0:
            end = "\n" if n == len(files) or not interactive else ""
            print(f"\rprefetch: {n}/{len(files)} items, {total_bytes // 1024} KiB", end=end,
                  file=sys.stderr, flush=True)
    print(f"prefetch: {len(files) - failed} of {len(files)} items in {len(calendars)} calendars are cached",
          file=sys.stderr)
    return 1 if failed else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prefetch": cmd_prefetch,
    "status": cmd_status,
    "mount": cmd_mount,
    "demo": cmd_demo,
    "umount": cmd_umount,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and "://" in argv[0]:
        # mount -t fuse.caldavfs runs "caldavfs URL MOUNTPOINT -o opts" through mount.fuse3.
        try:
            argv = helper_argv(argv)
        except CaldavfsError as exc:
            print(f"caldavfs: {message_for(exc)}", file=sys.stderr)
            return 1
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except CaldavfsError as exc:
        print(f"caldavfs: {message_for(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"caldavfs: {message_for(exc)}", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())


def run_helper() -> None:
    """``mount.caldavfs`` and ``mount -t fuse.caldavfs``: fstab's way in."""
    try:
        argv = helper_argv(sys.argv[1:])
    except CaldavfsError as exc:
        print(f"caldavfs: {message_for(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(main(argv))
