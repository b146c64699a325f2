"""Any OpenAI-compatible embeddings server: OpenAI, DashScope compatible mode, vLLM, TEI, Infinity, Ollama.

Only what the caller set is sent: no null fields (a null `encoding_format` once broke every vLLM call of a
peer gateway); `dimensions` is the one the gateway resolved (the model's `send_dimension: false` leaves it
out for servers that refuse it). Vectors are asked for as the upstream's `encoding_format` says: floats by
default, which every such server supports, or base64 (little-endian float32), which OpenAI, vLLM and Infinity
answer in under half the bytes and the gateway decodes without parsing 1,024 decimal numbers a vector. Either
kind of answer is taken whatever was asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .adapter import Batch, Result
from .answers import assemble, decode_base64_vector, usage_tokens
from .http import Poster
from .post import answer_budget, post_json


class OpenAIUpstream:
    kind = "openai"

    def __init__(
        self, name: str, http: Poster, base_url: str, api_key: str | None, encoding_format: str = "float"
    ) -> None:
        self.name = name
        self.encoding_format = encoding_format
        self.http = http
        self.url = base_url.rstrip("/") + "/embeddings"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def request_body(self, batch: Batch) -> dict[str, Any]:
        inputs = [it.parts.get("tokens", it.parts.get("text")) for it in batch.items]
        body: dict[str, Any] = {"model": batch.spec.upstream_model, "input": inputs}
        body["encoding_format"] = self.encoding_format
        if batch.params.send_dimension:
            body["dimensions"] = batch.params.dimension
        return body

    async def embed(self, batch: Batch) -> Result:
        budget = answer_budget(len(batch.items), batch.params.dimension)
        data = await post_json(self.http, self.url, self.request_body(batch), self.headers, self.name, max_bytes=budget)
        rows = data.get("data")
        if not isinstance(rows, list):
            rows = []
        dim = batch.params.dimension

        def pairs() -> Iterator[tuple[Any, Any]]:
            for row in rows:
                if not isinstance(row, dict):
                    yield None, None
                    continue
                vec = row.get("embedding")
                if isinstance(vec, str):
                    vec = decode_base64_vector(vec, dim, self.name)
                yield row.get("index"), vec

        return Result(assemble(pairs(), len(batch.items), dim, self.name), usage_tokens(data.get("usage")))

    async def close(self) -> None:
        await self.http.close()
