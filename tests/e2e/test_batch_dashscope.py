"""DashScope's async text-embedding tasks through the dashscope SDK unchanged: BatchTextEmbedding.call and
async_call + wait against a text file served on loopback (allowlisted for the fetcher as the media tests
do); the signed result URL downloads a gzipped file whose vectors are exactly the ones the sync route
serves; fetch, list and cancel as the SDK calls them; every other use of the async header is a 400 that
says what is supported; a private address is refused at creation."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import httpx
import numpy as np
import orjson
import pytest
from dashscope import BatchTextEmbedding, TextEmbedding

from tests.support.processes import GatewayFactory
from tests.support.teamkit import DS_MM, DS_TEXT, jobs_gateway

MODEL, DIM = "text-embedding-v4", 64


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, served: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with jobs_gateway(gateways, tmp_path_factory.mktemp("tasks"), {"alpha": {}}, jobs={"chunk_lines": 100},
                      media_fetch_allow_hosts=[served[0]]) as j:  # fmt: skip
        dashscope.base_http_api_url = j.gw.url + "/api/v1"
        dashscope.api_key = j.keys["alpha"]
        yield j.gw, j.keys["alpha"]


def text_file(served: tuple[str, Path], lines: list[str]) -> str:
    name = f"{uuid.uuid4().hex}.txt"
    (served[1] / name).write_text("\n".join(lines) + "\n")
    return f"http://{served[0]}/{name}"


def check_result(url: str, texts: list[str]) -> None:
    rows = [orjson.loads(x) for x in gzip.decompress(httpx.get(url).raise_for_status().content).splitlines()]
    got = {r["output"]["text_index"]: r["output"]["embedding"] for r in rows}
    assert sorted(got) == list(range(len(texts)))
    sync = TextEmbedding.call(model=MODEL, input=texts[:10], dimension=DIM, text_type="document")
    assert sync.status_code == 200, sync.message
    for e in sync.output["embeddings"]:
        np.testing.assert_allclose(got[e["text_index"]], e["embedding"], atol=1e-6)


def test_call_waits_for_the_task_and_its_result_url_downloads(gw: Any, served: tuple[str, Path]) -> None:
    texts = [f"{uuid.uuid4().hex} document {i}" for i in range(250)]
    r = BatchTextEmbedding.call(model=MODEL, url=text_file(served, texts), dimension=DIM, text_type="document")
    assert r.status_code == 200, r.message
    assert r.output.task_status == "SUCCEEDED" and r.output.task_metrics["SUCCEEDED"] == len(texts)
    check_result(r.output.url, texts)
    bad = r.output.url.replace("signature=", "signature=0")
    assert httpx.get(bad).status_code == 403


def test_async_call_wait_fetch_list_and_cancel(gw: Any, served: tuple[str, Path]) -> None:
    texts = [f"{uuid.uuid4().hex} line {i}" for i in range(120)]
    task = BatchTextEmbedding.async_call(model=MODEL, url=text_file(served, texts), dimension=DIM,
                                         text_type="document")  # fmt: skip
    assert task.status_code == 200 and task.output.task_status == "PENDING", task
    done = BatchTextEmbedding.wait(task)
    assert done.output.task_status == "SUCCEEDED", done
    assert BatchTextEmbedding.fetch(task).output.task_status == "SUCCEEDED"
    check_result(done.output.url, texts)
    listed = BatchTextEmbedding.list(status="SUCCEEDED", page_size=100)
    assert task.output.task_id in [t["task_id"] for t in listed.output["data"]]
    refused = BatchTextEmbedding.cancel(task)  # DashScope cancels PENDING tasks only
    assert refused.status_code == 400 and refused.code == "UnsupportedOperation"


def test_other_uses_of_the_async_header_say_what_is_supported(gw: Any) -> None:
    g, key = gw
    headers = {"authorization": f"Bearer {key}", "x-dashscope-async": "enable"}
    texts = {"model": MODEL, "input": {"texts": ["a"]}}
    mm = {"model": "tongyi-embedding-vision-plus", "input": {"contents": [{"text": "a"}]}}
    for path, body in ((DS_TEXT, texts), (DS_MM, mm)):
        r = httpx.post(g.url + path, json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert "text-embedding route only, with input.url" in r.json()["message"]
    private = {"model": MODEL, "input": {"url": "http://10.1.2.3/docs.txt"}}
    r = httpx.post(g.url + DS_TEXT, json=private, headers=headers)
    assert r.status_code == 400 and r.json()["param"] == "input.url", r.text


def test_a_text_file_that_cannot_be_read_fails_the_task_saying_why(gw: Any, served: tuple[str, Path]) -> None:
    r = BatchTextEmbedding.call(model=MODEL, url=f"http://{served[0]}/missing-{uuid.uuid4().hex}.txt")
    assert r.status_code == 200 and r.output.task_status == "FAILED", r
    assert "HTTP 404" in r.output.message
