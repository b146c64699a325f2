"""DashScope's async tasks, as the dashscope SDK calls them: the text-embedding route with
`X-DashScope-Async: enable` creates one (api/dashscope.py hands it here), /api/v1/tasks/{task_id} polls,
cancels and lists them, and the result file is served at a signed URL that expires (no key needed, as
DashScope's own result URLs)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import Forbidden, InvalidRequest
from ..inputs.params import dashscope_options
from ..jobs.textlines import served_name
from ..runtime.state import gateway
from ..schemas.dashscope import DashScopeError
from ..storage.base import DOWNLOAD_BYTES
from ..teams.team import Team, model_for
from . import routes, tenancy
from .asgi.exchange import exchange_of, lease_of
from .batches import ANONYMOUS, jobs_of
from .body import read_body
from .rendering import request_id_of

router = APIRouter(tags=["tasks"])
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": DashScopeError} for s in (400, 401, 403, 404, 429, 503)}
SUPPORTED = (
    "X-DashScope-Async: enable is supported on the text-embedding route only, with input.url (a text "
    "file, one document per line, or a file id from POST /v1/files); send other requests without it"
)
GZIP_BYTES = 256 * 1024  # the gzip stream's state (a 32 KiB window: zlib's deflate takes about 256 KiB)


def refuse_async(request: Request) -> None:
    """Any use of the async header the gateway does not run: a 400 saying what is supported."""
    if "x-dashscope-async" in request.headers:
        raise InvalidRequest(SUPPORTED, param="X-DashScope-Async")


async def create_task(request: Request, team: Team | None) -> Response:
    """The text-embedding route with `X-DashScope-Async: enable`."""
    if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
        raise InvalidRequest(SUPPORTED, param="X-DashScope-Async")
    gw = gateway(request)
    jobs, owner = jobs_of(request)
    try:
        body = orjson.loads(await read_body(request, gw.caps.max_body_bytes, gw.memory))
    except orjson.JSONDecodeError:
        raise InvalidRequest("body: not valid JSON", param="body") from None
    model, data = body.get("model") if isinstance(body, dict) else None, body if isinstance(body, dict) else {}
    url = data.get("input", {}).get("url") if isinstance(data.get("input"), dict) else None
    parameters = data.get("parameters") or {}
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: required", param="model")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"input.url: required with the async header ({SUPPORTED})", param="input.url")
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters: must be an object", param="parameters")
    spec = model_for(gw.catalog, team, served_name(model))
    dashscope_options(spec, gw.upstream_kinds[spec.upstream], parameters)  # a bad option: 400 now, not later
    output = await jobs.tasks.create(owner, model, url, parameters)
    return JSONResponse({"output": output, "request_id": request_id_of(request)})


@router.get(routes.TASK, responses=ERRORS, summary="A DashScope async task: status, counts, result URL")
async def get_task(request: Request, task_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    b = await jobs.tasks.get(team, task_id)
    output = await jobs.tasks.output(b, str(request.base_url).rstrip("/"))
    usage = {"total_tokens": 0}
    return JSONResponse({"request_id": request_id_of(request), "output": output, "usage": usage})


@router.post(routes.TASK_CANCEL, responses=ERRORS, summary="Cancel a PENDING DashScope task")
async def cancel_task(request: Request, task_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    await jobs.tasks.cancel(team, task_id)
    return JSONResponse({"request_id": request_id_of(request)})


@router.get(routes.TASKS, responses=ERRORS, summary="The team's DashScope tasks, newest first (the SDK's filters)")
async def list_tasks(
    request: Request,
    status: str | None = Query(None, max_length=20),
    model_name: str | None = Query(None, max_length=100),
    page_no: int = Query(1, ge=1, le=10_000),
    page_size: int = Query(10, ge=1, le=100),
) -> JSONResponse:
    jobs, team = jobs_of(request)
    base = str(request.base_url).rstrip("/")
    found, _ = await jobs.batches.page(team, None, 1000)  # newest 1000 (tasks and batches of the team)
    rows = [b for b in found if b.get("kind") == "dashscope" and (model_name is None or b.get("model") == model_name)]
    outputs = [await jobs.tasks.output(b, base) for b in rows]
    outputs = [o for o in outputs if status is None or o["task_status"] == status]
    page = outputs[(page_no - 1) * page_size : page_no * page_size]
    total = len(outputs)
    return JSONResponse({"request_id": request_id_of(request), "data": page, "total": total,
                         "total_page": -(-total // page_size), "page_no": page_no, "page_size": page_size})  # fmt: skip


@router.get(routes.TASK_RESULT, responses=ERRORS, summary="A task's result file (a signed URL)")
async def task_result(
    request: Request, task_id: str, expires: int = Query(0), signature: str = Query("", max_length=128)
) -> StreamingResponse:
    gw = gateway(request)
    if gw.jobs is None or not await gw.jobs.tasks.signed(task_id, expires, signature):
        raise Forbidden("the result URL is not valid or has expired: ask GET /api/v1/tasks/{task_id} for a new one")
    task = await gw.jobs.tasks.completed(task_id)
    # the URL needs no key: its downloads count toward the task's team's share of the memory budget
    exchange_of(request.scope).team = None if task["team"] == ANONYMOUS else task["team"]
    tenancy.seat(request, gw.transfers, task["team"])
    await lease_of(request.scope, gw.memory).take(DOWNLOAD_BYTES + GZIP_BYTES, "task_id")  # as a file's content
    return StreamingResponse(gw.jobs.tasks.result(task), media_type="application/gzip")


__all__ = ["ANONYMOUS", "create_task", "refuse_async", "router"]
