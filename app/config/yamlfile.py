"""The optional YAML config file as a settings source (settings.py puts it after the environment).

Its path is in EMBEDDING_GATEWAY_CONFIG (`embedding-gateway serve --config FILE` sets it, so that every
worker process reads the same file). A missing file, or one without a mapping at its top level, stops the
start with the file's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        p = Path(self.path)
        if not p.is_file():
            raise ValueError(f"config file {self.path!r} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {self.path!r} must hold a mapping at its top level")
        return data
