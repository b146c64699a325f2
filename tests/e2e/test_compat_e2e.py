"""Issue 15 end to end on the wire (the gateway as a process, Redis, team keys, the stand-in upstream): token
ids served as their text, DashScope parameters as DashScope takes them, GET /v1/models/{id}, the codes of
429s and of every error, and the dashscope SDK's local-file upload answered with what to do instead."""

from __future__ import annotations

import uuid
from typing import Any

import dashscope
import httpx
import numpy as np
import pytest
from openai import OpenAI

from app.inputs import tokentext
from bench.standin import canonical_digest, expected_vector
from tests.support.processes import GatewayFactory, RedisServer, StandIn
from tests.support.teamkit import DS_TEXT, OPENAI, write_config

TEXT = "text-embedding-v4"


class Api:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url, self.keys = url, keys

    def post(self, path: str, body: dict[str, Any], team: str = "wide") -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {self.keys[team]}"})

    def get(self, path: str, team: str | None = "wide") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[team]}"} if team else {}
        return httpx.get(self.url + path, headers=headers)


@pytest.fixture(scope="module")
def api(gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Api:
    config = tmp_path_factory.mktemp("compat") / "gateway.yaml"
    teams = {"wide": {}, "narrow": {"models": [TEXT]}, "slow": {"rpm": 1}, "frugal": {"tpm": 10}}
    keys = write_config(config, teams, limits_window_s=30)
    gateways.secrets.update(keys.values())
    gw = gateways.start(redis_url=redis_server.url, config=str(config))
    return Api(gw.url, keys)


def salted(*texts: str) -> list[str]:
    salt = uuid.uuid4().hex[:10]
    return [f"{t} {salt}" for t in texts]


def ids(text: str) -> list[int]:
    enc = tokentext.encoding("cl100k_base")
    assert enc is not None
    return enc.encode_ordinary(text)


def vectors(r: httpx.Response) -> list[np.ndarray]:
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["data"] if "data" in body else body["output"]["embeddings"]
    return [np.asarray(row["embedding"], dtype=np.float32) for row in rows]


# ---------------------------------------------------------------- token ids


def test_token_ids_and_the_same_text_are_one_upstream_item_and_one_vector(api: Api, standin: StandIn) -> None:
    (text,) = salted("the same text, 你好")
    by_ids = api.post(OPENAI, {"model": TEXT, "input": [ids(text)], "encoding_format": "float"})
    by_text = api.post(OPENAI, {"model": TEXT, "input": text, "encoding_format": "float"})
    assert by_ids.headers["x-cache-misses"] == "1" and by_text.headers["x-cache-hits"] == "1"
    want = expected_vector(TEXT, 1024, text)
    for got in (*vectors(by_ids), *vectors(by_text)):
        np.testing.assert_array_equal(got, want)
    assert standin.digests() == [canonical_digest(TEXT, 1024, text)]


def test_ids_and_text_in_one_request_go_upstream_once(api: Api, standin: StandIn) -> None:
    a, b = salted("alpha", "beta")
    r = api.post(OPENAI, {"model": TEXT, "input": [ids(a), a, ids(b)], "encoding_format": "float"})
    got = vectors(r)
    np.testing.assert_array_equal(got[0], got[1])
    assert sorted(standin.digests()) == sorted(canonical_digest(TEXT, 1024, t) for t in (a, b))
    (flat,) = vectors(api.post(OPENAI, {"model": TEXT, "input": ids(a), "encoding_format": "float"}))
    np.testing.assert_array_equal(flat, got[0])  # one flat list of ints: one item


def test_ids_that_do_not_decode_are_a_400_naming_the_item(api: Api, standin: StandIn) -> None:
    good = ids(salted("fine")[0])
    for bad, why in (([15339, 100256], "not a token id"), ([57668, 53901, 11410, 248], "UTF-8")):
        r = api.post(OPENAI, {"model": TEXT, "input": [good, "text", bad]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input[2]" and why in r.json()["error"]["message"]
    assert standin.calls() == []


# ---------------------------------------------------------------- DashScope parameters


def test_unknown_parameters_of_any_type_are_forwarded_and_keyed(api: Api, standin: StandIn) -> None:
    texts = salted("one", "two")
    extra = {"kwargs": {"text_type": "document", "nested": [1, {"b": 2, "a": None}]}, "flag": True, "n": 1.5}
    body = {"model": TEXT, "input": {"texts": texts}, "parameters": {**extra, "dimension": 512, "skip": None}}
    got = vectors(api.post(DS_TEXT, body))
    for g, t in zip(got, texts, strict=True):
        np.testing.assert_array_equal(g, expected_vector(TEXT, 512, t, extra))  # the stand-in saw them all
    reordered = {"n": 1.5, "flag": True, "kwargs": {"nested": [1, {"a": None, "b": 2}], "text_type": "document"}}
    again = api.post(DS_TEXT, {"model": TEXT, "input": {"texts": texts}, "parameters": {**reordered, "dimension": 512}})
    assert again.headers["x-cache-hits"] == "2"  # the same parameters, in another order: the same entries
    other = {**extra, "kwargs": {"text_type": "query"}, "dimension": 512}
    assert (
        api.post(DS_TEXT, {"model": TEXT, "input": {"texts": texts}, "parameters": other}).headers["x-cache-misses"]
        == "2"
    )
    assert len(standin.calls()) == 2


@pytest.mark.parametrize(
    ("parameters", "param"),
    [
        ({"dimension": 3}, "parameters.dimension"),
        ({"text_type": "neither"}, "parameters.text_type"),
        ({"fps": 0.5}, "parameters.fps"),  # a video option, on a text model
        ({"output_type": "sparse"}, "parameters.output_type"),
    ],
)
def test_known_parameters_stay_checked(api: Api, standin: StandIn, parameters: dict[str, Any], param: str) -> None:
    r = api.post(DS_TEXT, {"model": TEXT, "input": {"texts": ["x"]}, "parameters": parameters})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter" and r.json()["param"] == param
    assert standin.calls() == []


# ---------------------------------------------------------------- models, 429s and errors as OpenAI shapes them


def test_retrieve_a_model_in_openais_shape(api: Api) -> None:
    client = OpenAI(base_url=api.url + "/v1", api_key=api.keys["narrow"], max_retries=0)
    model = client.models.retrieve(TEXT)
    assert (model.id, model.object, model.owned_by) == (TEXT, "model", "dashscope")
    card = api.get(f"/v1/models/{TEXT}", "narrow").json()
    listed = {m["id"]: m for m in api.get("/v1/models", "narrow").json()["data"]}
    assert card == listed[TEXT]
    for name, team in (("tongyi-embedding-vision-plus", "narrow"), ("no-such-model", "wide")):
        r = api.get(f"/v1/models/{name}", team)
        assert r.status_code == 404
        assert r.json()["error"] == {
            "message": f"The model '{name}' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    assert api.get(f"/v1/models/{TEXT}", None).status_code == 401


def test_429_codes_per_wire(api: Api) -> None:
    first = api.post(OPENAI, {"model": TEXT, "input": "a"}, "slow")
    assert first.status_code == 200
    openai_429 = api.post(OPENAI, {"model": TEXT, "input": "b"}, "slow")
    assert openai_429.status_code == 429 and int(openai_429.headers["retry-after"]) >= 1
    assert openai_429.json()["error"]["code"] == "rate_limit_exceeded"
    assert openai_429.json()["error"]["type"] == "rate_limit_error"
    ds_429 = api.post(DS_TEXT, {"model": TEXT, "input": {"texts": ["c"]}}, "slow")
    assert ds_429.status_code == 429 and ds_429.json()["code"] == "Throttling.RateQuota"


def test_a_token_limit_is_allocation_quota_on_dashscope_routes(api: Api, standin: StandIn) -> None:
    text = "a text of about thirty tokens, more than the ten this team may use in a window " * 2
    ds = api.post(DS_TEXT, {"model": TEXT, "input": {"texts": [text]}}, "frugal")
    assert ds.status_code == 429 and ds.json()["code"] == "Throttling.AllocationQuota"
    oa = api.post(OPENAI, {"model": TEXT, "input": text}, "frugal")
    assert oa.status_code == 429 and oa.json()["error"]["code"] == "rate_limit_exceeded"
    assert standin.calls() == []


def test_every_openai_error_has_a_type_and_a_code(api: Api) -> None:
    key, wrong = {"Authorization": f"Bearer {api.keys['wide']}"}, {"Authorization": "Bearer not-a-key"}
    replies = {
        "bad json": httpx.post(api.url + OPENAI, content=b"{", headers=key),
        "bad field": api.post(OPENAI, {"model": TEXT, "input": "x", "dimensions": 3}),
        "unknown key": api.post(OPENAI, {"model": TEXT, "input": "x", "nope": 1}),
        "no key": httpx.post(api.url + OPENAI, json={"model": TEXT, "input": "x"}),
        "wrong key": httpx.post(api.url + OPENAI, json={"model": TEXT, "input": "x"}, headers=wrong),
        "not allowed": api.post(OPENAI, {"model": "tongyi-embedding-vision-plus", "input": "x"}, "narrow"),
        "unknown model": api.post(OPENAI, {"model": "nope", "input": "x"}),
        "no route": httpx.get(api.url + "/v1/nothing", headers=key),
        "wrong method": httpx.get(api.url + OPENAI, headers=key),
    }
    for what, r in replies.items():
        error = r.json()["error"]
        assert 400 <= r.status_code < 500, what
        assert isinstance(error["type"], str) and isinstance(error["code"], str) and error["code"], (what, error)
    assert replies["no key"].json()["error"]["code"] == "invalid_api_key"
    assert replies["wrong key"].json()["error"]["code"] == "invalid_api_key"
    assert replies["unknown model"].json()["error"]["code"] == "model_not_found"


# ---------------------------------------------------------------- local files from the dashscope SDK


def test_the_sdks_local_file_upload_is_answered_with_what_to_do(api: Api, standin: StandIn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = api.get("/api/v1/uploads?action=getPolicy&model=tongyi-embedding-vision-plus")
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter" and "data URI" in r.json()["message"]
    assert r.json()["request_id"]
    image = tmp_path / "red.png"
    image.write_bytes(bytes.fromhex("89504e470d0a1a0a"))
    dashscope.base_http_api_url = api.url + "/api/v1"
    with pytest.raises(Exception, match="data URI") as err:
        dashscope.MultiModalEmbedding.call(
            model="tongyi-embedding-vision-plus", input=[{"image": image.as_uri()}], api_key=api.keys["wide"]
        )
    assert "Get upload certificate failed, code: InvalidParameter" in str(err.value)
    assert standin.calls() == []
