"""Fixtures: real Radicale and Xandikos servers on 127.0.0.1, seeded with tests.servers.standard_dataset.

- `radicale`, `xandikos`: session-scoped, seeded once; treat their data as read-only.
- `server`: parametrized over both, for tests that should hold on each server.
- `fresh_radicale`, `fresh_xandikos`, `fresh_server`: a new seeded server per test, for tests that write.

Each Server carries what was seeded in `server.dataset`. Tests using any of these fixtures get the
`integration` marker automatically, so `-m "not integration"` runs the pure unit tests only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers

SERVER_FIXTURES = frozenset(
    {"radicale", "xandikos", "server", "fresh_radicale", "fresh_xandikos", "fresh_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _running(kind: str, tmp: Path) -> Iterator[servers.Server]:
    if importlib.util.find_spec(kind) is None:
        pytest.skip(f"{kind} is not installed")
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


@pytest.fixture(params=["radicale", "xandikos"])
def server(request: pytest.FixtureRequest) -> servers.Server:
    srv: servers.Server = request.getfixturevalue(request.param)
    return srv


@pytest.fixture
def fresh_radicale(tmp_path: Path) -> Iterator[servers.Server]:
    yield from _running("radicale", tmp_path / "radicale")


@pytest.fixture
def fresh_xandikos(tmp_path: Path) -> Iterator[servers.Server]:
    yield from _running("xandikos", tmp_path / "xandikos")


@pytest.fixture(params=["radicale", "xandikos"])
def fresh_server(request: pytest.FixtureRequest) -> servers.Server:
    srv: servers.Server = request.getfixturevalue(f"fresh_{request.param}")
    return srv
