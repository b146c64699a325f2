"""Issue 19, item 6: the teams file watch says once that the file is gone (as SIGHUP does), not on every
poll, keeps the teams it has, and reads the file again when it comes back; a file changed between the
settings' read and the watch's start is reloaded at the first poll."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.config.settings import CONFIG_ENV, Settings
from app.metrics import Metrics
from app.teams import reload as teams_reload
from app.teams.keys import Authenticator, hash_key, new_key
from app.teams.team import teams_from
from tests.support.polling import eventually_async


def write(path: Path, teams: list[str]) -> None:
    path.write_text(yaml.safe_dump({"teams": {t: {"keys": [hash_key(new_key())]} for t in teams}}))


async def test_a_vanished_teams_file_is_said_once_and_read_again_when_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, ["search"])
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv("TEAMS_RELOAD_S", "0.01")
    settings = Settings()
    auth = Authenticator(teams_from(settings.teams), {n: c.keys for n, c in settings.teams.items()}, required=True)
    polls = 0
    real_digest = teams_reload._digest

    def counted(p: Path) -> str | None:
        nonlocal polls
        polls += 1
        return real_digest(p)

    monkeypatch.setattr(teams_reload, "_digest", counted)  # counts the watch's polls; reads the file as it is
    reloader = teams_reload.TeamsReloader(
        str(path),
        settings.teams,
        lambda: Settings().teams,
        auth_required=True,
        interval_s=settings.teams_reload_s,
        auth=auth,
        metrics=Metrics(CollectorRegistry()),
        served=set(),
    )
    caplog.set_level(logging.INFO, logger="embedding_gateway")
    reloader.start()
    try:
        path.unlink()

        def gone() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "is gone" in r.getMessage()]

        await eventually_async(gone)
        seen = polls
        await eventually_async(lambda: polls >= seen + 30)  # 30 more polls of the missing file
        assert len(gone()) == 1 and gone()[0].levelno == logging.ERROR
        assert "the previous teams stay" in gone()[0].getMessage() and set(reloader.teams) == {"search"}
        write(path, ["search", "ads"])
        await eventually_async(lambda: set(reloader.teams) == {"search", "ads"})
        assert len(gone()) == 1
    finally:
        await reloader.stop()


async def test_a_file_changed_before_the_watch_starts_is_reloaded_at_the_first_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads its settings, then the file is replaced (a rotation), then the worker builds its watch:
    the watch must not take the new file's digest for the teams in use (CI at load 14: a second worker
    answered 401 to the new key for good)."""
    path = tmp_path / "gateway.yaml"
    write(path, ["search"])
    monkeypatch.setenv(CONFIG_ENV, str(path))
    settings = Settings()  # the teams in use: search
    write(path, ["search", "ads"])  # replaced before the watch exists
    auth = Authenticator(teams_from(settings.teams), {n: c.keys for n, c in settings.teams.items()}, required=True)
    reloader = teams_reload.TeamsReloader(
        str(path),
        settings.teams,
        lambda: Settings().teams,
        auth_required=True,
        interval_s=0.01,
        auth=auth,
        metrics=Metrics(CollectorRegistry()),
        served=set(),
    )
    reloader.start()
    try:
        await eventually_async(lambda: set(reloader.teams) == {"search", "ads"}, within=5)
    finally:
        await reloader.stop()
