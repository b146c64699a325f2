"""What a test needs from the machine: missing under CI it fails (scripts/test.sh installs everything, so
a missing part is a broken install, never a reason to pass quietly); elsewhere it skips, naming what to
install."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def need(present: bool, what: str) -> None:
    if not present:
        message = f"{what} is missing: run the README's test command (scripts/test.sh), which installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)


def need_tool(name: str) -> str:
    """The path of a command on PATH (a Debian package scripts/test.sh installs)."""
    path = shutil.which(name)
    need(path is not None, name)
    assert path is not None
    return path


def need_modules(*names: str, what: str) -> None:
    """Python packages, checked without importing them (an import may cost seconds: torch)."""
    need(all(importlib.util.find_spec(name) is not None for name in names), what)
