"""Readers of the deployment files for the tests: the Dockerfile's instructions, docker-compose.yml with
its ${VARIABLES} resolved from .env.example, and the environment names the gateway understands."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config.settings import CONFIG_ENV, MULTIPROC_ENV, Settings

ROOT = Path(__file__).resolve().parents[2]
CLI_ENV = {"HOST", "PORT", "WORKERS", MULTIPROC_ENV, CONFIG_ENV}
_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def settings_env() -> set[str]:
    """Every environment variable the gateway reads: its settings' names and the CLI's."""
    return {name.upper() for name in Settings.model_fields} | CLI_ENV


@dataclass
class Instruction:
    stage: int
    name: str
    args: str

    def exec_form(self) -> list[str]:
        text = self.args.split(" ", 1)[1] if self.name == "HEALTHCHECK" else self.args
        text = text.split("CMD", 1)[1].strip() if self.name == "HEALTHCHECK" else text
        value = json.loads(text) if text.startswith("[") else shlex.split(text)
        assert isinstance(value, list)
        return [str(v) for v in value]


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        name = name.upper()
        if name == "FROM":
            stage += 1
        out.append(Instruction(stage, name, " ".join(args.split())))
    return out


def docker_env(instructions: list[Instruction], stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.stage == stage and ins.name == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def env_file(path: Path = ROOT / ".env.example") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def resolve(value: Any, env: dict[str, str]) -> Any:
    """docker compose's interpolation: ${X}, ${X:-default}, ${X:?error} (a missing required X raises)."""
    if isinstance(value, dict):
        return {k: resolve(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, kind, rest = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if kind == "?":
            raise ValueError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return _VAR.sub(one, value)


def compose_variables(path: Path = ROOT / "docker-compose.yml") -> set[str]:
    return {m.group(1) for m in _VAR.finditer(path.read_text())}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(resolve(raw, env_file() if env is None else env))
