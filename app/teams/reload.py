"""Teams reloaded from the config file while the gateway serves: keys, models and limits.

Each worker process watches the file by its content (a hash, read every `teams_reload_s`): editors that
rename, `kubectl` updating a mounted ConfigMap (a symlink swapped to a new folder) and in-place writes all
change it. SIGHUP reloads at once (the CLI's supervisor passes it on to every worker). A new file is
validated as a whole, with the same rules as at start; then the teams and their key hashes are swapped in
one assignment, so a request sees either the old teams or the new ones. A file that does not validate is
refused with a log line and the old teams stay; so is a file that vanishes (deleted, moved, unreadable): said
once when the watch finds it gone (as SIGHUP says it), not on every poll, and read again when it is back.
Logs name teams, never keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..config.settings import CONFIG_ENV, TeamConfig
from ..metrics import Metrics
from .keys import Authenticator
from .team import teams_from, unknown_models

log = logging.getLogger("embedding_gateway")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _why(exc: Exception) -> str:
    """What is wrong with the file, without echoing its values (a pasted key must not reach the log)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"not valid YAML ({exc.problem}, line {exc.problem_mark.line + 1})"
    if isinstance(exc, yaml.YAMLError):
        return "not valid YAML"
    return str(exc)


def changes(old: Mapping[str, TeamConfig], new: Mapping[str, TeamConfig]) -> list[str]:
    """Team names with what changed about them: `+name`, `-name`, `name (keys, limits)`."""
    out = [f"+{name}" for name in sorted(new.keys() - old.keys())]
    out += [f"-{name}" for name in sorted(old.keys() - new.keys())]
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        named = {"keys": "keys", "models": "models", "cache_scope": "cache scope", "budget": "budget", "admin": "admin"}
        parts = [what for field, what in named.items() if getattr(a, field) != getattr(b, field)]
        if a.model_dump(exclude=set(named)) != b.model_dump(exclude=set(named)):
            parts.append("limits")
        if parts:
            out.append(f"{name} ({', '.join(parts)})")
    return out


# What `read` raises when the file is refused (it does not validate, cannot be read or is not YAML).
REFUSALS = (ValidationError, ValueError, OSError, yaml.YAMLError)


class TeamsReloader:
    """`read` reads the config file's teams again (one of REFUSALS if it is refused); `teams` are the ones in
    use."""

    def __init__(
        self,
        path: str | None,
        teams: Mapping[str, TeamConfig],
        read: Callable[[], Mapping[str, TeamConfig]],
        *,
        auth_required: bool,
        interval_s: float,
        auth: Authenticator,
        metrics: Metrics,
        served: set[str],
    ) -> None:
        self.path = Path(path) if path else None
        self.teams = dict(teams)
        self.read = read
        self.auth_required = auth_required
        self.interval_s = interval_s
        self.auth = auth
        self.metrics = metrics
        self.served = served
        self.digest = self._digest_of(self.teams) if self.path else None
        self._task: asyncio.Task[None] | None = None

    def _digest_of(self, teams: Mapping[str, TeamConfig]) -> str | None:
        """The file's digest when it holds `teams` (read before, with the settings); None when it changed since
        (or does not validate now): the first poll then reloads it. A digest taken now alone would call a
        change made in between "unchanged" (a worker starting while the file was replaced kept the old teams)."""
        assert self.path is not None
        digest = _digest(self.path)  # before the read: a change after it is a change at the first poll
        try:
            same = not changes(teams, self.read())
        except REFUSALS:
            same = False
        return digest if same else None

    def reload(self, *, reason: str) -> bool:
        """Reads the file; applies its teams when they validate. Returns whether anything changed."""
        if self.path is None:
            log.warning("teams not reloaded (%s): no config file (--config or %s)", reason, CONFIG_ENV)
            return False
        self.digest = _digest(self.path)
        try:
            configs = self.read()
            if self.auth_required and not any(team.keys for team in configs.values()):
                raise ValueError("no team has a key, so every request would be refused")
        except REFUSALS as exc:
            log.error(
                "teams not reloaded (%s): %s is refused, the previous teams stay: %s", reason, self.path, _why(exc)
            )
            return False
        changed = changes(self.teams, configs)
        if not changed:
            log.info("teams reloaded (%s): %s has no change to teams", reason, self.path)
            return False
        teams = teams_from(configs)
        self.metrics.add_teams(teams)
        self.auth.replace(teams, {name: cfg.keys for name, cfg in configs.items()})
        self.teams = dict(configs)
        log.info("teams reloaded (%s) from %s: %s", reason, self.path, ", ".join(changed))
        for entry in unknown_models(configs, self.served):
            log.warning("%s is not served here (unknown or disabled model)", entry)
        return True

    async def _watch(self, path: Path) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            digest = _digest(path)
            if digest is None and self.digest is not None:
                self.digest = None  # gone: said once; its return (any content) is a change
                log.error("teams not reloaded (file changed): %s is gone or unreadable, the previous teams stay", path)
            elif digest is not None and digest != self.digest:
                self.reload(reason="file changed")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Signal handlers belong to the main thread: an app served from another thread (an in-process test
        # server) still reloads on file changes, not on SIGHUP.
        if threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, lambda: self.reload(reason="SIGHUP"))
        else:
            log.info("teams reload on SIGHUP is off: the app runs outside the main thread")
        if self.path is not None and self.interval_s > 0:
            self._task = loop.create_task(self._watch(self.path), name="teams-reload")

    async def stop(self) -> None:
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
