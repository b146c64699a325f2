"""The soak in quick mode (about 20 s): zero 5xx and no unexpected status under a paced mixed workload
from a separate process. The documented 10-minute run and its results are in docs/hardening.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.soak import KEY
from tests.support.processes import ROOT, GatewayFactory, clean_env


def test_quick_soak_has_no_server_errors(gateways: GatewayFactory, tmp_path: Path) -> None:
    gateways.secrets.add(KEY)  # its gateway log lands in the session's log folder: test_secrets greps it
    out = tmp_path / "soak.json"
    args = ["--seconds", "16", "--interval-s", "4", "--rate", "60", "--concurrency", "8"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args, "--json", str(out), "--logdir", str(gateways.logdir)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    verdict = result["verdict"]
    assert verdict["5xx"] == 0 and verdict["unexpected"] == 0 and verdict["transport_errors"] == 0
    assert verdict["requests"] >= 500  # the pace was kept (60/s for 16 s, with a wide margin)
    rows = result["rows"]
    assert len(rows) == 4 and all(r["4xx"] > 0 for r in rows)  # the bad requests were in the mix
    assert all(r["rss_mib"] > 0 for r in rows)
