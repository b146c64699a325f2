"""The Docker engine and images of tests/docker (session-wide: built once per run)."""

from tests.support.dockerkit import (  # noqa: F401
    base_images,
    docker_engine,
    gateway_builds,
    gateway_image,
    local_image,
    python_image,
    services_image,
)
