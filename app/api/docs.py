"""The OpenAPI document, written for client generators (openapi-python-client, openapi-typescript, hey-api):

- request bodies of the routes that parse their own bodies (so that any Content-Type is read as JSON);
- distinct, stable component names (each class's own name: no module paths);
- security schemes: Bearer on every `/v1` and `/api/v1` route, and `X-DashScope-ApiKey` on the DashScope ones;
- optional fields without `"default": null` (openapi-typescript would make such a field required);
- `model` a plain string, the served models in its description and examples (a model added to the catalog
  needs no new client);
- operation ids named by the route's function (`create_embeddings`, `list_models`...), which generated
  clients name their functions by, instead of FastAPI's name-path-method;
- only the statuses the gateway sends: FastAPI's 422 `HTTPValidationError` is never sent (the error table
  answers a bad body with a 400 in the caller's wire format), so it is not documented.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from . import routes

REF = "#/components/schemas/{model}"
_DEFS: dict[str, Any] = {}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a team's API key: Authorization: Bearer <key>"},
    "dashscopeApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-DashScope-ApiKey",
        "description": "a team's API key, as the dashscope SDK may send it (DashScope routes only)",
    },
}
OPENAI_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
DASHSCOPE_AUTH: list[dict[str, list[str]]] = [{"bearer": []}, {"dashscopeApiKey": []}]
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


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


def security_of(path: str, required: bool) -> list[dict[str, list[str]]] | None:
    """The schemes a route takes keys by: DashScope's under /api/v1, Bearer under /v1, none elsewhere. With
    auth off, `{}` among them: a request without a key is served too (what the document promises)."""
    schemes = OPENAI_AUTH if path.startswith(routes.OPENAI_ROOT) else None
    if path.startswith(routes.DASHSCOPE):
        schemes = DASHSCOPE_AUTH
    if schemes is None or required:
        return schemes
    return [*schemes, {}]


def without_null_defaults(node: Any) -> None:
    """Drops `"default": null` everywhere below `node` (the field stays optional: it is not in `required`)."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None:
            del node["default"]
        for value in node.values():
            without_null_defaults(value)
    elif isinstance(node, list):
        for value in node:
            without_null_defaults(value)


def plain_models(defs: dict[str, Any], names: list[str]) -> None:
    """`model` as a string: the catalog of the day in the description and examples, never an enum."""
    listed = ", ".join(names)
    for body in defs.values():
        model = body.get("properties", {}).get("model")
        if model is None:
            continue
        model.pop("enum", None)
        if names:
            model["description"] = f"a model name from GET /v1/models (this gateway serves: {listed})"
            model["examples"] = names[:3]


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function` (app/main.py): the route function's name."""
    return route.name


def tidy_operations(paths: dict[str, Any], auth_required: bool) -> None:
    for path, operations in paths.items():
        for operation in operations.values():
            operation["responses"].pop("422", None)
            security = security_of(path, auth_required)
            if security is not None:
                operation["security"] = security


def document(app: FastAPI, names: list[str], auth_required: bool) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_ONLY:
        schemas.pop(name, None)
    schemas.update(copy.deepcopy(_DEFS))
    plain_models(schemas, names)
    without_null_defaults(schemas)
    components["securitySchemes"] = SECURITY_SCHEMES
    tidy_operations(schema["paths"], auth_required)
    return schema


def install(app: FastAPI, models: Iterable[str] = (), *, auth_required: bool = True) -> None:
    """Serve the document above, built once, with `models` (the served catalog) named in `model` fields and
    the keys optional when auth is off."""
    names = sorted(models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, names, auth_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
