"""DashScope native wire shape (upstream-contracts.md 1.1-1.4), as the official SDK sends and reads it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema

TEXTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    ]
}


class MultimodalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contents: list[Any] = Field(description="strings or objects {text|image|video|multi_images[, factor]}")


class TextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Checked by items.dashscope_texts, whose errors name the element (`input.texts[3]`).
    texts: Annotated[Any, WithJsonSchema(TEXTS_SCHEMA)]


class MultimodalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: StrictStr = Field(min_length=1)
    input: MultimodalInput
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="dimension, output_type, fps, instruct, enable_fusion, res_level, max_video_frames; "
        "other keys are forwarded as they are and are part of the cache key; null is the same as {}",
    )


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: StrictStr = Field(min_length=1)
    input: TextInput
    parameters: dict[str, Any] | None = Field(default=None, description="dimension, text_type, output_type, instruct")


class MultimodalEmbedding(BaseModel):
    index: int
    embedding: list[float]
    type: str


class TextEmbedding(BaseModel):
    text_index: int
    embedding: list[float]


class MultimodalOutput(BaseModel):
    embeddings: list[MultimodalEmbedding]


class TextOutput(BaseModel):
    embeddings: list[TextEmbedding]


class MultimodalResponse(BaseModel):
    output: MultimodalOutput
    usage: dict[str, int]
    request_id: str


class TextResponse(BaseModel):
    output: TextOutput
    usage: dict[str, int]
    request_id: str


class DashScopeError(BaseModel):
    code: str
    message: str
    request_id: str
    param: str | None = None
