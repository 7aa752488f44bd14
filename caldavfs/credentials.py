"""Where the password comes from: never the command line (it would show in ``ps``).

The order is --password-file, --password-command, --keyring, $CALDAVFS_PASSWORD, ~/.netrc,
then a prompt on a terminal. A --token-command replaces the password altogether.
"""

from __future__ import annotations

import argparse
import getpass
import netrc
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from caldavfs.errors import ConfigError


@dataclass
class Credentials:
    username: str | None
    password: str | None


def resolve_credentials(args: argparse.Namespace, url: str, *, interactive: bool) -> Credentials:
    """Username and password from the sources the README lists, in that order."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is not None:
        raise ConfigError("put no credentials in the URL; use --username and a password source")
    username: str | None = args.username
    password: str | None = None
    if getattr(args, "token_command", None):
        return Credentials(username, None)  # a bearer token instead of a password
    if args.password_file:
        try:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the password file: {exc.strerror}") from exc
        password = lines[0] if lines else ""
    elif args.password_command:
        password = password_from_command(args.password_command)
    elif getattr(args, "keyring", False):
        password = _password_from_keyring(parts.hostname or "", username)
    elif "CALDAVFS_PASSWORD" in os.environ:
        password = os.environ["CALDAVFS_PASSWORD"]
    else:
        login, secret = _from_netrc(parts.hostname or "")
        if secret is not None and (username is None or username == login):
            username, password = login or username, secret
    if username is not None and password is None:
        if not interactive:
            raise ConfigError(
                "no password: set CALDAVFS_PASSWORD, --password-file, --password-command or ~/.netrc"
            )
        password = getpass.getpass(f"Password for {username} at {parts.hostname}: ")
    return Credentials(username, password)


def _password_from_keyring(host: str, username: str | None) -> str:
    if username is None:
        raise ConfigError("--keyring needs --username")
    try:
        import keyring  # an optional extra
    except ImportError as exc:
        raise ConfigError("--keyring needs the keyring package: pip install 'caldavfs[keyring]'") from exc
    try:
        secret = keyring.get_password(f"caldavfs:{host}", username)
    except Exception as exc:  # keyring backends raise their own types
        raise ConfigError(f"the keyring could not be read ({type(exc).__name__})") from exc
    if secret is None:
        raise ConfigError(f"no password in the keyring for service caldavfs:{host}, user {username} "
                          f"(store one with: keyring set caldavfs:{host} {username})")
    return str(secret)


def password_from_command(command: str) -> str:
    try:
        done = subprocess.run(command, shell=True, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError("the password command did not finish within 60 s") from exc
    if done.returncode != 0:
        # Its output may hold the secret: report the status only.
        raise ConfigError(f"the password command failed with exit status {done.returncode}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return lines[0] if lines else ""


def _from_netrc(host: str) -> tuple[str | None, str | None]:
    try:
        entry = netrc.netrc().authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None, None
    if entry is None:
        return None, None
    login, _account, secret = entry
    return login or None, secret
