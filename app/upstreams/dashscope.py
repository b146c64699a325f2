"""DashScope native API: the multimodal and text embedding routes (upstream-contracts.md section 1)."""

from __future__ import annotations

from typing import Any

from .adapter import Batch, Result
from .answers import assemble, usage_tokens
from .http import Poster
from .post import answer_budget, post_json

MULTIMODAL_PATH = "/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT_PATH = "/services/embeddings/text-embedding/text-embedding"


class DashScopeUpstream:
    kind = "dashscope"

    def __init__(self, name: str, http: Poster, base_url: str, api_key: str, workspace: str | None = None) -> None:
        self.name = name
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if workspace:
            self.headers["X-DashScope-WorkSpace"] = workspace

    def request_body(self, batch: Batch) -> tuple[str, dict[str, Any]]:
        spec, params = batch.spec, batch.params
        parameters: dict[str, Any] = dict(params.options)
        if params.send_dimension:
            parameters["dimension"] = params.dimension
        if spec.endpoint == "text":
            texts = [it.parts["text"] for it in batch.items]
            return TEXT_PATH, {"model": spec.upstream_model, "input": {"texts": texts}, "parameters": parameters}
        contents = batch.items[0].parts["contents"] if params.fusion else [it.parts for it in batch.items]
        return MULTIMODAL_PATH, {
            "model": spec.upstream_model,
            "input": {"contents": contents},
            "parameters": parameters,
        }

    async def embed(self, batch: Batch) -> Result:
        path, body = self.request_body(batch)
        budget = answer_budget(len(batch.items), batch.params.dimension)
        data = await post_json(self.http, self.base_url + path, body, self.headers, self.name, max_bytes=budget)
        output = data.get("output")
        embeddings = output.get("embeddings") if isinstance(output, dict) else None
        if not isinstance(embeddings, list):
            embeddings = []
        position = "text_index" if batch.spec.endpoint == "text" else "index"
        pairs = ((e.get(position), e.get("embedding")) if isinstance(e, dict) else (None, None) for e in embeddings)
        vectors = assemble(pairs, len(batch.items), batch.params.dimension, self.name)
        return Result(vectors, usage_tokens(data.get("usage")))

    async def close(self) -> None:
        await self.http.close()
