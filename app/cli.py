"""`embedding-gateway serve | check-config | create-key | healthcheck | usage`."""

from __future__ import annotations

import argparse
import asyncio
import copy
import glob
import logging
import logging.config
import os
import shutil
import sys
import tempfile
import urllib.request
from typing import Any

import orjson
from pydantic import ValidationError

from .api import routes
from .config.settings import CONFIG_ENV, MULTIPROC_ENV, TEAM_NAME, Settings
from .jobs import operator
from .runtime import oom
from .teams.keys import auth_off_warning, hash_key, new_key

log = logging.getLogger("embedding_gateway")


def _load(config: str | None) -> Settings:
    if config:
        os.environ[CONFIG_ENV] = os.path.abspath(config)
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        sys.exit("invalid settings:\n" + "\n".join(lines))
    except ValueError as exc:
        sys.exit(f"invalid settings: {exc}")


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging plus ours (one JSON line per request, as is), applied in every worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"]["gateway"] = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    # Every configured secret is masked in what these handlers write (app/config/masking.py).
    config.setdefault("filters", {})["secrets"] = {"()": "app.config.masking.SecretsFilter"}
    for handler in ("default", "gateway"):
        config["handlers"][handler]["filters"] = ["secrets"]
    config["loggers"]["embedding_gateway"] = {"handlers": ["gateway"], "level": level.upper(), "propagate": False}
    config["loggers"]["httpx"] = {"level": "WARNING"}
    return config


def prepare_metrics_dir(workers: int) -> str | None:
    """Turn on prometheus-client's multiprocess mode when several workers serve (or the operator asked for
    it by setting PROMETHEUS_MULTIPROC_DIR), before anything imports prometheus_client.

    A directory the operator named is emptied of the previous run's files (their counts would otherwise be
    added to this run's); without one, a new temporary directory is made. Returns the directory to remove
    at exit (the one made here), or None.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        log.info("metrics: multiprocess mode in %s (emptied at start)", given)
        return None
    if workers <= 1:
        return None
    made = tempfile.mkdtemp(prefix="embedding-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = made
    log.info("metrics: multiprocess mode in %s (made at start, removed at exit)", made)
    return made


def _check_auth(settings: Settings, host: str) -> None:
    if settings.gateway_auth == "off":
        warning = auth_off_warning(host)
        if warning:
            logging.getLogger("embedding_gateway").warning(warning)
    elif not any(team.keys for team in settings.teams.values()):
        sys.exit(
            "invalid settings: gateway_auth is 'required' but no team has a key, so every request would be "
            "refused. Create one with `embedding-gateway create-key --team NAME` and add its hash under "
            "teams.NAME.keys in the config file, or set GATEWAY_AUTH=off on a loopback bind (docs/limits.md)."
        )


BACKLOG = 4096  # the listen queue (the kernel caps it at net.core.somaxconn)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .server.descriptors import raise_nofile
    from .server.protocol import GatewayProtocol

    # Every worker process reads its settings from the environment: tell them how many they are (the
    # limits that fall back to one process while Redis fails are divided by replicas x workers).
    os.environ["WORKERS"] = str(args.workers)
    settings = _load(args.config)
    logging_config = log_config(settings.log_level)
    logging.config.dictConfig(logging_config)
    _check_auth(settings, args.host)
    oom.mark_start()  # the workers' health check fails once the OOM killer kills one of the gateway's
    made = prepare_metrics_dir(args.workers)
    raise_nofile()  # the connection cap of each worker is derived from it (app/server/descriptors.py)
    try:
        from .main import create_app
        from .runtime.supervisor import supervise

        try:
            create_app(settings)  # validate the catalog before forking workers
        except ValueError as exc:
            sys.exit(f"invalid settings: {exc}")
        options: dict[str, Any] = dict(
            factory=True,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http=GatewayProtocol,  # httptools with read deadlines, a connection cap, upgrade offers declined
            timeout_keep_alive=settings.http_keepalive_timeout_s,
            backlog=BACKLOG,  # a burst of thousands of connects waits in the kernel's queue, not refused
            access_log=False,  # the gateway writes its own (api/asgi/accesslog.py)
            proxy_headers=False,  # nothing reads the client's address: no X-Forwarded-For rewriting per request
            server_header=False,
            log_config=logging_config,
            log_level=settings.log_level,
            timeout_graceful_shutdown=args.graceful_timeout,
        )
        if args.workers > 1:  # SIGHUP reaches the workers (teams reload) rather than replacing them
            supervise(uvicorn.Config("app.main:create_app", workers=args.workers, **options))
        else:
            uvicorn.run("app.main:create_app", **options)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


def check_config(args: argparse.Namespace) -> None:
    from .main import create_app

    settings = _load(args.config)
    try:
        app = create_app(settings)
    except ValueError as exc:
        sys.exit(f"invalid settings: {exc}")
    del app
    print(orjson.dumps(settings.public_dump(), option=orjson.OPT_INDENT_2).decode())


def healthcheck(args: argparse.Namespace) -> None:
    """Exit 0 when the local gateway answers /healthz (the container's HEALTHCHECK), else 1."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{args.host}:{args.port}{routes.HEALTHZ}", timeout=args.timeout) as resp:
            ok = resp.status == 200
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)


def create_key(args: argparse.Namespace) -> None:
    """Print a new key once (stdout) and its hash for the config file (stderr).

    The file is not edited: PyYAML cannot rewrite it without dropping the operator's comments and layout,
    and config files usually live in version control or a ConfigMap that a command should not write to.
    Only the hash goes into the file; the key itself is shown here and nowhere else.
    """
    if not TEAM_NAME.match(args.team):
        sys.exit(f"invalid team name: must match {TEAM_NAME.pattern}")
    if args.config:
        settings = _load(args.config)
        if args.team not in settings.teams:
            print(f"note: {args.config} has no team {args.team!r} yet: add it under teams:", file=sys.stderr)
    key = new_key()
    digest = hash_key(key)
    print(key)
    print(
        f"\nThe key above is shown once: give it to team {args.team!r}; it is not stored anywhere.\n"
        f'Add its hash to the config file:\n\nteams:\n  {args.team}:\n    keys:\n      - "{digest}"\n',
        file=sys.stderr,
    )


def jobs(args: argparse.Namespace) -> None:
    s = _load(args.config)
    operator.main(args, s.limits_url(), s.redis_cluster, s.limits_timeout_s, s.cache_namespace, s.jobs)


def usage(args: argparse.Namespace) -> None:
    from .redis.cause import RedisSetupError
    from .usage import table
    from .usage.rows import Keys

    s = _load(args.config)
    keys = Keys(s.cache_namespace, s.usage.retention_days)
    try:
        since, by = table.since_seconds(args.since), table.groups(args.by)
        rows = asyncio.run(table.rows(s.limits_url(), s.redis_cluster, s.limits_timeout_s, keys, since, by))
    except (ValueError, RedisSetupError) as exc:
        sys.exit(f"usage: {exc}")
    sys.stdout.write(table.render(by, rows, args.csv))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="embedding-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    port = int(os.environ.get("PORT", "8000"))
    p = sub.add_parser("serve", help="start the gateway")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish in-flight requests")
    p.set_defaults(func=serve)
    c = sub.add_parser("check-config", help="validate settings and print them with secrets masked")
    c.add_argument("--config", help="YAML settings file")
    c.set_defaults(func=check_config)
    h = sub.add_parser("healthcheck", help="exit 0 when the gateway on this machine answers /healthz")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, default=port)
    h.add_argument("--timeout", type=float, default=3.0)
    h.set_defaults(func=healthcheck)
    k = sub.add_parser("create-key", help="make an API key for a team: prints the key once and the hash to store")
    k.add_argument("--team", required=True, help="the team's name in the config file")
    k.add_argument("--config", help="YAML settings file, to check that the team exists (it is never written)")
    k.set_defaults(func=create_key)
    operator.add_parser(sub, jobs)
    u = sub.add_parser("usage", help="what each team spent and saved (the usage ledger in the limits Redis)")
    u.add_argument("--config", help="YAML settings file")
    u.add_argument("--since", default="30d", help="the period up to now: 90m, 12h, 30d")
    u.add_argument("--by", default="team,model", help="grouped by any of team, key, model (comma-separated)")
    u.add_argument("--csv", action="store_true", help="CSV instead of an aligned table")
    u.set_defaults(func=usage)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
