"""Audit the pinned dependencies (constraints.txt) for known vulnerabilities: the CI step of
scripts/test.sh. Exit 1 when a pinned version has a known vulnerability, or when nothing could be
audited at all.

1. pip-audit over the pins (its default `pypi` service: PyPI's per-release JSON, which carries the
   release's advisories).
2. Pins pip-audit could not look up (some PyPI mirrors serve only the per-project JSON, whose
   `vulnerabilities` field describes the project's LATEST release): a pin that IS the latest release is
   audited from that document; any other pin is reported as not audited.

Policy (docs/hardening.md): a known vulnerability fails. A vulnerability database that cannot be
reached at all fails loudly too, because a green audit that checked nothing is worse than a red one;
set AUDIT=skip to skip on purpose (printed). Pins that the reachable data cannot cover are listed as a
warning; AUDIT_STRICT=1 makes them fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[normalise(name)] = version.strip()
    return out


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def run_pip_audit() -> dict[str, dict[str, Any]]:
    """name -> {"version", "vulns" | "skip_reason"} as pip-audit reports it ({} when it could not run)."""
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(CONSTRAINTS), "--no-deps", "--disable-pip"]
    cmd += ["--format", "json", "--progress-spinner", "off"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit did not produce a report (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return {}
    return {normalise(d["name"]): d for d in report.get("dependencies", [])}


def latest_release_advisories(name: str, version: str) -> list[dict[str, Any]] | None:
    """The advisories of `version` when it is the project's latest release, else None (not auditable)."""
    try:
        r = httpx.get(PROJECT_JSON.format(name=name), timeout=30, follow_redirects=True)
        data = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("info", {}).get("version") != version:
        return None
    vulns = data.get("vulnerabilities")
    return [v for v in vulns if not v.get("withdrawn")] if isinstance(vulns, list) else None


def main() -> int:
    if os.environ.get("AUDIT") == "skip":
        print("dependency audit: SKIPPED on purpose (AUDIT=skip)")
        return 0
    pinned = pins()
    audited = run_pip_audit()
    vulnerable: dict[str, list[str]] = {}
    clean: set[str] = set()
    for name, dep in audited.items():
        if dep.get("vulns"):
            vulnerable[name] = [v["id"] for v in dep["vulns"]]
        elif "skip_reason" not in dep:
            clean.add(name)
    rest = [n for n in pinned if n not in clean and n not in vulnerable]
    with ThreadPoolExecutor(8) as pool:
        fallback = dict(zip(rest, pool.map(lambda n: latest_release_advisories(n, pinned[n]), rest), strict=True))
    not_audited = sorted(n for n, advisories in fallback.items() if advisories is None)
    for name, advisories in fallback.items():
        if advisories:
            vulnerable[name] = [a.get("id", "?") for a in advisories]
        elif advisories is not None:
            clean.add(name)

    print(
        f"dependency audit: {len(pinned)} pins, {len(clean)} audited clean, {len(vulnerable)} vulnerable, "
        f"{len(not_audited)} not audited"
    )
    for name, ids in sorted(vulnerable.items()):
        print(f"  VULNERABLE {name}=={pinned.get(name, '?')}: {', '.join(ids)}")
    if not_audited:
        print("  not audited (no advisory data reachable for these exact versions): " + ", ".join(not_audited))
    if vulnerable:
        return 1
    if not clean:
        print("dependency audit FAILED: no vulnerability data could be reached (set AUDIT=skip to skip on purpose)")
        return 1
    if not_audited and os.environ.get("AUDIT_STRICT") == "1":
        print("dependency audit FAILED: AUDIT_STRICT=1 and some pins could not be audited")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
