"""Teams reloaded without a restart, on a real gateway process with two workers: a rotated key in the
config file, SIGHUP, new limits and models, and files that do not validate (the old teams stay)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from app.teams.keys import hash_key, new_key
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory
from tests.support.teamkit import embedding


def status(gw: Gateway, key: str, model: str = "text-embedding-v4", text: str = "reload") -> int:
    """A new connection per call: the two workers take turns accepting them."""
    reply = httpx.post(
        gw.url + "/v1/embeddings", json=embedding(text, model), headers={"Authorization": f"Bearer {key}"}
    )
    return reply.status_code


def until(check: Callable[[], bool], gw: Gateway, within: float = 15) -> None:
    """Polls `check` (tests/support/polling.py); a failure shows the end of the gateway's output."""

    def holds() -> bool:
        assert check(), gw.output()[-3000:]
        return True

    eventually(holds, within=within, interval=0.2)


def settled(gw: Gateway, want: dict[str, int]) -> bool:
    """Every key answers as wanted, ten times in a row (both workers)."""
    return all(status(gw, key) == code for _ in range(10) for key, code in want.items())


def refusing_workers(gw: Gateway) -> set[str]:
    """The workers (request id prefixes, one per process) that have answered 401 in the access log."""
    refused = (json.loads(line) for line in gw.output().splitlines() if line.startswith('{"request_id"'))
    return {entry["request_id"][:16] for entry in refused if entry.get("status") == 401}


def write(path: Path, teams: dict[str, dict[str, object]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"teams": teams}))
    os.replace(tmp, path)  # as an editor or the kubelet does: a new file in place of the old


@pytest.fixture
def config(tmp_path: Path) -> tuple[Path, str]:
    key = new_key()
    path = tmp_path / "teams.yaml"
    write(path, {"search": {"keys": [hash_key(key)]}})
    return path, key


def test_a_rotated_key_takes_effect_without_a_restart(gateways: GatewayFactory, config: tuple[Path, str]) -> None:
    path, old = config
    gw = gateways.start(config=str(path), workers=2, env={"TEAMS_RELOAD_S": "0.2"})
    assert settled(gw, {old: 200})
    new = new_key()
    write(path, {"search": {"keys": [hash_key(old), hash_key(new)]}})  # both, while the team switches
    until(lambda: settled(gw, {old: 200, new: 200}), gw)
    write(path, {"search": {"keys": [hash_key(new)]}})
    until(lambda: settled(gw, {old: 401, new: 200}), gw)
    assert gw.proc.poll() is None
    # `settled` can be answered by one worker alone (the kernel picks the worker that accepts each
    # connection), so each worker must be seen refusing the old key: a request id starts with its worker's
    # prefix. Only the last write refuses it: every 401 here comes from a worker that read the last file.
    until(lambda: status(gw, old) == 401 and len(refusing_workers(gw)) == 2, gw)
    # Each worker logs one line per change it saw: two, or one when a poll came after both writes (CI, load
    # 3). At least one worker saw the first (the new key answered while the old one still did).
    log = gw.output()
    assert 3 <= log.count("teams reloaded (file changed)") <= 4, log[-3000:]
    assert "search (keys)" in log
    assert old not in log and new not in log and hash_key(new) not in log
    assert "Child process" not in log and "died" not in log  # no worker was replaced


def test_sighup_reloads_every_worker_at_once(gateways: GatewayFactory, config: tuple[Path, str]) -> None:
    path, old = config
    gw = gateways.start(config=str(path), workers=2, env={"TEAMS_RELOAD_S": "0"})  # no polling
    # Both workers read the file before it changes: the start waits for one (a loaded CI run's second worker
    # started after the change, read the new file, and answered the new key without a SIGHUP).
    until(lambda: gw.output().count("Application startup complete") == 2, gw)
    assert settled(gw, {old: 200})
    new = new_key()
    write(
        path,
        {"search": {"keys": [hash_key(new)]}, "ops": {"keys": [hash_key(old)], "models": ["text-embedding-3-small"]}},
    )
    time.sleep(1)  # a while with the file changed and no SIGHUP: nothing may reload (the behaviour)
    assert settled(gw, {old: 200, new: 401}), "reloaded without SIGHUP"
    gw.proc.send_signal(signal.SIGHUP)  # to the supervisor, which passes it on
    until(lambda: settled(gw, {new: 200}), gw)
    # the old key now belongs to team ops, which may use one model only
    assert status(gw, old) == 403 and status(gw, old, model="text-embedding-3-small") == 200
    log = gw.output()
    assert log.count("teams reloaded (SIGHUP)") == 2 and "+ops" in log and "search (keys)" in log
    assert gw.proc.poll() is None


def test_new_limits_apply_without_a_restart(gateways: GatewayFactory, config: tuple[Path, str]) -> None:
    path, key = config
    gw = gateways.start(config=str(path), workers=1, env={"TEAMS_RELOAD_S": "0.2"})
    assert [status(gw, key, text=f"r{i}") for i in range(5)] == [200] * 5
    write(path, {"search": {"keys": [hash_key(key)], "rpm": 2}})
    until(lambda: "search (limits)" in gw.output(), gw)
    assert [status(gw, key, text=f"s{i}") for i in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("teams: [unclosed\n", "not valid YAML"),
        ("teams:\n  search:\n    keys: ['eg-PLAINTEXT-KEY-pasted-by-mistake-0123456789']\n", "key hash"),
        ("teams:\n  search:\n    keys: []\n", "no team has a key"),
        ("teams:\n  search:\n    rpm: -1\n", "rpm"),
    ],
)
def test_a_bad_file_is_refused_and_the_old_teams_stay(
    gateways: GatewayFactory, config: tuple[Path, str], body: str, why: str
) -> None:
    path, key = config
    gw = gateways.start(config=str(path), workers=1, env={"TEAMS_RELOAD_S": "0.2"})
    path.write_text(body)
    until(lambda: "teams not reloaded" in gw.output(), gw)
    line = next(x for x in gw.output().splitlines() if "teams not reloaded" in x)
    assert "the previous teams stay" in line and why in line and "PLAINTEXT" not in gw.output()
    assert settled(gw, {key: 200})
