"""The Python frameworks of issue 23 (haystack, dspy, pydantic-ai, mem0), each used as its documentation shows,
pointed at the gateway through its OpenAI-compatible settings.

Run with the client matrix's virtualenv (.venv-clients): `python pyframeworks.py CASE '{"base": ..., "key": ...,
"model": ..., "texts": [...], "query": "..."}'`. Prints {"documents": [[...]], "query": [...], "again": [[...]]}
as JSON: `again` is the documents asked a second time (tests/clients/test_more_clients.py checks that the
upstream saw them once: a cache hit of the gateway, no cache of the framework's own in the way).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Case = Callable[[dict[str, Any]], dict[str, Any]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def twice(documents: Callable[[list[str]], Any], query: Callable[[str], Any], a: dict[str, Any]) -> dict[str, Any]:
    docs = [list(map(float, v)) for v in documents(a["texts"])]
    q = list(map(float, query(a["query"])))
    again = [list(map(float, v)) for v in documents(a["texts"])]
    return {"documents": docs, "query": q, "again": again}


@case
def haystack(a: dict[str, Any]) -> dict[str, Any]:
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
    from haystack.utils import Secret

    settings = {"api_key": Secret.from_token(a["key"]), "model": a["model"], "api_base_url": a["base"] + "/v1"}
    docs = OpenAIDocumentEmbedder(**settings, progress_bar=False)
    text = OpenAITextEmbedder(**settings)

    def documents(texts: list[str]) -> list[Any]:
        return [d.embedding for d in docs.run(documents=[Document(content=t) for t in texts])["documents"]]

    return twice(documents, lambda q: text.run(text=q)["embedding"], a)


@case
def dspy(a: dict[str, Any]) -> dict[str, Any]:
    import dspy

    # caching=False: dspy's own disk cache would answer the second call (and calls of earlier runs).
    embedder = dspy.Embedder("openai/" + a["model"], api_base=a["base"] + "/v1", api_key=a["key"], caching=False)
    return twice(lambda texts: embedder(texts), lambda q: embedder(q), a)


@case
def pydantic_ai(a: dict[str, Any]) -> dict[str, Any]:
    from pydantic_ai import Embedder
    from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=a["base"] + "/v1", api_key=a["key"])
    embedder = Embedder(OpenAIEmbeddingModel(a["model"], provider=provider))
    return twice(
        lambda texts: embedder.embed_documents_sync(texts).embeddings,
        lambda q: embedder.embed_query_sync(q).embeddings[0],
        a,
    )


@case
def mem0(a: dict[str, Any]) -> dict[str, Any]:
    from mem0.configs.embeddings.base import BaseEmbedderConfig
    from mem0.embeddings.openai import OpenAIEmbedding

    config = BaseEmbedderConfig(model=a["model"], api_key=a["key"], openai_base_url=a["base"] + "/v1")
    embedder = OpenAIEmbedding(config)
    return twice(
        lambda texts: embedder.embed_batch(texts, memory_action="add"),
        lambda q: embedder.embed(q, memory_action="search"),
        a,
    )


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    json.dump(CASES[name](args), sys.stdout)


if __name__ == "__main__":
    main()
