"""The catalog: built-ins enabled by their upstream, config-file overrides, errors naming models.<name>.<field>."""

from __future__ import annotations

from typing import Any

import pytest

from app.config.catalog import BUILT_IN, build_catalog
from app.config.settings import Settings

DASHSCOPE_MODELS = {
    "tongyi-embedding-vision-plus",
    "tongyi-embedding-vision-flash",
    "tongyi-embedding-vision-plus-2026-03-06",
    "tongyi-embedding-vision-flash-2026-03-06",
    "qwen3-vl-embedding",
    "multimodal-embedding-v1",
    "text-embedding-v4",
    "text-embedding-v3",
}


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EMBEDDING_GATEWAY_CONFIG", "DASHSCOPE_API_KEY", "OPENAI_API_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def catalog(models: dict[str, Any] | None = None, available: frozenset[str] = frozenset({"dashscope"})) -> Any:
    names = ("dashscope", "openai", "local")
    return build_catalog(
        models or {}, Settings().upstream_configs(), {n: None if n in available else "off" for n in names}
    )


def test_models_are_enabled_by_their_upstream() -> None:
    assert set(catalog().names()) == DASHSCOPE_MODELS
    assert set(catalog(available=frozenset({"openai"})).names()) == {"text-embedding-3-small", "text-embedding-3-large"}
    assert catalog(available=frozenset()).names() == []
    assert catalog(available=frozenset()).why_unavailable("text-embedding-v4") == "off"


def test_built_in_dashscope_limits_follow_the_contracts() -> None:
    c = catalog()
    v4 = c.get("text-embedding-v4")
    assert (v4.max_batch, v4.default_dimension, v4.endpoint) == (10, 1024, "text")
    assert v4.dimensions == (2048, 1536, 1024, 768, 512, 256, 128, 64)
    plus = c.get("tongyi-embedding-vision-plus")
    assert plus.endpoint == "multimodal" and plus.default_dimension == 1152 and plus.max_multi_images == 8
    assert plus.image_formats == {"jpeg", "png", "bmp"} and not plus.fused_objects
    dated = c.get("tongyi-embedding-vision-plus-2026-03-06")
    assert dated.fused_objects and "webp" in dated.image_formats and dated.max_image_bytes == 10 * 1024 * 1024
    assert c.get("qwen3-vl-embedding").enable_fusion
    assert c.get("multimodal-embedding-v1").dimensions == (1024,)


def test_file_overrides_fields_of_a_built_in_and_keeps_the_rest() -> None:
    v4 = catalog({"text-embedding-v4": {"max_batch": 4, "upstream_model": "text-embedding-v4-snapshot"}}).get(
        "text-embedding-v4"
    )
    assert (v4.max_batch, v4.upstream_model) == (4, "text-embedding-v4-snapshot")
    assert v4.default_dimension == BUILT_IN["text-embedding-v4"]["default_dimension"]


def test_file_adds_a_model_on_an_operator_upstream() -> None:
    settings = Settings(
        upstreams={"vllm": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        models={
            "bge": {
                "upstream": "vllm",
                "upstream_model": "BAAI/bge-small",
                "dimensions": [384],
                "default_dimension": 384,
            }
        },
    )
    bge = build_catalog(settings.models, settings.upstream_configs(), {"vllm": None}).get("bge")
    assert bge is not None and bge.upstream == "vllm" and bge.upstream_model == "BAAI/bge-small"


def test_enabled_false_removes_a_built_in() -> None:
    assert "text-embedding-v3" not in catalog({"text-embedding-v3": {"enabled": False}}).names()


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"text-embedding-v4": {"max_batch": 0}}, "models.text-embedding-v4.max_batch: "),
        ({"text-embedding-v4": {"max_batch": "many"}}, "models.text-embedding-v4.max_batch: "),
        ({"text-embedding-v4": {"dimensionz": [1]}}, "models.text-embedding-v4.dimensionz: "),
        ({"text-embedding-v4": {"default_dimension": 100}}, "models.text-embedding-v4: default_dimension 100"),
        ({"new": {"upstream": "dashscope"}}, "models.new.default_dimension: "),
        ({"new": {"upstream": "nowhere", "default_dimension": 8}}, "models.new.upstream: no upstream named 'nowhere'"),
        (
            {"new": {"upstream": "dashscope", "default_dimension": 8, "modalities": ["smell"]}},
            "models.new.modalities[0]: ",
        ),
    ],
)
def test_errors_name_the_model_and_field(models: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        catalog(models)
    assert str(info.value).startswith(message)


def fleet_catalog(models: dict[str, Any], available: set[str]) -> Any:
    upstreams = {
        "ds-a": {"kind": "dashscope", "base_url": "http://127.0.0.1:9/api/v1"},
        "ds-b": {"kind": "dashscope", "base_url": "http://127.0.0.1:10/api/v1"},
        "vllm": {"kind": "openai", "base_url": "http://127.0.0.1:11/v1"},
    }
    settings = Settings(upstreams=upstreams, models=models)
    names = ("dashscope", "openai", "local", *upstreams)
    return build_catalog(
        settings.models, settings.upstream_configs(), {n: None if n in available else "off" for n in names}
    )


def test_deployments_shape_and_shorthand() -> None:
    models = {
        "text-embedding-v4": {
            "deployments": [
                {"upstream": "ds-a", "rpm": 1200, "tpm": 1000000},
                {"upstream": "ds-b", "rpm": 600, "weight": 1},
            ]
        },
        "text-embedding-v3": {"deployments": [{"upstream": "ds-a", "cache_group": "v3"}, {"upstream": "ds-b"}]},
    }
    cat = fleet_catalog(models, {"dashscope", "ds-a", "ds-b"})
    v4 = cat.get("text-embedding-v4")
    assert v4.upstream == "ds-a" and [(d.upstream, d.rpm, d.tpm, d.weight) for d in v4.deployments] == [
        ("ds-a", 1200, 1000000, 1.0),
        ("ds-b", 600, None, 1.0),
    ]
    v3 = cat.get("text-embedding-v3")  # the model's own quota (the published 6000 rpm) is each account's
    assert [(d.rpm, d.cache_group) for d in v3.deployments] == [(6000, "v3"), (6000, None)]
    plus = cat.get("tongyi-embedding-vision-plus")  # `upstream:` is one deployment
    assert [(d.upstream, d.rpm) for d in plus.deployments] == [("dashscope", None)]


def test_a_deployment_without_its_key_is_left_out_and_the_model_served_by_the_others() -> None:
    models = {"text-embedding-v4": {"deployments": [{"upstream": "ds-a"}, {"upstream": "ds-b"}]}}
    v4 = fleet_catalog(models, {"ds-b"}).get("text-embedding-v4")
    assert v4.upstream == "ds-b" and [d.upstream for d in v4.deployments] == ["ds-b"]
    assert fleet_catalog(models, set()).why_unavailable("text-embedding-v4") == "off"


@pytest.mark.parametrize(
    ("deployments", "message"),
    [
        ([{"upstream": "nowhere"}], "models.m.upstream: no upstream named 'nowhere'"),
        ([{"upstream": "ds-a"}, {"upstream": "nowhere"}], "models.m.deployments[1].upstream: no upstream named"),
        ([{"upstream": "ds-a"}, {"upstream": "ds-a"}], "each upstream may appear once"),
        ([{"upstream": "ds-a"}, {"upstream": "vllm"}], "upstreams of one kind only (found dashscope, openai)"),
        ([{"upstream": "ds-a", "weight": 0}], "models.m.deployments[0].weight"),
        ([{"upstream": "ds-a", "cache_group": "has space"}], "models.m.deployments[0].cache_group"),
        ([{"upstream": "ds-a", "rmp": 5}], "models.m.deployments[0].rmp"),
    ],
)
def test_deployment_errors_name_the_field(deployments: list[dict[str, Any]], message: str) -> None:
    models = {"m": {"default_dimension": 8, "deployments": deployments}}
    with pytest.raises(ValueError) as info:
        fleet_catalog(models, {"ds-a", "ds-b", "vllm"})
    assert message in str(info.value)
