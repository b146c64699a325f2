"""`embedding-gateway serve | check-config`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import orjson
from pydantic import ValidationError

from .settings import CONFIG_ENV, Settings


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


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .main import create_app

    settings = _load(args.config)
    configure_logging(settings.log_level)
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


def configure_logging(level: str) -> None:
    """Plain message lines at the configured level. Runs in every worker too (from create_app): uvicorn's
    worker processes configure only uvicorn's own loggers, so without this a gateway started with
    --workers N > 1 dropped its access log."""
    logging.basicConfig(level=level.upper(), format="%(message)s")
    logging.getLogger("embedding_gateway").setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)


def check_config(args: argparse.Namespace) -> None:
    from .main import create_app

    settings = _load(args.config)
    try:
        app = create_app(settings)
    except ValueError as exc:
        sys.exit(f"invalid settings: {exc}")
    del app
    print(orjson.dumps(settings.public_dump(), option=orjson.OPT_INDENT_2).decode())


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
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
