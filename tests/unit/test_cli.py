"""cli: credentials, messages, and `main` failing cleanly before anything is mounted."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caldavfs import cli, credentials
from caldavfs import errors as E
from tests import servers
from tests.httpstub import Reply, Stub

URL = "http://127.0.0.1:5232/"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No password or username from the developer's environment; HOME without a .netrc."""
    for var in ("CALDAVFS_PASSWORD", "CALDAVFS_USERNAME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _args(*extra: str, url: str = URL) -> argparse.Namespace:
    return cli.build_parser().parse_args(["mount", url, "/mnt", *extra])


def _netrc(home: Path, text: str) -> None:
    path = home / ".netrc"
    path.write_text(text)
    path.chmod(0o600)


def _pwfile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pw"
    path.write_text(text)
    return str(path)


def test_password_file_wins(tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _netrc(clean_env, "machine 127.0.0.1 login alice password from-netrc\n")
    monkeypatch.setenv("CALDAVFS_PASSWORD", "from-env")
    args = _args("--username", "alice", "--password-file", _pwfile(tmp_path, "from-file\nsecond\n"),
                 "--password-command", "echo from-command")
    assert cli.resolve_credentials(args, URL, interactive=False) == cli.Credentials("alice", "from-file")


def test_password_command_before_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _netrc(clean_env, "machine 127.0.0.1 login alice password from-netrc\n")
    monkeypatch.setenv("CALDAVFS_PASSWORD", "from-env")
    args = _args("--username", "alice", "--password-command", "printf 'from-command\\nx\\n'")
    assert cli.resolve_credentials(args, URL, interactive=False).password == "from-command"


def test_env_before_netrc(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _netrc(clean_env, "machine 127.0.0.1 login alice password from-netrc\n")
    monkeypatch.setenv("CALDAVFS_PASSWORD", "from-env")
    assert cli.resolve_credentials(_args("--username", "alice"), URL, interactive=False).password == "from-env"


def test_netrc_gives_login_and_password(clean_env: Path) -> None:
    _netrc(clean_env, "machine other.example login bob password nope\n"
                      "machine 127.0.0.1 login alice password from-netrc\n")
    assert cli.resolve_credentials(_args(), URL, interactive=False) == cli.Credentials("alice", "from-netrc")


def test_netrc_for_another_user_is_not_used(clean_env: Path) -> None:
    _netrc(clean_env, "machine 127.0.0.1 login bob password bobs\n")
    with pytest.raises(E.ConfigError):
        cli.resolve_credentials(_args("--username", "alice"), URL, interactive=False)


def test_username_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALDAVFS_USERNAME", "carol")
    monkeypatch.setenv("CALDAVFS_PASSWORD", "pw")
    assert cli.resolve_credentials(_args(), URL, interactive=False) == cli.Credentials("carol", "pw")


def test_no_password_not_interactive_is_an_error() -> None:
    with pytest.raises(E.ConfigError) as info:
        cli.resolve_credentials(_args("--username", "alice"), URL, interactive=False)
    assert "CALDAVFS_PASSWORD" in str(info.value)


def test_prompt_when_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials.getpass, "getpass", lambda prompt: "typed")
    assert cli.resolve_credentials(_args("--username", "alice"), URL, interactive=True).password == "typed"


@pytest.mark.parametrize("url", ["http://alice:pw@127.0.0.1/", "http://alice@127.0.0.1/"])
def test_credentials_in_url_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "pw")
    with pytest.raises(E.ConfigError):
        cli.resolve_credentials(_args(url=url), url, interactive=False)


def test_password_command_failure_hides_output() -> None:
    args = _args("--username", "alice", "--password-command", "echo hunter2-secret; echo hunter2 >&2; exit 3")
    with pytest.raises(E.ConfigError) as info:
        cli.resolve_credentials(args, URL, interactive=False)
    assert "hunter2" not in str(info.value)
    assert "3" in str(info.value)


def test_password_file_missing(tmp_path: Path) -> None:
    args = _args("--username", "alice", "--password-file", str(tmp_path / "absent"))
    with pytest.raises(E.ConfigError):
        cli.resolve_credentials(args, URL, interactive=False)


@pytest.mark.parametrize(("exc", "words"), [
    (E.UnauthorizedError("401"), "authentication failed"),
    (E.ForbiddenError("403"), "access denied"),
    (E.NotCalDAVError("no home"), "CalDAV"),
    (E.TransportError("refused"), "cannot reach"),
    (E.InvalidResponseError("bad xml"), "not usable"),
    (E.ConfigError("bad option"), "bad option"),
    (ValueError("oops"), "unexpected error"),
])
def test_message_for(exc: BaseException, words: str) -> None:
    msg = cli.message_for(exc)
    assert words in msg
    assert "\n" not in msg


# --- main -------------------------------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def test_main_missing_mountpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["mount", URL, str(tmp_path / "missing")])
    assert code != 0
    assert "not a directory" in _one_line(capsys.readouterr().err)


def test_main_wrong_password(radicale: servers.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "wrong-" + radicale.password)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = cli.main(["mount", radicale.base_url, str(mnt), "--username", "alice", "--timeout", "10"])
    assert code == 1
    line = _one_line(capsys.readouterr().err)
    assert "authentication failed" in line
    assert "wrong-" not in line
    assert not _mounted(mnt)


def test_main_closed_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "pw")
    code = cli.main(["mount", f"http://127.0.0.1:{servers.free_port()}/", str(tmp_path),
                     "--username", "alice", "--timeout", "5"])
    assert code != 0
    assert "cannot reach" in _one_line(capsys.readouterr().err)
    assert not _mounted(tmp_path)


@pytest.mark.parametrize("reply", [Reply(404, b"<html>not found</html>", {"Content-Type": "text/html"}),
                                   Reply(200, b"<html>hello</html>", {"Content-Type": "text/html"})])
def test_main_not_caldav(reply: Reply, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "pw")
    with Stub([reply]) as stub:
        code = cli.main(["mount", stub.url, str(tmp_path), "--username", "alice", "--timeout", "5"])
        assert stub.requests
    assert code != 0
    assert "CalDAV" in _one_line(capsys.readouterr().err)
    assert not _mounted(tmp_path)


def test_command_line_closed_port_prints_one_line(tmp_path: Path, clean_env: Path) -> None:
    """The real process (logging configured as a user gets it), not main() under pytest's log capture."""
    env = dict(os.environ, CALDAVFS_PASSWORD="pw", HOME=str(clean_env))
    done = subprocess.run([sys.executable, "-m", "caldavfs", "mount", f"http://127.0.0.1:{servers.free_port()}/",
                           str(tmp_path), "--username", "alice", "--timeout", "5"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1
    assert "cannot reach" in _one_line(done.stderr)
