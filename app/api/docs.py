"""OpenAPI for routes that parse their own bodies (so that any Content-Type is read as JSON)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF = "#/components/schemas/{model}"
_DEFS: dict[str, Any] = {}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    _DEFS.update(schema.pop("$defs", {}))
    _DEFS[model.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def install(app: FastAPI, models: Iterable[str] = ()) -> None:
    """Serve the document with the request bodies above, and `model` fields listing the served models
    (what the gateway really accepts, so that clients and fuzzers see it)."""
    names = sorted(models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            defs = copy.deepcopy(_DEFS)
            for body in defs.values():
                model = body.get("properties", {}).get("model")
                if names and model is not None:
                    model["enum"] = names
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
