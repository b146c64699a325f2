"""bench/rediscost.py runs end to end: a gateway's Redis CPU per hit, miss, limited and refused request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rediscost_reports_every_kind_of_request(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    args = [sys.executable, "-m", "bench.rediscost", "--requests", "40", "--repeat", "1", "--seconds", "1"]
    args += ["--json", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert list(results) == ["hit", "miss", "limited hit", "refused"]
    assert all(r["cpu_us_per_request"] > 0 and r["requests"] > 0 for r in results.values())

    # What each kind of request sends to Redis: at most one MGET per hit (the reads of one event-loop turn's
    # requests go together); a miss claims and writes; a whole hit of a limited team adds its admission
    # (nothing to settle after a whole hit): at most one script each, one per turn for the turn's requests
    # of a team; a refused request reads the cache (its admission reserves tokens for the misses only), then
    # asks Redis, unless its process already holds a refusal of that team's rpm (then not).
    # Scripts per kind, besides the usage ledger's batches: one script call per second of the scenario (for
    # the gateway's one process), whatever its number of requests: never one per request.
    def scripts(kind: str) -> tuple[float, float]:
        """(script calls, the most the ledger's batches can add) of a scenario."""
        r = results[kind]
        return r["commands"].get("evalsha", {"calls_per_request": 0})["calls_per_request"] * r["requests"], r[
            "seconds"
        ] + 2

    def per_request(kind: str, command: str, full: bool = False) -> float:
        r = results[kind]["full_load"] if full else results[kind]
        return float(r["commands"].get(command, {"calls_per_request": 0})["calls_per_request"])

    assert 0 < per_request("hit", "mget") <= 1
    calls, batches = scripts("hit")
    assert calls <= batches  # no script per hit
    assert results["miss"]["commands"]["set"]["calls_per_request"] >= 8
    assert 0 < per_request("limited hit", "mget") <= 1
    calls, batches = scripts("limited hit")
    n = results["limited hit"]["requests"]
    assert 1 <= calls < 1.1 * n + batches  # at most one script each (a late one resent), and the batches
    # Kept busy by 16 connections, the gateway has several requests per loop turn: they share their calls.
    assert per_request("hit", "mget", full=True) < 1
    assert per_request("limited hit", "evalsha", full=True) < 1
    # A refusal for the rpm is remembered by the process until the time Redis named (docs/limits.md): only
    # the requests already in flight when the first refusal came back ask Redis (16 connections at once).
    calls, batches = scripts("refused")
    assert 1 <= calls <= 16 + batches, calls
    assert 0 < per_request("refused", "mget") <= 1
    assert "| hit |" in done.stdout and "| refused |" in done.stdout
