"""Stand-in upstream: a real HTTP server imitating the DashScope native embedding API and an
OpenAI-compatible embeddings API (see shared/docs/upstream-contracts.md beside the repository).

Raw ASGI (no framework) so that it is cheap enough to be the benchmark baseline.

    python -m bench.standin --host 127.0.0.1 --port 8099 [--latency-ms 0] [--jitter-ms 0]
                            [--api-key sk-standin] [--workers 1]

Vectors are deterministic: `expected_vector(model, dimension, content, params)` is what the server returns
for an item, and `canonical_digest(...)` is what `GET /_stats` reports for it.
Control routes (no auth): GET /_stats, POST /_reset[?control=1], GET|POST /_control.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import os
import random
import re
import sys
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from .poison import POISON_MODES, poisoned


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "multimodal" (native multimodal route) | "text" (native text + compatible) | "openai"
    dims: Collection[int]  # allowed dimensions
    default_dim: int
    max_items: int  # items per call
    modalities: frozenset[str]
    usage: str  # usage shape: tongyi | qwen3vl | mmv1 | text | openai
    max_multi_images: int = 0  # images in one multi_images item
    max_text_tokens: int = 8192  # per text (estimated as len // 4)
    fused_items: bool = False  # several keys in one item -> one fused vector (dated tongyi snapshots)
    enable_fusion: bool = False  # parameters.enable_fusion -> all contents give one vector (qwen3-vl)


_MM = frozenset({"text", "image", "video", "multi_images"})
_TVM = frozenset({"text", "image", "video"})
_TEXT = frozenset({"text"})
_TOKENS = frozenset({"text", "tokens"})
_PLUS = (64, 128, 256, 512, 1024, 1152)
_FLASH = (64, 128, 256, 512, 768)
_V4 = (2048, 1536, 1024, 768, 512, 256, 128, 64)

MODELS: dict[str, ModelSpec] = {
    "tongyi-embedding-vision-plus": ModelSpec("multimodal", _PLUS, 1152, 20, _MM, "tongyi", 8, 1024),
    "tongyi-embedding-vision-flash": ModelSpec("multimodal", _FLASH, 768, 20, _MM, "tongyi", 8, 1024),
    "tongyi-embedding-vision-plus-2026-03-06": ModelSpec(
        "multimodal", _PLUS, 1152, 20, _MM, "tongyi", 64, 1024, fused_items=True
    ),
    "tongyi-embedding-vision-flash-2026-03-06": ModelSpec(
        "multimodal", _FLASH, 768, 20, _MM, "tongyi", 64, 1024, fused_items=True
    ),
    "qwen3-vl-embedding": ModelSpec(
        "multimodal", (2560, 2048, 1536, 1024, 768, 512, 256), 2560, 20, _TVM, "qwen3vl", 0, 32000, enable_fusion=True
    ),
    "multimodal-embedding-v1": ModelSpec("multimodal", (1024,), 1024, 20, _TVM, "mmv1", 0, 512),
    "text-embedding-v4": ModelSpec("text", _V4, 1024, 10, _TEXT, "text", 0, 8192),
    "text-embedding-v3": ModelSpec("text", (1024, 768, 512), 1024, 10, _TEXT, "text", 0, 8192),
    "text-embedding-3-small": ModelSpec("openai", range(1, 1537), 1536, 2048, _TOKENS, "openai", 0, 8191),
    "bge-small": ModelSpec("openai", (384,), 384, 32, _TOKENS, "openai", 0, 512),
}

ROUTES = {
    "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding": "multimodal",
    "/api/v1/services/embeddings/text-embedding/text-embedding": "text",
    "/v1/embeddings": "openai",
    "/compatible-mode/v1/embeddings": "openai",
}
FAIL_MODES = ("429", "500", "503", "reset")
IMAGE_TOKENS, VIDEO_TOKENS, VIDEO_SECONDS = 896, 2000, 10
_DEFAULT_PARAMS = {"output_type": "dense", "text_type": "document"}  # same vector as leaving them out
_NON_VECTOR_PARAMS = ("dimension", "enable_fusion")
_DATA_IMAGE = re.compile(r"data:image/[\w.+-]+;base64,(.*)", re.S)


# ---------------------------------------------------------------- deterministic vectors


def _canon(content: Any) -> Any:
    """Canonical item: "s" -> {"text": "s"}, [ints] -> {"tokens": [...]}, None-valued keys dropped."""
    if isinstance(content, str):
        return {"text": content}
    if isinstance(content, list) and all(isinstance(t, int) for t in content):
        return {"tokens": content}
    if isinstance(content, dict):
        out = {k: v for k, v in content.items() if v is not None}
        if isinstance(out.get("fused"), list):
            out["fused"] = [_canon(c) for c in out["fused"]]
        return out
    return content


def _clean_params(params: dict[str, Any] | None) -> list[tuple[str, Any]]:
    return sorted(
        (k, v)
        for k, v in (params or {}).items()
        if v is not None and k not in _NON_VECTOR_PARAMS and _DEFAULT_PARAMS.get(k) != v
    )


def _digest(model: str, dimension: int, content: Any, params: dict[str, Any] | None) -> bytes:
    payload = orjson.dumps([model, dimension, _canon(content), _clean_params(params)], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=16).digest()


def _vector(digest: bytes, dimension: int) -> np.ndarray:
    v = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(dimension)
    return (v / np.linalg.norm(v)).astype(np.float32)


def canonical_digest(model: str, dimension: int, content: object, params: dict[str, Any] | None = None) -> str:
    """Hex digest reported by /_stats for one item (same inputs as expected_vector)."""
    return _digest(model, dimension, content, params).hex()


def expected_vector(model: str, dimension: int, content: object, params: dict[str, Any] | None = None) -> np.ndarray:
    """The float32 unit vector the stand-in returns for `content` (canonicalised as received upstream)."""
    return _vector(_digest(model, dimension, content, params), dimension)


def text_tokens(text: str, chars_per_token: int = 4) -> int:
    return max(1, len(text) // chars_per_token)


# ---------------------------------------------------------------- errors and validation


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


_OPENAI_CODES = {
    "InvalidParameter": "invalid_parameter_error",
    "InvalidApiKey": "invalid_api_key",
    "AccessDenied": "access_denied",
    "ModelNotFound": "model_not_found",
    "Throttling.RateQuota": "rate_limit_exceeded",
    "InternalError": "internal_error",
    "ModelUnavailable": "model_unavailable",
    "BadRequest.TooLarge": "request_too_large",
}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "InvalidParameter", message, param)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _dims_text(dims: Collection[int]) -> str:
    return f"{dims.start}..{dims.stop - 1}" if isinstance(dims, range) else ", ".join(map(str, dims))


def _check_dim(spec: ModelSpec, model: str, dim: Any, name: str) -> int:
    if not _is_int(dim) or dim not in spec.dims:
        allowed = _dims_text(spec.dims)
        raise bad(f"{name} {dim!r} is invalid for model {model}, it should be one of: {allowed}", name)
    return int(dim)


def _check_batch(spec: ModelSpec, n: int) -> None:
    if n > spec.max_items:
        raise bad(f"batch size is invalid, it should not be larger than {spec.max_items}")


def _check_text(spec: ModelSpec, text: Any) -> None:
    if not isinstance(text, str) or not text:
        raise bad("text must be a non-empty string")
    if text_tokens(text) > spec.max_text_tokens:
        raise bad(f"text is too long, it should not be longer than {spec.max_text_tokens} tokens")


def _check_url(value: str, oss_ok: bool, what: str) -> None:
    if value.startswith(("http://", "https://")) and len(value) > 8:
        return
    if value.startswith("oss://"):
        if not oss_ok:
            raise bad("oss:// resources need the header X-DashScope-OssResourceResolve: enable")
        return
    raise bad(f"{what} must be an http(s) URL{' or a base64 data URI' if what == 'image' else ''}")


def _check_image(value: Any, oss_ok: bool) -> None:
    if not isinstance(value, str) or not value:
        raise bad("image must be a non-empty string")
    if value.startswith("data:"):
        m = _DATA_IMAGE.fullmatch(value)
        if m is None:
            raise bad("image data URI must look like data:image/<format>;base64,<data>")
        try:
            if not base64.b64decode(m.group(1), validate=True):
                raise ValueError("empty")
        except (binascii.Error, ValueError):
            raise bad("image data URI holds invalid base64 data") from None
        return
    _check_url(value, oss_ok, "image")


def _check_video(value: Any, oss_ok: bool) -> None:
    if not isinstance(value, str) or not value:
        raise bad("video must be a non-empty string")
    if value.startswith("data:"):
        raise bad("video must be given as a URL, base64 data URIs are not supported")
    _check_url(value, oss_ok, "video")


def _mm_item(spec: ModelSpec, model: str, raw: Any, oss_ok: bool) -> tuple[dict[str, Any], str]:
    item = _canon(raw)
    if not isinstance(item, dict) or "tokens" in item or "fused" in item:
        raise bad("each item of input.contents must be a string or an object")
    unknown = set(item) - _MM - {"factor"}
    if unknown:
        raise bad(f"unsupported key(s) in a contents item: {', '.join(sorted(unknown))}")
    keys = [k for k in ("text", "image", "video", "multi_images") if k in item]
    if not keys:
        raise bad("a contents item needs one of: text, image, video, multi_images")
    if len(keys) > 1 and not spec.fused_items:
        raise bad(f"model {model} does not accept several modalities in one item")
    for k in keys:
        if k not in spec.modalities:
            raise bad(f"model {model} does not support {k} input")
        v = item[k]
        if k == "text":
            _check_text(spec, v)
        elif k == "image":
            _check_image(v, oss_ok)
        elif k == "video":
            _check_video(v, oss_ok)
        else:
            if not isinstance(v, list) or not v:
                raise bad("multi_images must be a non-empty list of images")
            if len(v) > spec.max_multi_images:
                raise bad(f"multi_images should not hold more than {spec.max_multi_images} images")
            for img in v:
                _check_image(img, oss_ok)
    if "factor" in item and not _is_num(item["factor"]):
        raise bad("factor must be a number")
    return item, keys[0] if len(keys) == 1 else "fused"


def _dashscope_params(spec: ModelSpec, model: str, raw: Any) -> tuple[int, dict[str, Any], bool]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad("parameters must be an object")
    p = {k: v for k, v in raw.items() if v is not None}
    dim = _check_dim(spec, model, p.get("dimension", spec.default_dim), "dimension")
    fusion = p.get("enable_fusion", False)
    if not isinstance(fusion, bool) or (fusion and not spec.enable_fusion):
        raise bad(f"enable_fusion must be a boolean and is only supported by qwen3-vl-embedding, not {model}")
    outputs = ("dense", "sparse", "dense&sparse") if spec.kind == "text" else ("dense",)
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "output_type": (lambda v: v in outputs, f"one of {', '.join(outputs)}"),
        "text_type": (lambda v: v in ("query", "document"), "query or document"),
        "instruct": (lambda v: isinstance(v, str), "a string"),
        "fps": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in 0..1"),
        "res_level": (lambda v: _is_int(v) and 0 <= v <= 3, "an integer in 0..3"),
        "max_video_frames": (lambda v: _is_int(v) and 1 <= v <= 64, "an integer in 1..64"),
    }
    for key, (ok, want) in checks.items():
        if key in p and not ok(p[key]):
            raise bad(f"parameters.{key} is invalid, it should be {want}", key)
    return dim, p, fusion


# ---------------------------------------------------------------- the app


@dataclass
class Config:
    api_key: str = "sk-standin"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0
    fail_modes: list[str] = field(default_factory=lambda: ["429", "500", "503"])
    fail_next: int = 0  # the next this many embedding calls fail (with the first of fail_modes), then none
    down: bool = False
    seed: int | None = None
    retry_after: float | None = None
    shuffle: bool = True  # answer vectors in reversed order (clients must map by index)
    max_body_bytes: int = 64 * 1024 * 1024
    max_records: int = 200_000  # /_stats keeps the newest records; the totals count everything
    poison: str | None = None  # every 200 answer corrupted this way (bench/poison.py)
    default_dims: dict[str, int] = field(default_factory=dict)  # model -> default dimension, overriding MODELS
    # A text is billed max(1, len // chars_per_token) tokens. 4 is about English on real tokenizers, under the
    # gateway's estimate (len // 3); 2 or 1 bill over it, as real tokenizers do for CJK text (tests of the bill's
    # correction both ways). Only the bill: the length check stays at len // 4 against max_text_tokens.
    chars_per_token: int = 4


CONTROL_KEYS = (
    "latency_ms",
    "jitter_ms",
    "fail_rate",
    "fail_modes",
    "fail_next",
    "down",
    "seed",
    "retry_after",
    "shuffle",
    "poison",
    "default_dims",
    "chars_per_token",
)


@dataclass
class _Job:
    model: str
    spec: ModelSpec
    dim: int
    params: dict[str, Any]
    items: list[dict[str, Any]]  # canonical items, one per output vector
    types: list[str]
    n_inputs: int
    encoding: str = "float"


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _usage(style: str, items: list[dict[str, Any]], chars_per_token: int = 4) -> dict[str, Any]:
    n = {"text": 0, "image": 0, "images": 0, "video": 0, "videos": 0}

    def count(item: dict[str, Any]) -> None:
        for sub in item.get("fused", ()):
            count(sub)
        n["text"] += text_tokens(item["text"], chars_per_token) if "text" in item else len(item.get("tokens", ()))
        images = ("image" in item) + len(item.get("multi_images", ()))
        n["images"] += images
        n["image"] += IMAGE_TOKENS * images
        n["videos"] += "video" in item
        n["video"] += VIDEO_TOKENS * ("video" in item)

    for it in items:
        count(it)
    t, i = n["text"], n["image"] + n["video"]
    if style == "tongyi":
        return {
            "input_tokens": t,
            "input_tokens_details": {"image_tokens": i, "text_tokens": t},
            "output_tokens": 0,
            "total_tokens": t + i,
        }
    if style == "qwen3vl":
        return {"input_tokens": t, "image_tokens": i, "total_tokens": t + i}
    if style == "mmv1":
        return {
            "input_tokens": t,
            "image_tokens": n["image"],
            "image_count": n["images"],
            "duration": VIDEO_SECONDS * n["videos"],
        }
    if style == "openai":
        return {"prompt_tokens": t, "total_tokens": t}
    return {"total_tokens": t}


def _sparse(text: str, digest: bytes) -> list[dict[str, Any]]:
    out = []
    for word in dict.fromkeys(text.lower().split()[:256]):
        h = int.from_bytes(hashlib.blake2b(word.encode() + digest, digest_size=8).digest(), "little")
        out.append({"index": h % 250002, "value": round(0.01 + (h >> 20) % 1000 / 1000, 4), "token": word})
    return out


class StandIn:
    """The ASGI app. `config` and `calls` may be inspected/changed directly when used in-process."""

    def __init__(self, config: Config | None = None) -> None:
        self.initial = Config(**asdict(config or Config()))
        self.config = Config(**asdict(self.initial))
        self.rng = random.Random(self.config.seed)
        self.calls: deque[dict[str, Any]] = deque(maxlen=self.config.max_records)
        self.totals = {"items_total": 0, "calls_total": 0, "calls_failed": 0}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        rid = str(uuid.uuid4())
        if path in ROUTES:
            if method != "POST":
                return await _respond(
                    send, 405, {"code": "MethodNotAllowed", "message": "use POST", "request_id": rid}, rid
                )
            return await self._embed(ROUTES[path], scope, receive, send, rid)
        if path == "/_stats" and method == "GET":
            return await _respond(send, 200, {"calls": list(self.calls), **self.totals}, rid)
        if path == "/_reset" and method == "POST":
            self.calls.clear()
            self.totals = dict.fromkeys(self.totals, 0)
            if b"control=1" in scope.get("query_string", b""):
                self.config = Config(**asdict(self.initial))
                self.rng.seed(self.config.seed)
            return await _respond(send, 200, {"ok": True}, rid)
        if path == "/_control" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    self._set_control(await _read_body(receive, 1 << 20))
                except ApiError as e:
                    return await _respond(
                        send, e.status, {"code": e.code, "message": e.message, "request_id": rid}, rid
                    )
            return await _respond(send, 200, {k: getattr(self.config, k) for k in CONTROL_KEYS}, rid)
        await _respond(send, 404, {"code": "NotFound", "message": f"no route {method} {path}", "request_id": rid}, rid)

    def _record(self, record: dict[str, Any]) -> None:
        record["done"] = time.time()  # with "t": the calls in flight at once
        self.calls.append(record)
        self.totals["calls_total"] += 1
        if record["failed"]:
            self.totals["calls_failed"] += 1
        else:
            self.totals["items_total"] += record["n_items"]

    def _set_control(self, body: bytes) -> None:
        try:
            new = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            raise bad("malformed JSON body") from None
        if not isinstance(new, dict) or set(new) - set(CONTROL_KEYS):
            raise bad(f"body must be an object with keys among {', '.join(CONTROL_KEYS)}")
        checks: dict[str, Callable[[Any], bool]] = {
            "latency_ms": lambda v: _is_num(v) and v >= 0,
            "jitter_ms": lambda v: _is_num(v) and v >= 0,
            "fail_rate": lambda v: _is_num(v) and 0 <= v <= 1,
            "fail_modes": lambda v: isinstance(v, list) and bool(v) and set(v) <= set(FAIL_MODES),
            "fail_next": lambda v: _is_int(v) and v >= 0,
            "down": lambda v: isinstance(v, bool),
            "shuffle": lambda v: isinstance(v, bool),
            "seed": lambda v: v is None or _is_int(v),
            "retry_after": lambda v: v is None or (_is_num(v) and v >= 0),
            "chars_per_token": lambda v: _is_int(v) and v >= 1,
            "poison": lambda v: v is None or v in POISON_MODES,
            "default_dims": lambda v: (
                isinstance(v, dict) and all(m in MODELS and _is_int(d) and d in MODELS[m].dims for m, d in v.items())
            ),
        }
        for k, v in new.items():
            if not checks[k](v):
                raise bad(f"invalid value for {k}: {v!r}")
        for k, v in new.items():
            setattr(self.config, k, v)
        if "seed" in new:
            self.rng.seed(new["seed"])

    async def _embed(self, kind: str, scope: dict[str, Any], receive: Receive, send: Send, rid: str) -> None:
        path = scope["path"]
        record: dict[str, Any] = {
            "t": time.time(),
            "route": path,
            "model": None,
            "n_items": 0,
            "digests": [],
            "failed": True,
            "status": 0,
        }
        extra: list[tuple[bytes, bytes]] = []
        try:
            body = await _read_body(receive, self.config.max_body_bytes)
            cfg = self.config
            delay = cfg.latency_ms + (self.rng.uniform(-cfg.jitter_ms, cfg.jitter_ms) if cfg.jitter_ms else 0)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if "traceparent" in headers:  # W3C trace context, as a traced gateway sends it
                record["traceparent"] = headers["traceparent"][:128]
            self._auth(headers)
            job = self._parse(kind, body, headers)
            digests = [_digest(job.model, job.dim, it, job.params) for it in job.items]
            record.update(model=job.model, n_items=job.n_inputs, encoding=job.encoding)
            record["digests"] = [d.hex() for d in digests]
            mode = "503" if cfg.down else None
            if mode is None and cfg.fail_next > 0:
                cfg.fail_next -= 1
                mode = cfg.fail_modes[0]
            if mode is None and cfg.fail_rate > 0 and self.rng.random() < cfg.fail_rate:
                mode = self.rng.choice(cfg.fail_modes)
            if mode == "reset":
                record.update(status=0, code="reset")
                self._record(record)
                return await _drop_connection(send)
            if mode == "429":
                if cfg.retry_after is not None:
                    ra = cfg.retry_after
                    extra.append((b"retry-after", str(int(ra) if float(ra).is_integer() else ra).encode()))
                raise ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, try again later.")
            if mode == "500":
                raise ApiError(500, "InternalError", "An internal error has occured, please try again later.")
            if mode == "503":
                raise ApiError(503, "ModelUnavailable", "Model is unavailable, please try again later.")
            status, payload = 200, self._answer(kind, job, digests, rid)
            record["failed"] = False
            if cfg.poison is not None:
                record["poison"] = cfg.poison
                payload = orjson.Fragment(poisoned(cfg.poison, kind, payload))
        except ApiError as e:
            record["code"] = e.code
            status, payload = e.status, self._error(kind, path, e, rid)
        except ConnectionResetError:  # fail mode "reset" when no transport can be closed (in-process use)
            raise
        except Exception as e:  # a stand-in bug: answer in the contract's shape, but say so
            traceback.print_exc(file=sys.stderr)
            e2 = ApiError(500, "InternalError", f"stand-in bug: {type(e).__name__}: {e}")
            status, payload = 500, self._error(kind, path, e2, rid)
        record["status"] = status
        self._record(record)
        await _respond(send, status, payload, rid, extra)

    def _auth(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        keys = {bearer, headers.get("x-dashscope-apikey")}
        if self.config.api_key not in keys:
            raise ApiError(401, "InvalidApiKey", "Invalid API-key provided.")
        if "x-dashscope-async" in headers:
            raise ApiError(403, "AccessDenied", "current user api does not support asynchronous calls")

    def _parse(self, kind: str, body: bytes, headers: dict[str, str]) -> _Job:
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad("malformed JSON body") from None
        if not isinstance(req, dict):
            raise bad("the request body must be a JSON object")
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise bad("model is required", "model")
        spec = MODELS.get(model)
        if spec is not None and model in self.config.default_dims:
            spec = replace(spec, default_dim=self.config.default_dims[model])
        if kind == "openai":
            return self._parse_openai(model, spec, req)
        if spec is None or spec.kind != kind:
            raise ApiError(404, "ModelNotFound", f"Model not exist: {model}")
        inp = req.get("input")
        if not isinstance(inp, dict):
            raise bad("input must be an object", "input")
        dim, params, fusion = _dashscope_params(spec, model, req.get("parameters"))
        if kind == "text":
            texts = inp.get("texts")
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not texts:
                raise bad("input.texts must be a non-empty list of strings", "input.texts")
            _check_batch(spec, len(texts))
            for t in texts:
                _check_text(spec, t)
            n = len(texts)
            return _Job(model, spec, dim, params, [{"text": t} for t in texts], ["text"] * n, n)
        contents = inp.get("contents")
        if not isinstance(contents, list) or not contents:
            raise bad("input.contents must be a non-empty list", "input.contents")
        _check_batch(spec, len(contents))
        oss_ok = headers.get("x-dashscope-ossresourceresolve", "").lower() == "enable"
        pairs = [_mm_item(spec, model, c, oss_ok) for c in contents]
        items, types = [p[0] for p in pairs], [p[1] for p in pairs]
        if fusion:
            items, types = [{"fused": items}], ["fused"]
        return _Job(model, spec, dim, params, items, types, len(contents))

    def _parse_openai(self, model: str, spec: ModelSpec | None, req: dict[str, Any]) -> _Job:
        if spec is None:
            raise ApiError(404, "ModelNotFound", f"The model `{model}` does not exist", "model")
        if spec.kind == "multimodal":
            msg = f"model {model} is not supported by this endpoint"
            raise ApiError(404, "model_not_supported", msg, "model")
        inp = req.get("input")
        if isinstance(inp, str):
            inp = [inp]
        if isinstance(inp, list) and inp and all(_is_int(t) for t in inp):
            inp = [inp]
        if not isinstance(inp, list) or not inp:
            raise bad("input must be a non-empty string, list of strings or list of token ids", "input")
        items: list[dict[str, Any]] = []
        for x in inp:
            if isinstance(x, str):
                _check_text(spec, x)
                items.append({"text": x})
            elif isinstance(x, list) and x and all(_is_int(t) for t in x) and "tokens" in spec.modalities:
                if len(x) > spec.max_text_tokens:
                    raise bad(f"input should not be longer than {spec.max_text_tokens} tokens")
                items.append({"tokens": x})
            else:
                raise bad("input must hold non-empty strings (or token id lists where supported)", "input")
        _check_batch(spec, len(items))
        raw_dim = req.get("dimensions")
        dim = spec.default_dim if raw_dim is None else _check_dim(spec, model, raw_dim, "dimensions")
        encoding = req.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad("encoding_format must be float or base64", "encoding_format")
        if req.get("user") is not None and not isinstance(req["user"], str):
            raise bad("user must be a string", "user")
        return _Job(model, spec, dim, {}, items, ["text"] * len(items), len(items), encoding)

    def _answer(self, kind: str, job: _Job, digests: list[bytes], rid: str) -> dict[str, Any]:
        vectors = [_vector(d, job.dim) for d in digests]
        order = range(len(vectors) - 1, -1, -1) if self.config.shuffle else range(len(vectors))
        if kind == "openai":
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode()
                    if job.encoding == "base64"
                    else vectors[i],
                }
                for i in order
            ]
            return {
                "object": "list",
                "data": data,
                "model": job.model,
                "usage": _usage("openai", job.items, self.config.chars_per_token),
            }
        if kind == "text":
            out_type = job.params.get("output_type", "dense")
            embs: list[dict[str, Any]] = []
            for i in order:
                e: dict[str, Any] = {"text_index": i}
                if "dense" in out_type:
                    e["embedding"] = vectors[i]
                if "sparse" in out_type:
                    e["sparse_embedding"] = _sparse(job.items[i]["text"], digests[i])
                embs.append(e)
        else:
            embs = [{"index": i, "embedding": vectors[i], "type": job.types[i]} for i in order]
        return {
            "output": {"embeddings": embs},
            "usage": _usage(job.spec.usage, job.items, self.config.chars_per_token),
            "request_id": rid,
        }

    def _error(self, kind: str, path: str, e: ApiError, rid: str) -> dict[str, Any]:
        if kind != "openai":
            return {"code": e.code, "message": e.message, "request_id": rid}
        etype = "requests" if e.status == 429 else "server_error" if e.status >= 500 else "invalid_request_error"
        body: dict[str, Any] = {
            "error": {"message": e.message, "type": etype, "param": e.param, "code": _OPENAI_CODES.get(e.code, e.code)}
        }
        if path.startswith("/compatible-mode/"):
            body["request_id"] = rid
        return body


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol for servers with nothing to start or stop (also used by bench/baseline.py)."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ApiError(400, "InvalidParameter", "client disconnected")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "BadRequest.TooLarge", f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, payload: Any, rid: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send: Send) -> None:
    """Close the TCP connection without any response (fail mode "reset")."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)  # uvicorn's protocol cycle
    if transport is None or not hasattr(transport, "abort"):
        raise ConnectionResetError("stand-in fail mode 'reset' (no transport to close in-process)")
    transport.abort()
    for _ in range(3):  # let the server notice the lost connection before the app returns
        await asyncio.sleep(0)


def create_app(config: Config | None = None) -> StandIn:
    return StandIn(config)


def _app_from_env() -> StandIn:  # uvicorn factory for --workers > 1 (each worker has its own state)
    return StandIn(Config(**orjson.loads(os.environ["STANDIN_CONFIG"])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.standin", description="Stand-in embedding upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--api-key", default="sk-standin")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-shuffle", action="store_true", help="answer vectors in input order")
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args(argv)
    config = Config(
        api_key=a.api_key, latency_ms=a.latency_ms, jitter_ms=a.jitter_ms, seed=a.seed, shuffle=not a.no_shuffle
    )
    import uvicorn

    kw: dict[str, Any] = {
        "host": a.host,
        "port": a.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": a.log_level,
        "lifespan": "on",
    }
    if a.workers > 1:
        os.environ["STANDIN_CONFIG"] = orjson.dumps(asdict(config)).decode()
        uvicorn.run("bench.standin:_app_from_env", factory=True, workers=a.workers, **kw)
    else:
        uvicorn.run(create_app(config), **kw)


if __name__ == "__main__":
    main()
