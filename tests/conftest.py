"""Fixtures: real Radicale, Xandikos and SabreDAV servers on 127.0.0.1, seeded with
tests.servers.standard_dataset.

- `radicale`, `xandikos`, `sabredav`: session-scoped, seeded once; treat their data as read-only.
- `server`: parametrized over them, for tests that should hold on each server.
- `fresh_radicale`, `fresh_xandikos`, `fresh_sabredav`, `fresh_server`: a new seeded server per test, for
  tests that write.

SabreDAV (Debian's php-cli, php-sqlite3, php-sabre-dav) joins `server` / `fresh_server` when php is
installed, and always when $CI is set: there a missing php or php-sabre-dav fails the tests, never skips them.

Each Server carries what was seeded in `server.dataset`. Tests using any of these fixtures get the
`integration` marker automatically, so `-m "not integration"` runs the pure unit tests only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers

SERVER_FIXTURES = frozenset({"radicale", "xandikos", "sabredav", "server", "fresh_radicale", "fresh_xandikos",
                             "fresh_sabredav", "fresh_server"})
SABREDAV_AUTOLOAD = Path("/usr/share/php/Sabre/autoload.php")  # Debian's php-sabre-dav
KINDS = ["radicale", "xandikos"] + (["sabredav"] if os.environ.get("CI") or shutil.which("php") else [])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _missing(kind: str) -> str | None:
    if kind != "sabredav":
        return None if importlib.util.find_spec(kind) else f"{kind} is not installed"
    if shutil.which("php") is None:
        return "php is not installed (Debian packages php-cli php-sqlite3 php-sabre-dav)"
    if not SABREDAV_AUTOLOAD.exists():
        return f"{SABREDAV_AUTOLOAD} is missing (Debian package php-sabre-dav)"
    return None


def _running(kind: str, tmp: Path) -> Iterator[servers.Server]:
    missing = _missing(kind)
    if missing and kind == "sabredav" and os.environ.get("CI"):
        pytest.fail(f"{missing}; CI is set, so SabreDAV tests must not be skipped", pytrace=False)
    if missing:
        pytest.skip(missing)
    srv = servers.start(kind, tmp)
    try:
        servers.standard_dataset(srv)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    yield from _running("radicale", tmp_path_factory.mktemp("radicale"))


@pytest.fixture(scope="session")
def xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    yield from _running("xandikos", tmp_path_factory.mktemp("xandikos"))


@pytest.fixture(scope="session")
def sabredav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    yield from _running("sabredav", tmp_path_factory.mktemp("sabredav"))


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> servers.Server:
    srv: servers.Server = request.getfixturevalue(request.param)
    return srv


@pytest.fixture
def fresh_radicale(tmp_path: Path) -> Iterator[servers.Server]:
    yield from _running("radicale", tmp_path / "radicale")


@pytest.fixture
def fresh_xandikos(tmp_path: Path) -> Iterator[servers.Server]:
    yield from _running("xandikos", tmp_path / "xandikos")


@pytest.fixture
def fresh_sabredav(tmp_path: Path) -> Iterator[servers.Server]:
    yield from _running("sabredav", tmp_path / "sabredav")


@pytest.fixture(params=KINDS)
def fresh_server(request: pytest.FixtureRequest) -> servers.Server:
    srv: servers.Server = request.getfixturevalue(f"fresh_{request.param}")
    return srv
