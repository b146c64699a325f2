"""`embedding-gateway serve | check-config | create-key`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import orjson
from pydantic import ValidationError

from .auth import auth_off_warning, hash_key, new_key
from .settings import CONFIG_ENV, TEAM_NAME, Settings


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


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .main import create_app

    # Every worker process reads its settings from the environment: tell them how many they are (the
    # limits that fall back to one process while Redis fails are divided by replicas x workers).
    os.environ["WORKERS"] = str(args.workers)
    settings = _load(args.config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _check_auth(settings, args.host)
    try:
        create_app(settings)  # validate the catalog before forking workers
    except ValueError as exc:
        sys.exit(f"invalid settings: {exc}")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
    )


def check_config(args: argparse.Namespace) -> None:
    from .main import create_app

    settings = _load(args.config)
    try:
        app = create_app(settings)
    except ValueError as exc:
        sys.exit(f"invalid settings: {exc}")
    del app
    print(orjson.dumps(settings.public_dump(), option=orjson.OPT_INDENT_2).decode())


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="embedding-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="start the gateway")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish in-flight requests")
    p.set_defaults(func=serve)
    c = sub.add_parser("check-config", help="validate settings and print them with secrets masked")
    c.add_argument("--config", help="YAML settings file")
    c.set_defaults(func=check_config)
    k = sub.add_parser("create-key", help="make an API key for a team: prints the key once and the hash to store")
    k.add_argument("--team", required=True, help="the team's name in the config file")
    k.add_argument("--config", help="YAML settings file, to check that the team exists (it is never written)")
    k.set_defaults(func=create_key)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
