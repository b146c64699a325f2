"""The environment of the processes the tests start: the caller's, less what would change what they do.

Standard library only: tests/support/dockerbuild.py runs before the package and its test dependencies are
installed.
"""

from __future__ import annotations

import os

# Variables of the developer's own shell that would change what the gateway under test does.
SCRUB = (
    "REDIS_URL",
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "EMBEDDING_GATEWAY_CONFIG",
    "PROMETHEUS_MULTIPROC_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env
