"""The benchmark's quick mode runs end to end, so that `python -m bench.run` never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--rounds", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    measured = [r for r in results if "scenario" in r]
    assert {r["scenario"] for r in measured} >= {"cache hit, 8 texts, float", "cache hit, 8 texts, base64"}
    for r in measured:
        for run in ("one", "many", "base_one", "base_many"):
            assert r[run]["requests"] > 0 and r[run]["statuses"] == {"200": r[run]["requests"]}
        # two rounds of the gateway and its baseline in turn; the figures shown are one round's (the median's)
        assert len(r["ratios"]) == 2 and all(x > 0 for x in r["ratios"])
        assert round(r["many"]["requests_per_s"] / r["base_many"]["requests_per_s"], 3) in r["ratios"]
    counted = [r for r in results if "identical_items" in r]
    assert counted and counted[0]["identical_items"] == 1
    assert counted[0]["reindex_items"] == counted[0]["reindex_distinct"]
    assert "| workers | scenario |" in done.stdout


def last_line(module: str, *args: str) -> str:
    """The last line `python -m module args` printed; it must have exited 0."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_in_process_benchmark_measures_whole_cache_hits() -> None:
    """bench.inproc refuses to report unless its second call was a whole cache hit."""
    line = last_line("bench.inproc", "--calls", "50", "--rounds", "2", "--encoding", "base64")
    assert line.startswith("cache hit of 8 texts (base64), in process:") and " us per call " in line
    assert float(line.split("in process: ")[1].split(" us")[0]) > 0


def test_in_process_benchmark_through_the_server_measures_hits_and_the_floor() -> None:
    """bench.inproc --via server refuses to report unless its second answer, written by the server layer, was a
    200 whole hit, and the floor's answer a body of the same size; it prints both figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inproc", "--calls", "50", "--rounds", "2", "--via", "server", "--team", "free"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    gateway, floor = done.stdout.strip().splitlines()[-2:]
    assert gateway.startswith("cache hit of 8 texts (float), in process, through the server layer: ")
    assert floor.startswith("the raw-ASGI floor, the same way: ")
    assert all(float(line.split("CPU ")[1].split(" us")[0]) > 0 for line in (gateway, floor))


@pytest.mark.parametrize("upstream", ["dashscope", "openai-base64"])
def test_in_process_miss_benchmark_measures_whole_misses(upstream: str) -> None:
    """bench.inmiss refuses to report unless every request was a whole miss answered with 200 (either wire
    format: the OpenAI-compatible upstream set to base64 too)."""
    line = last_line("bench.inmiss", "--calls", "32", "--rounds", "1", "--concurrency", "4", "--upstream", upstream)
    assert line.startswith(f"miss of 2 new texts (base64, 4 at once, upstream {upstream}, Redis), in process: CPU ")
    assert float(line.split("CPU ")[1].split(" us")[0]) > 0
