"""tests/support/needs.py: a missing tool or package fails under CI and skips elsewhere."""

from __future__ import annotations

import pytest

from tests.support.needs import need_modules, need_tool


def test_missing_under_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no_such_package_eg"):
        need_modules("json", "no_such_package_eg", what="no_such_package_eg")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-eg is missing"):
        need_tool("no-such-tool-eg")


def test_missing_elsewhere_skips_and_present_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        need_tool("no-such-tool-eg")
    need_modules("json", what="json")
    assert need_tool("sh").endswith("/sh")
