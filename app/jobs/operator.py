"""`embedding-gateway jobs list|show|cancel`: batch jobs and DashScope tasks of every team, for operators,
read from the Redis that holds their state (LIMITS_REDIS_URL, else REDIS_URL)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from ..redis.link import Mode, shut
from .connection import JobsOff, jobs_redis
from .records import Records, now
from .settings import JobSettings

COLUMNS = "id kind team status done/total failed cached created worker"


def add_parser(sub: argparse._SubParsersAction, run: Callable[[argparse.Namespace], None]) -> None:  # type: ignore[type-arg]
    j = sub.add_parser("jobs", help="batch jobs and DashScope tasks: list, show one, cancel one")
    j.add_argument("--config", help="YAML settings file")
    ops = j.add_subparsers(dest="op", required=True)
    ls = ops.add_parser("list", help="the newest jobs of every team")
    ls.add_argument("--limit", type=int, default=50)
    for name, text in (("show", "one job's record, as JSON"), ("cancel", "cancel a job (its output so far is kept)")):
        op = ops.add_parser(name, help=text)
        op.add_argument("id")
    j.set_defaults(func=run)


def main(
    args: argparse.Namespace, url: str | None, mode: Mode, timeout_s: float, namespace: str, s: JobSettings
) -> None:
    """`url`: the limits' Redis (None: none configured), opened as the gateway opens it for the jobs."""
    if url is None:
        sys.exit("batch jobs need Redis: set REDIS_URL (or LIMITS_REDIS_URL)")
    sys.exit(asyncio.run(_run(args, url, mode, timeout_s, namespace, s)))


async def _run(args: argparse.Namespace, url: str, mode: Mode, timeout_s: float, namespace: str, s: JobSettings) -> int:
    try:
        redis = await jobs_redis(url, mode, timeout_s, s)
    except JobsOff as exc:
        print(exc, file=sys.stderr)
        return 1
    records = Records(redis, namespace)
    try:
        if args.op == "list":
            print(COLUMNS)
            for bid in await records.batch_ids(None, None, args.limit):
                b = await records.batch(bid)
                if b is not None:
                    print(row(b))
            return 0
        b = await records.batch(args.id)
        if b is None:
            print(f"no job {args.id}", file=sys.stderr)
            return 1
        if args.op == "cancel":
            if not await records.transition(args.id, ["validating", "in_progress"], status="cancelling",
                                            cancelling_at=now()):  # fmt: skip
                print(f"job {args.id} is {b['status']}: nothing to cancel", file=sys.stderr)
                return 1
            b = await records.batch(args.id) or b
        print(orjson.dumps(b, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        return 0
    finally:
        await shut(redis, "batch jobs")


def row(b: dict[str, str]) -> str:
    created = datetime.fromtimestamp(int(b["created_at"]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = f"{b.get('lines_done') or 0}/{b.get('total') or '?'}"
    fields = (b["id"], b.get("kind", "openai"), b["team"], b["status"], done, b.get("failed") or "0",
              b.get("cached") or "0", created, b.get("worker") or "-")  # fmt: skip
    return " ".join(fields)
