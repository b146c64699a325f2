"""The popular Python clients, each used as its documentation shows, pointed at the gateway.

Run with the client matrix's own virtualenv (.venv-clients, from tests/clients/requirements.txt), never the
gateway's: `python pyclients.py CASE '{"base": "http://127.0.0.1:PORT", "key": "...", "model": "...",
"texts": [...], "query": "..."}'`. Prints {"documents": [[...], ...], "query": [...]} (or what the case
returns) as JSON on stdout; tests/clients/test_clients.py compares it with the stand-in's vectors.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

Case = Callable[[dict[str, Any]], dict[str, Any]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def _documents_and_query(embedder: Any, a: dict[str, Any]) -> dict[str, Any]:
    return {"documents": embedder.embed_documents(a["texts"]), "query": embedder.embed_query(a["query"])}


@case
def langchain_openai(a: dict[str, Any]) -> dict[str, Any]:
    from langchain_openai import OpenAIEmbeddings

    return _documents_and_query(OpenAIEmbeddings(model=a["model"], base_url=a["base"] + "/v1", api_key=a["key"]), a)


@case
def langchain_openai_no_ctx_check(a: dict[str, Any]) -> dict[str, Any]:
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(
        model=a["model"], base_url=a["base"] + "/v1", api_key=a["key"], check_embedding_ctx_length=False
    )
    return _documents_and_query(embedder, a)


@case
def langchain_openai_async(a: dict[str, Any]) -> dict[str, Any]:
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(model=a["model"], base_url=a["base"] + "/v1", api_key=a["key"])

    async def run() -> dict[str, Any]:
        docs = await embedder.aembed_documents(a["texts"])
        return {"documents": docs, "query": await embedder.aembed_query(a["query"])}

    return asyncio.run(run())


@case
def langchain_dashscope(a: dict[str, Any]) -> dict[str, Any]:
    import dashscope
    from langchain_community.embeddings import DashScopeEmbeddings

    dashscope.base_http_api_url = a["base"] + "/api/v1"
    return _documents_and_query(DashScopeEmbeddings(model=a["model"], dashscope_api_key=a["key"]), a)


def _llama(embedder: Any, a: dict[str, Any]) -> dict[str, Any]:
    return {
        "documents": embedder.get_text_embedding_batch(a["texts"]),
        "query": embedder.get_query_embedding(a["query"]),
    }


@case
def llamaindex_openai(a: dict[str, Any]) -> dict[str, Any]:
    from llama_index.embeddings.openai import OpenAIEmbedding

    return _llama(OpenAIEmbedding(model_name=a["model"], api_base=a["base"] + "/v1", api_key=a["key"]), a)


@case
def llamaindex_openai_like(a: dict[str, Any]) -> dict[str, Any]:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    return _llama(OpenAILikeEmbedding(model_name=a["model"], api_base=a["base"] + "/v1", api_key=a["key"]), a)


@case
def llamaindex_dashscope(a: dict[str, Any]) -> dict[str, Any]:
    import dashscope
    from llama_index.embeddings.dashscope import DashScopeEmbedding

    dashscope.base_http_api_url = a["base"] + "/api/v1"
    return _llama(DashScopeEmbedding(model_name=a["model"], api_key=a["key"]), a)


@case
def litellm_sdk(a: dict[str, Any]) -> dict[str, Any]:
    import litellm

    def embed(texts: list[str]) -> list[list[float]]:
        r = litellm.embedding(model="openai/" + a["model"], input=texts, api_base=a["base"] + "/v1", api_key=a["key"])
        return [d["embedding"] for d in r.data]

    return {"documents": embed(a["texts"]), "query": embed([a["query"]])[0]}


@case
def openai_sync(a: dict[str, Any]) -> dict[str, Any]:
    from openai import OpenAI

    with OpenAI(base_url=a["base"] + "/v1", api_key=a["key"]) as client:
        docs = client.embeddings.create(model=a["model"], input=a["texts"])  # the SDK asks for base64
        query = client.embeddings.create(model=a["model"], input=a["query"], encoding_format="float")
        model = client.models.retrieve(a["model"])
        return {
            "documents": [d.embedding for d in docs.data],
            "query": query.data[0].embedding,
            "model": {"id": model.id, "object": model.object, "owned_by": model.owned_by},
        }


@case
def openai_async(a: dict[str, Any]) -> dict[str, Any]:
    from openai import AsyncOpenAI

    async def run() -> dict[str, Any]:
        async with AsyncOpenAI(base_url=a["base"] + "/v1", api_key=a["key"]) as client:
            docs, query = await asyncio.gather(
                client.embeddings.create(model=a["model"], input=a["texts"]),
                client.embeddings.create(model=a["model"], input=a["query"]),
            )
            model = await client.models.retrieve(a["model"])
            return {
                "documents": [d.embedding for d in docs.data],
                "query": query.data[0].embedding,
                "model": {"id": model.id, "object": model.object, "owned_by": model.owned_by},
            }

    return asyncio.run(run())


@case
def openai_retried_429(a: dict[str, Any]) -> dict[str, Any]:
    """Two requests in a row for a team allowed one per window: the second gets a 429, which the SDK retries
    after the gateway's Retry-After and which then succeeds."""
    from openai import OpenAI

    with OpenAI(base_url=a["base"] + "/v1", api_key=a["key"], max_retries=3) as client:
        first = client.embeddings.with_raw_response.create(model=a["model"], input=a["texts"][0])
        second = client.embeddings.with_raw_response.create(model=a["model"], input=a["texts"][1])
        return {
            "documents": [first.parse().data[0].embedding, second.parse().data[0].embedding],
            "retries": [first.retries_taken, second.retries_taken],
        }


@case
def openai_errors(a: dict[str, Any]) -> dict[str, Any]:
    """What the SDK makes of the gateway's errors: its exception class, status, type and code."""
    import openai
    from openai import OpenAI

    out: dict[str, Any] = {}
    with OpenAI(base_url=a["base"] + "/v1", api_key=a["key"], max_retries=0) as client:
        calls: dict[str, Callable[[], Any]] = {
            "unknown_model": lambda: client.models.retrieve("no-such-model"),
            "bad_dimensions": lambda: client.embeddings.create(model=a["model"], input="x", dimensions=3),
            "bad_key": lambda: OpenAI(base_url=a["base"] + "/v1", api_key="wrong", max_retries=0).models.list(),
        }
        for name, call in calls.items():
            try:
                call()
                out[name] = None
            except openai.APIStatusError as exc:
                out[name] = {"class": type(exc).__name__, "status": exc.status_code, "type": exc.type, "code": exc.code}
    return out


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    json.dump(CASES[name](args), sys.stdout)


if __name__ == "__main__":
    main()
