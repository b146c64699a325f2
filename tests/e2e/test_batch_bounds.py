"""The bounds of job files, each tried: more lines than allowed (400 naming the file), more bytes (413),
a team over its stored bytes (413, another team unaffected, room back after a delete), a line longer than
allowed (that line in the error file), and expiry (404 once expired; the sweep deletes the stored object; a
finished batch is forgotten when its output files expire: a record each in the shared Redis otherwise kept
for ever, however many a team made).
Small caps in the config make each reachable in a few requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from tests.support.polling import eventually
from tests.support.processes import GatewayFactory
from tests.support.teamkit import jobs_gateway

LINES, BYTES, TEAM_BYTES, LINE_BYTES, TTL_S = 20, 4000, 9000, 600, 4


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    jobs = {"max_lines": LINES, "max_file_bytes": BYTES, "files_sweep_s": 2, "team_max_bytes": TEAM_BYTES,
            "max_line_bytes": LINE_BYTES, "file_ttl_s": TTL_S}  # fmt: skip
    with jobs_gateway(gateways, tmp_path_factory.mktemp("bounds"), {"alpha": {}, "beta": {}}, jobs=jobs) as j:
        yield j.gw, j.keys, j.files


def line(i: int, text: str = "x") -> bytes:
    body = {"model": "text-embedding-v4", "input": text, "dimensions": 64}
    return orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings", "body": body})


def client(g: Any, key: str) -> OpenAI:
    return OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0)


def test_line_and_byte_caps(gw: Any) -> None:
    g, keys, _ = gw
    c = client(g, keys["alpha"])
    with pytest.raises(openai.BadRequestError) as too_many:
        c.files.create(file=("many.jsonl", b"\n".join(line(i) for i in range(LINES + 1))), purpose="batch")
    assert too_many.value.body["param"] == "file" and str(LINES) in too_many.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as too_big:
        c.files.create(file=("big.jsonl", b"\n" * 10 + b" " * BYTES), purpose="batch")
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as purpose:
        c.files.create(file=("p.jsonl", line(0)), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]
    long = line(1, "y" * LINE_BYTES)
    f = c.files.create(file=("long.jsonl", line(0) + b"\n" + long + b"\n" + line(2)), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")

    def completed() -> Any:
        done = c.batches.retrieve(b.id)
        assert done.status == "completed", done
        return done

    b = eventually(completed, within=30, interval=0.2)
    assert b.request_counts.completed == 2 and b.request_counts.failed == 1  # type: ignore[union-attr]
    err = orjson.loads(c.files.content(b.error_file_id).content)  # type: ignore[arg-type]
    assert "longer than" in err["error"]["message"]


def test_a_team_s_stored_bytes_are_capped(gw: Any) -> None:
    g, keys, _ = gw
    alpha, beta = client(g, keys["alpha"]), client(g, keys["beta"])
    body = b"\n".join(line(i, "z" * 100) for i in range(15))  # about 2 KB
    kept = []
    with pytest.raises(openai.APIStatusError) as full:
        for _ in range(TEAM_BYTES // len(body) + 2):
            kept.append(beta.files.create(file=("f.jsonl", body), purpose="batch").id)
    assert full.value.status_code == 413 and "team beta" in full.value.body["message"]  # type: ignore[index]
    assert 2 <= len(kept) <= TEAM_BYTES // len(body)
    alpha.files.create(file=("f.jsonl", body), purpose="batch")  # another team is not affected
    beta.files.delete(kept[0])
    beta.files.create(file=("f.jsonl", body), purpose="batch")  # room again after a delete


def test_files_expire(gw: Any) -> None:
    g, keys, root = gw
    c = client(g, keys["alpha"])
    f = c.files.create(file=("e.jsonl", line(0)), purpose="batch")
    assert c.files.retrieve(f.id).expires_at == f.created_at + TTL_S
    stored = root / "files" / f.id / "0"
    assert stored.exists()
    time.sleep(TTL_S + 1)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    # the sweep runs every files_sweep_s (2 s here) on some worker
    eventually(lambda: not stored.exists(), within=30, interval=0.5, what="the expired file deleted")


def test_finished_batches_are_forgotten_when_their_files_expire(gw: Any) -> None:
    g, keys, _ = gw
    c = client(g, keys["alpha"])
    f = c.files.create(file=("one.jsonl", line(0)), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")

    def forgotten() -> bool:
        try:
            c.batches.retrieve(b.id)
        except openai.NotFoundError:
            return True
        return False

    # the sweep runs every files_sweep_s (2 s here) on some worker; the batch ends within a second or two
    eventually(forgotten, within=30, interval=0.5, what="the finished batch forgotten")
    assert b.id not in [x.id for x in c.batches.list()]
