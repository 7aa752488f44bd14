"""Credentials beyond the mount issue's: a bearer token from --token-command (run again once on a 401)
and a password from the system keyring (--keyring, the optional `keyring` package)."""

from __future__ import annotations

import logging
import shlex
import sys
import types
from pathlib import Path

import pytest

from caldavfs import cli, credentials
from caldavfs.client import Client
from caldavfs.dav import DavSession
from caldavfs.errors import ConfigError, UnauthorizedError
from caldavfs.tree import Tree
from tests.faults.stubdav import FakeCalDAV, FakeItem, ics
from tests.httpstub import Reply, Request, Stub

OLD = "old-token-7d1f0c"
NEW = "new-token-b93e55"
MULTISTATUS = (b'<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response>'
               b"<D:href>/alice/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype>"
               b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>")


def token_script(tmp_path: Path, tokens: tuple[str, ...] = (OLD, NEW)) -> tuple[str, Path]:
    """A shell command printing tokens[0] on its first run, tokens[1] on its second, ...; runs are counted."""
    counter = tmp_path / "runs"
    script = tmp_path / "token.sh"
    cases = "".join(f"  {n}) echo {tok} ;;\n" for n, tok in enumerate(tokens, 1))
    script.write_text(f'n=$(cat "{counter}" 2>/dev/null || echo 0)\nn=$((n + 1))\necho "$n" > "{counter}"\n'
                      f'case "$n" in\n{cases}  *) echo {tokens[-1]} ;;\nesac\n')
    return f"sh {shlex.quote(str(script))}", counter


def runs(counter: Path) -> int:
    return int(counter.read_text().strip()) if counter.exists() else 0


def bearer_gate(req: Request) -> Reply | None:
    auth = req.headers.get("Authorization", "")
    if auth == f"Bearer {NEW}":
        return None
    return Reply(401, b"expired", {"WWW-Authenticate": 'Bearer realm="cal", error="invalid_token"'})


def session_for(command: str) -> DavSession:
    # The way cli.build_tree wires --token-command.
    return DavSession(timeout=5, retries=0, token_command=lambda: credentials.password_from_command(command))


def test_token_command_refreshed_once_on_401(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    command, counter = token_script(tmp_path)

    def handle(req: Request) -> Reply:
        return bearer_gate(req) or Reply(207, MULTISTATUS, {"Content-Type": "application/xml"})

    with Stub(handle) as stub:
        session = session_for(command)
        session.trust(stub.url)
        url = stub.url + "alice/"
        response = session.request("PROPFIND", url, depth="0", body=b"<propfind xmlns='DAV:'><allprop/></propfind>")
        assert response.status == 207
        assert runs(counter) == 2
        sent = [r.headers.get("Authorization") for r in stub.requests]
        assert sent == [f"Bearer {OLD}", f"Bearer {NEW}"]
        # The new token is kept: no third run for the next request.
        assert session.request("PROPFIND", url, depth="0").status == 207
        assert runs(counter) == 2
        assert stub.requests[-1].headers.get("Authorization") == f"Bearer {NEW}"
    logs = caplog.text
    assert "refused" in logs, logs  # the refresh is logged (so the check below looks at real log output)
    assert OLD not in logs and NEW not in logs
    assert "Bearer " not in logs


def test_token_command_refused_twice_is_unauthorized(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    command, counter = token_script(tmp_path, tokens=(OLD, "still-bad-token-4e2a"))
    with Stub(lambda req: Reply(401, b"", {"WWW-Authenticate": 'Bearer realm="cal"'})) as stub:
        session = session_for(command)
        session.trust(stub.url)
        with pytest.raises(UnauthorizedError):
            session.request("PROPFIND", stub.url + "alice/", depth="0")
        assert runs(counter) == 2  # once, and once more after the 401; no loop
        assert len(stub.requests) == 2
    assert OLD not in caplog.text and "still-bad-token-4e2a" not in caplog.text


class BearerCalDAV(FakeCalDAV):
    """The stub account, behind a bearer token that expires after the first use."""

    def handle(self, req: Request) -> Reply:
        return bearer_gate(req) or super().handle(req)


def test_token_command_through_client_and_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    command, counter = token_script(tmp_path)
    body = ics("uid-1", "Standup")
    with BearerCalDAV([FakeItem("/alice/work/standup.ics", body)]) as fake:
        session = session_for(command)
        session.trust(fake.url)
        tree = Tree(Client(session), fake.home_url, ttl=60)
        assert tree.calendar_names() == ["work"]
        assert tree.read_file("/work/standup.ics") == body
        assert runs(counter) == 2
        assert all(r.headers.get("Authorization", "").startswith("Bearer ") for r in fake.stub.requests)
    assert OLD not in caplog.text and NEW not in caplog.text


def test_token_command_skips_password_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "not-used")
    args = cli.build_parser().parse_args(["mount", "https://cal.example.com/", str(tmp_path), "--username",
                                          "alice", "--token-command", "echo tok"])
    creds = cli.resolve_credentials(args, args.url, interactive=False)
    assert creds.username == "alice"
    assert creds.password is None


# --- keyring ----------------------------------------------------------------------------------


def keyring_args(tmp_path: Path, *extra: str) -> object:
    return cli.build_parser().parse_args(["mount", "https://cal.example.com/dav/", str(tmp_path), "--keyring",
                                          *extra])


@pytest.fixture
def no_env_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CALDAVFS_PASSWORD", raising=False)
    monkeypatch.delenv("CALDAVFS_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc


def test_keyring_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_env_password: None) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # import keyring -> ImportError
    args = keyring_args(tmp_path, "--username", "alice")
    with pytest.raises(ConfigError) as info:
        cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    assert "pip install" in str(info.value)
    assert "keyring" in str(info.value)


def fake_keyring(store: dict[tuple[str, str], str], calls: list[tuple[str, str]]) -> types.ModuleType:
    module = types.ModuleType("keyring")

    def get_password(service: str, username: str) -> str | None:
        calls.append((service, username))
        return store.get((service, username))

    module.get_password = get_password  # type: ignore[attr-defined]
    return module


def test_keyring_returns_the_stored_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             no_env_password: None) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setitem(sys.modules, "keyring",
                        fake_keyring({("caldavfs:cal.example.com", "alice"): "kr-secret"}, calls))
    args = keyring_args(tmp_path, "--username", "alice")
    creds = cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    assert (creds.username, creds.password) == ("alice", "kr-secret")
    assert calls == [("caldavfs:cal.example.com", "alice")]


def test_keyring_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           no_env_password: None) -> None:
    monkeypatch.setenv("CALDAVFS_PASSWORD", "env-secret")
    monkeypatch.setitem(sys.modules, "keyring",
                        fake_keyring({("caldavfs:cal.example.com", "alice"): "kr-secret"}, []))
    args = keyring_args(tmp_path, "--username", "alice")
    creds = cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    assert creds.password == "kr-secret"


def test_keyring_missing_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_env_password: None) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setitem(sys.modules, "keyring", fake_keyring({("caldavfs:other.example.com", "alice"): "x"}, calls))
    args = keyring_args(tmp_path, "--username", "alice")
    with pytest.raises(ConfigError) as info:
        cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    message = str(info.value)
    assert "caldavfs:cal.example.com" in message and "alice" in message, message
    assert "keyring set" in message, message
    assert calls == [("caldavfs:cal.example.com", "alice")]


def test_keyring_backend_error_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 no_env_password: None) -> None:
    module = types.ModuleType("keyring")

    def broken(service: str, username: str) -> str | None:
        raise RuntimeError("no backend; dbus said secret-detail-123")

    module.get_password = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", module)
    args = keyring_args(tmp_path, "--username", "alice")
    with pytest.raises(ConfigError) as info:
        cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    assert "keyring" in str(info.value)


def test_keyring_needs_a_username(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_env_password: None) -> None:
    monkeypatch.setitem(sys.modules, "keyring", fake_keyring({}, []))
    args = keyring_args(tmp_path)
    with pytest.raises(ConfigError) as info:
        cli.resolve_credentials(args, "https://cal.example.com/dav/", interactive=False)  # type: ignore[arg-type]
    assert "--username" in str(info.value)
