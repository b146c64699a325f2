"""Fixtures shared by every kind of test, and the markers applied by folder.

The tests are grouped by what they need (README, Tests): tests/unit (in-process, nothing but the package),
tests/redis (a real redis-server), tests/e2e (gateway, stand-in and tool processes), tests/clients (the
client matrix), tests/docker (a Docker engine of their own). Each test gets the marker of its folder, so
`pytest -m "unit or redis"` and `pytest tests/unit tests/redis` select the same tests. The processes these
fixtures start are in tests/support/processes.py; every one listens on a free loopback port and is stopped
when the fixture's scope ends; nothing here touches a Redis the tests did not start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.support.fileserver import serving
from tests.support.polling import eventually
from tests.support.processes import (
    SHARED_LOGS,
    Gateway,
    GatewayFactory,
    RedisServer,
    StandIn,
    start_redis,
    start_standin,
    stop,
)

TESTS = Path(__file__).resolve().parent

# Hypothesis's per-example deadline (200 ms) is a timing assertion: on a loaded 2-core machine test_keys'
# examples passed it (DeadlineExceeded at load 15) though nothing was wrong; the health check of slow data
# generation is one too. Speed is measured by bench/.
hypothesis_settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("gateway")
KINDS = ("unit", "redis", "e2e", "clients", "docker")


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared = os.environ.get(SHARED_LOGS)
    if not shared:
        return tmp_path_factory.mktemp("logs")
    folder = Path(shared) / os.environ.get("PYTEST_XDIST_WORKER", f"session-{os.getpid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.proc)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test module's own: its tests pause or stop it, which must disturb no other."""
    server = start_redis(tmp_path_factory.mktemp("redis-own"))
    yield server
    server.resume()
    stop(server.proc)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A folder of the module's own served over HTTP on loopback ("127.0.0.1:PORT", the folder): input files
    the gateway fetches (DashScope tasks' input.url, allowlisted for the fetcher)."""
    root = tmp_path_factory.mktemp("docs")
    with serving(root) as where:
        yield where, root


@pytest.fixture(scope="session")
def standin_session(logdir: Path) -> Iterator[StandIn]:
    s = start_standin(logdir / "standin.log")
    yield s
    stop(s.proc)


@pytest.fixture
def standin(standin_session: StandIn) -> StandIn:
    standin_session.reset()
    return standin_session


# The fixtures being set up, innermost last (pytest_fixture_setup), and the gateways the running test
# started itself: every gateway is stopped when the scope of what started it ends, so that no module's
# gateway lives on into (and calls the stand-in during) the next module's tests.
SETTING_UP: list[pytest.FixtureDef[object]] = []
STARTED_BY_TEST: list[Gateway] = []


class FixtureSetups:
    """A plugin of its own: a conftest's hooks see only the nodes under its folder, and the session's
    fixtures are set up by the session node."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[object]) -> Iterator[object]:
        SETTING_UP.append(fixturedef)
        try:
            return (yield)
        finally:
            SETTING_UP.pop()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FixtureSetups(), "fixture-setups")


def stop_with_its_scope(gw: Gateway) -> None:
    if SETTING_UP:
        SETTING_UP[-1].addfinalizer(lambda: stop(gw.proc))
    else:
        STARTED_BY_TEST.append(gw)


@pytest.fixture(autouse=True)
def _stop_gateways_the_test_started() -> Iterator[None]:
    yield
    while STARTED_BY_TEST:
        stop(STARTED_BY_TEST.pop().proc)


@pytest.fixture(scope="session")
def gateways(standin_session: StandIn, logdir: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(standin_session, logdir)
    factory.on_start = stop_with_its_scope
    yield factory
    factory.close()
    if os.environ.get(SHARED_LOGS):
        (logdir / "secrets.txt").write_text("\n".join(sorted(factory.secrets)))


@pytest.fixture(scope="session")
def model_gateways(gateways: GatewayFactory, redis_server: RedisServer) -> Callable[[str], Gateway]:
    """The shared gateways by name ("redis": the session's redis-server; "memory": no REDIS_URL), the local
    model as installed, each started when first needed and returned once ready. On a pytest-xdist worker (the
    e2e stage: nearly every worker needs both) the first need starts both: the second one loads the model (15
    to 60 s on a loaded 2-core machine) while the first one's tests run, not after them."""
    started: dict[str, Gateway] = {}

    def shared(name: str) -> Gateway:
        for wanted in (name, "redis", "memory") if os.environ.get("PYTEST_XDIST_WORKER") else (name,):
            if wanted not in started:
                url = redis_server.url if wanted == "redis" else None
                started[wanted] = gateways.start(redis_url=url, local_model=True)
        return ready(started[name])

    return shared


@pytest.fixture(scope="session")
def gateway_redis(model_gateways: Callable[[str], Gateway]) -> Gateway:
    """The shared gateway of the end-to-end tests: one worker, the session's redis-server, the local model as
    installed (ready before the first test)."""
    return model_gateways("redis")


@pytest.fixture(scope="session")
def gateway_memory(model_gateways: Callable[[str], Gateway]) -> Gateway:
    """A gateway with no REDIS_URL: the in-process cache serves; the local model as installed."""
    return model_gateways("memory")


def ready(gw: Gateway) -> Gateway:
    """`gw` once its /readyz says so (the local model, when installed, loads in the background). One client
    for the wait (a new one per poll costs 25 ms of CPU), a poll every 0.2 s: the model loads meanwhile."""
    with httpx.Client() as client:

        def says_ready() -> bool:
            return client.get(gw.url + "/readyz").status_code == 200

        eventually(says_ready, within=120, interval=0.2, what="the gateway ready")
    return gw


def kind_of(item: pytest.Item) -> str | None:
    parts = item.path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in KINDS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked by its folder; a test file outside the five folders is an error (put it where its
    kind is). Tests marked run_last (the session-wide secrets grep) run after everything else."""
    misplaced = sorted({str(item.path.relative_to(TESTS)) for item in items if kind_of(item) is None})
    if misplaced:
        raise pytest.UsageError(f"test files outside tests/{{{','.join(KINDS)}}}/: {misplaced}")
    for item in items:
        item.add_marker(str(kind_of(item)))
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
