"""The OpenAI Files and Batch APIs for embeddings: /v1/files and /v1/batches (app/jobs/ does the work).
Files and batches belong to the caller's team: another team's id is a 404."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import InvalidRequest, Unavailable
from ..jobs.batches import batch_object
from ..jobs.files import file_object
from ..jobs.parts import Jobs
from ..runtime.state import gateway
from ..schemas.openai import OpenAIError
from ..storage.base import DOWNLOAD_BYTES
from . import routes, tenancy
from .asgi.exchange import lease_of
from .body import read_body

router = APIRouter(tags=["batches"])
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": OpenAIError} for s in (400, 401, 404, 413, 429, 503)}
UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["batch"]}},
}}}}}  # fmt: skip
CREATE = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
    "properties": {"input_file_id": {"type": "string"}, "endpoint": {"type": "string", "enum": [routes.EMBEDDINGS]},
                   "completion_window": {"type": "string", "enum": ["24h"]},
                   "metadata": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 512},
                                "maxProperties": 16}},
}}}}}  # fmt: skip
ANONYMOUS = "_"  # the owner of files and batches when auth is off


def jobs_of(request: Request, transfer: bool = False) -> tuple[Jobs, str]:
    """The jobs and the caller's team, whose desk the request takes: a transfer's (an upload, a download), or
    a management request's (limits/desks.py)."""
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    name = team.name if team is not None else ANONYMOUS
    tenancy.seat(request, gw.transfers if transfer else gw.desks, name)
    if gw.jobs is None:
        raise Unavailable(gw.jobs_off)
    return gw.jobs, name


@router.post(routes.FILES, responses=ERRORS, openapi_extra=UPLOAD, summary="Upload a JSONL file (purpose batch)")
async def create_file(request: Request) -> JSONResponse:
    jobs, team = jobs_of(request, transfer=True)
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    rec = await jobs.files.upload(team, request.headers.get("content-type", ""), declared, request.stream())
    return JSONResponse(file_object(rec))


@router.get(routes.FILES, responses=ERRORS, summary="The team's files, newest first")
async def list_files(
    request: Request,
    after: str | None = Query(None, max_length=80),
    limit: int = Query(10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = Query("desc"),
    purpose: str | None = Query(None, max_length=40),
) -> Response:
    """OpenAI's list of files (the SDK's `files.list()` pages through it): the team's input files and its
    batches' outputs, until they expire. The answer's bytes come from the memory budget."""
    jobs, team = jobs_of(request)
    found, more = await jobs.files.page(team, after, limit, order == "desc", purpose)
    data = [file_object(f) for f in found]
    body = orjson.dumps({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})  # fmt: skip
    await lease_of(request.scope, gateway(request).memory).take(len(body), "limit")
    return Response(body, media_type="application/json")


@router.get(routes.FILE, responses=ERRORS, summary="A file's metadata")
async def get_file(request: Request, file_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    return JSONResponse(file_object(await jobs.files.get(team, file_id)))


@router.get(routes.FILE_CONTENT, responses=ERRORS, summary="A file's content, streamed")
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    """Streamed a chunk at a time; the bytes a download holds come from the memory budget (a flood of
    downloads that are not read waits for room, then gets 503, rather than growing the process)."""
    jobs, team = jobs_of(request, transfer=True)
    rec = await jobs.files.get(team, file_id)
    await lease_of(request.scope, gateway(request).memory).take(min(DOWNLOAD_BYTES, rec["bytes"]), "file_id")
    return StreamingResponse(jobs.files.content(rec), media_type="application/octet-stream",
                             headers={"content-length": str(rec["bytes"])})  # fmt: skip


@router.delete(routes.FILE, responses=ERRORS, summary="Delete a file")
async def delete_file(request: Request, file_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    await jobs.files.delete(await jobs.files.get(team, file_id))
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@router.post(routes.BATCHES, responses=ERRORS, openapi_extra=CREATE, summary="Create a batch from a file")
async def create_batch(request: Request) -> JSONResponse:
    jobs, team = jobs_of(request)
    body: Any = _json(await read_body(request, 64 * 1024))
    if not isinstance(body, dict):
        raise InvalidRequest("body: a JSON object with input_file_id, endpoint and completion_window", param="body")
    return JSONResponse(batch_object(await jobs.batches.create(team, body)))


@router.get(routes.BATCH, responses=ERRORS, summary="A batch, with its progress")
async def get_batch(request: Request, batch_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    return JSONResponse(batch_object(await jobs.batches.get(team, batch_id)))


@router.post(routes.BATCH_CANCEL, responses=ERRORS, summary="Cancel a batch (its output so far is kept)")
async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
    jobs, team = jobs_of(request)
    return JSONResponse(batch_object(await jobs.batches.cancel(team, batch_id)))


@router.get(routes.BATCHES, responses=ERRORS, summary="The team's batches, newest first")
async def list_batches(
    request: Request, after: str | None = Query(None, max_length=80), limit: int = Query(20, ge=1, le=100)
) -> JSONResponse:
    jobs, team = jobs_of(request)
    found, more = await jobs.batches.page(team, after, limit)
    data = [batch_object(b) for b in found]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})  # fmt: skip


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
