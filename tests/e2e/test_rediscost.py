"""bench/rediscost.py runs end to end: a gateway's Redis CPU per hit, miss, limited and refused request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rediscost_reports_every_kind_of_request(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    args = [sys.executable, "-m", "bench.rediscost", "--requests", "40", "--repeat", "1", "--json", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert list(results) == ["hit", "miss", "limited hit", "refused"]
    assert all(r["cpu_us_per_request"] > 0 and r["requests"] > 0 for r in results.values())

    # What each kind of request sends to Redis: one MGET per hit; a miss claims and writes; a whole hit of a
    # limited team adds one script (its admission: nothing to settle after a whole hit); a refused request
    # reads the cache (its admission reserves tokens for the misses only), then runs one script, unless its
    # process already holds a refusal of that team's rpm (then none).
    # Scripts per kind, besides the usage ledger's batches: one script call per second of the scenario (for
    # the gateway's one process), whatever its number of requests: never one per request.
    def scripts(kind: str) -> tuple[float, float]:
        """(script calls, the most the ledger's batches can add) of a scenario."""
        r = results[kind]
        return r["commands"].get("evalsha", {"calls_per_request": 0})["calls_per_request"] * r["requests"], r[
            "seconds"
        ] + 2

    assert results["hit"]["commands"]["mget"]["calls_per_request"] == 1
    calls, batches = scripts("hit")
    assert calls <= batches  # no script per hit
    assert results["miss"]["commands"]["set"]["calls_per_request"] >= 8
    assert results["limited hit"]["commands"]["mget"]["calls_per_request"] == 1
    calls, batches = scripts("limited hit")
    n = results["limited hit"]["requests"]
    assert n <= calls < 1.1 * n + batches  # one script each (a late one resent), and the batches
    # A refusal for the rpm is remembered by the process until the time Redis named (docs/limits.md): only
    # the requests already in flight when the first refusal came back ask Redis (16 connections at once).
    calls, batches = scripts("refused")
    assert 1 <= calls <= 16 + batches, calls
    assert results["refused"]["commands"]["mget"]["calls_per_request"] == 1
    assert "| hit |" in done.stdout and "| refused |" in done.stdout
