"""Any OpenAI-compatible embeddings server: OpenAI, DashScope compatible mode, vLLM, TEI, Infinity, Ollama.

Only what the caller set is sent: no null fields (a null `encoding_format` once broke every vLLM call of a
peer gateway); `dimensions` is the one the gateway resolved (the model's `send_dimension: false` leaves it
out for servers that refuse it). Vectors are requested as floats, which every such server
supports, and base64 answers are decoded all the same.
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

    def __init__(self, name: str, http: Poster, base_url: str, api_key: str | None) -> None:
        self.name = name
        self.http = http
        self.url = base_url.rstrip("/") + "/embeddings"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def request_body(self, batch: Batch) -> dict[str, Any]:
        inputs = [it.parts.get("tokens", it.parts.get("text")) for it in batch.items]
        body: dict[str, Any] = {"model": batch.spec.upstream_model, "input": inputs, "encoding_format": "float"}
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
