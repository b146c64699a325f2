"""OpenAI embeddings wire shape, extended with image/video items and DashScope's vector-changing options.

The options (`text_type`, `instruct`, `fps`, `enable_fusion`, `output_type`, `res_level`,
`max_video_frames`) sit at the top level of the body, which is where the official SDKs put `extra_body`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from ..api.answer import VECTOR

_MEDIA = {"type": "string", "description": "an http(s) URL or a data:image/<format>;base64,... URI"}
INPUT_SCHEMA: dict[str, Any] = {
    "description": "A string, a list of strings or objects, a token list, or a list of token lists. "
    "Objects: {text}, {image}, {video} (URL only), {multi_images: [...]}, several keys for one fused vector "
    "(dated tongyi models), optional factor.",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "integer", "minimum": 0},
                    {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": {
                            "text": {"type": "string", "minLength": 1},
                            "image": _MEDIA,
                            "video": {"type": "string", "description": "an http(s) URL"},
                            "multi_images": {"type": "array", "items": _MEDIA, "minItems": 1},
                            "factor": {"type": "number", "minimum": 0},
                        },
                    },
                ]
            },
        },
    ],
}


OPTIONS = ("text_type", "instruct", "fps", "enable_fusion", "output_type", "res_level", "max_video_frames")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(min_length=1, description="a model name from GET /v1/models")
    input: Annotated[Any, WithJsonSchema(INPUT_SCHEMA)]
    dimensions: StrictInt | None = Field(default=None, ge=1, description="one of the model's dimensions")
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None, description="float (default) or base64 of little-endian float32"
    )
    user: StrictStr | None = Field(default=None, description="accepted for compatibility, not forwarded")
    text_type: Literal["query", "document"] | None = Field(default=None, description="DashScope text models")
    instruct: StrictStr | None = Field(default=None, min_length=1, max_length=4096)
    fps: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1, description="video frame ratio")
    enable_fusion: StrictBool | None = Field(default=None, description="qwen3-vl: all inputs -> one vector")
    output_type: Literal["dense"] | None = None
    res_level: StrictInt | None = Field(default=None, ge=0, le=3)
    max_video_frames: StrictInt | None = Field(default=None, ge=1, le=64)

    def options(self) -> dict[str, Any]:
        """The DashScope options that were sent (read directly: model_dump costs more than the request's
        other validation on a cache hit)."""
        return {name: value for name in OPTIONS if (value := getattr(self, name)) is not None}


PLAIN_KEYS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
ENCODINGS = ("float", "base64")


@dataclass(slots=True)
class PlainRequest:
    """An EmbeddingRequest without DashScope options, as pydantic would make it of the same body (the same
    values; `plain_request` accepts only what EmbeddingRequest accepts). Made by a few checks instead of a
    model validation: the body of nearly every request, and ~10 us less on a cache hit."""

    model: str
    input: Any
    dimensions: int | None
    encoding_format: str | None
    user: str | None

    def options(self) -> dict[str, Any]:
        return {}


def plain_request(data: dict[str, Any]) -> PlainRequest | None:
    """`data` as a PlainRequest when it has none of the DashScope options and EmbeddingRequest would accept it;
    None for any other body, which EmbeddingRequest then validates (and whose error names the field)."""
    if "input" not in data or not data.keys() <= PLAIN_KEYS:
        return None
    model, dimensions = data.get("model"), data.get("dimensions")
    encoding, user = data.get("encoding_format"), data.get("user")
    if type(model) is not str or not model:  # StrictStr, min_length=1
        return None
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):  # StrictInt (no bool), ge=1
        return None
    if encoding is not None and (type(encoding) is not str or encoding not in ENCODINGS):
        return None
    if user is not None and type(user) is not str:
        return None
    return PlainRequest(model, data["input"], dimensions, encoding, user)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str
    created: int = 0
    modalities: list[str]
    dimensions: list[int] | None
    default_dimension: int
    max_dimension: int | None
    max_batch: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def document(data: Any, facts: tuple[str, int]) -> dict[str, Any]:
    """An embeddings answer around its entries (the route's, a batch line's body): all it holds besides them
    comes from `facts`, (model, billed tokens) (api/answer.py's Skeletons keys on them)."""
    model, billed = facts
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": billed, "total_tokens": billed}}


def entry(i: int) -> dict[str, Any]:
    """The i-th entry of an embeddings answer, VECTOR where its vector goes (api/answer.py renders it)."""
    return {"object": "embedding", "index": i, "embedding": VECTOR}
