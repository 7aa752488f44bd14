"""mount(8)'s way in: ``URL MOUNTPOINT -o opts`` as fstab, mount.fuse3 and mount.caldavfs give it."""

from __future__ import annotations

from collections.abc import Sequence

from caldavfs.errors import ConfigError

# mount(8) options that are for mount(8), fstab or systemd, not for us.
_MOUNT_ONLY = frozenset({"_netdev", "noauto", "auto", "nofail", "user", "users", "nouser", "defaults", "rw",
                         "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime"})
# -o name=value options of the helper that become caldavfs options.
_HELPER_OPTIONS = {"username": "--username", "password_file": "--password-file",
                   "password_command": "--password-command", "cache_ttl": "--cache-ttl",
                   "timeout": "--timeout", "cache_dir": "--cache-dir", "ca_cert": "--ca-cert",
                   "log_file": "--log-file"}


def helper_argv(argv: Sequence[str]) -> list[str]:
    """``URL MOUNTPOINT -o opts`` as mount(8), mount.fuse3 and fstab give it -> ``mount ...``.

    Credentials travel as option values that name a file or command, so the password itself
    is never on a command line (``ps``).
    """
    positional: list[str] = []
    options: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o" and args:
            options.extend(o.strip() for o in args.pop(0).split(",") if o.strip())
        elif arg.startswith("-o") and len(arg) > 2:
            options.extend(o.strip() for o in arg[2:].split(",") if o.strip())
        elif arg in ("-n", "-s", "-v", "-f"):  # mount(8)'s no-mtab, sloppy, verbose, fake
            continue
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ConfigError("usage: mount.caldavfs URL MOUNTPOINT [-o username=NAME,password_file=FILE,...]")
    out = ["mount", *positional]
    fuse: list[str] = []
    for option in options:
        key, sep, value = option.partition("=")
        if key in _HELPER_OPTIONS and sep:
            out += [_HELPER_OPTIONS[key], value]
        elif key == "password":
            raise ConfigError("put no password in mount options; use password_file= or password_command=")
        elif key in _MOUNT_ONLY or key.startswith(("x-systemd.", "comment=", "x-")):
            continue
        else:
            fuse.append(option)
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out
