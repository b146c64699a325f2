"""Params: the dimension and the vector-changing options, checked against the model and its route."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import InvalidRequest
from app.inputs.params import Params, resolve
from tests.support.samples import PLUS, QWEN, SMALL, V4, spec

MMV1 = spec("multimodal-embedding-v1")


def openai(model: Any, dimension: object = None, kind: str = "dashscope", **options: Any) -> Params:
    return resolve(model, kind, dimension, options, dim_param="dimensions", opt_prefix="", forward_unknown=False)


def native(model: Any, dimension: object = None, kind: str = "dashscope", **options: Any) -> Params:
    return resolve(
        model,
        kind,
        dimension,
        options,
        dim_param="parameters.dimension",
        opt_prefix="parameters.",
        forward_unknown=True,
    )


def refused(call: Any, param: str) -> str:
    with pytest.raises(InvalidRequest) as info:
        call()
    assert info.value.param == param and info.value.status == 400
    assert info.value.message.startswith(param + ":")
    return info.value.message


def test_default_dimension_is_sent_unless_the_model_says_not_to() -> None:
    p = openai(V4)
    assert (p.dimension, p.send_dimension, p.options) == (1024, True, {})  # the upstream's default never decides
    quiet = openai(V4.model_copy(update={"send_dimension": False}))
    assert (quiet.dimension, quiet.send_dimension) == (1024, False)
    assert openai(V4.model_copy(update={"send_dimension": False}), 512).send_dimension  # asked for: sent


@pytest.mark.parametrize("dim", [64, 128, 256, 512, 768, 1024, 1536, 2048])
def test_every_listed_dimension_is_allowed_and_sent(dim: int) -> None:
    assert openai(V4, dim) == Params(dim, True, {})
    assert native(V4, dim).dimension == dim


@pytest.mark.parametrize("dim", [0, -1, 63, 100, 4096, 1024.0, "1024", True, [1024]])
def test_other_dimensions_are_refused_naming_the_allowed_ones(dim: object) -> None:
    message = refused(lambda: openai(V4, dim), "dimensions")
    assert "2048, 1536, 1024, 768, 512, 256, 128, 64" in message
    refused(lambda: native(V4, dim), "parameters.dimension")


def test_range_dimensions_of_openai_models() -> None:
    assert openai(SMALL, 1, kind="openai").dimension == 1
    assert openai(SMALL, 1536, kind="openai").dimension == 1536
    assert "1..1536" in refused(lambda: openai(SMALL, 1537, kind="openai"), "dimensions")
    refused(lambda: openai(MMV1, 512), "dimensions")


@pytest.mark.parametrize(
    ("model", "options"),
    [
        (V4, {"text_type": "query"}),
        (V4, {"text_type": "document", "instruct": "find docs", "output_type": "dense"}),
        (PLUS, {"fps": 0.5, "instruct": "x", "res_level": 2, "max_video_frames": 64}),
        (PLUS, {"fps": 0, "res_level": 0, "max_video_frames": 1}),
        (QWEN, {"enable_fusion": True}),
        (QWEN, {"enable_fusion": False}),
    ],
)
def test_options_each_endpoint_takes(model: Any, options: dict[str, Any]) -> None:
    assert openai(model, **options).options == options
    assert native(model, **options).options == options


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [
        (V4, "fps", 0.5),  # multimodal only
        (V4, "enable_fusion", True),
        (V4, "res_level", 1),
        (PLUS, "text_type", "query"),  # text only
        (PLUS, "enable_fusion", True),  # qwen3-vl only
        (V4, "text_type", "passage"),
        (V4, "output_type", "sparse"),  # only dense vectors are cached
        (PLUS, "fps", 1.5),
        (PLUS, "fps", True),
        (PLUS, "res_level", 4),
        (PLUS, "res_level", 1.0),
        (PLUS, "max_video_frames", 65),
        (PLUS, "max_video_frames", 0),
        (QWEN, "enable_fusion", "yes"),
        (V4, "instruct", ""),
        (V4, "instruct", "x" * 4097),
    ],
)
def test_options_refused_naming_the_field(model: Any, name: str, value: object) -> None:
    refused(lambda: openai(model, **{name: value}), name)
    refused(lambda: native(model, **{name: value}), "parameters." + name)


def test_unknown_options_forwarded_on_the_native_route_only() -> None:
    p = native(V4, auto_truncation=True, custom="x")
    assert p.options == {"auto_truncation": True, "custom": "x"}
    # Any JSON value, as DashScope takes it (LlamaIndex's DashScopeEmbedding sends {"kwargs": {...}}).
    nested = native(V4, kwargs={"text_type": "document"}, seq=[1, {"a": None}])
    assert nested.options == {"kwargs": {"text_type": "document"}, "seq": [1, {"a": None}]}
    assert "unknown parameter" in refused(lambda: openai(V4, auto_truncation=True), "auto_truncation")


def test_nulls_are_not_given() -> None:
    assert native(V4, text_type=None, instruct=None).options == {}


def test_no_dashscope_option_reaches_an_openai_upstream() -> None:
    refused(lambda: openai(SMALL, kind="openai", text_type="query"), "text_type")
    refused(lambda: native(SMALL, kind="openai", anything=1), "parameters.anything")
    assert openai(SMALL, 256, kind="openai") == Params(256, True, {})


def test_fusion_flag() -> None:
    assert openai(QWEN, enable_fusion=True).fusion
    assert not openai(QWEN, enable_fusion=False).fusion
    assert not openai(QWEN).fusion


def test_an_unknown_parameter_nested_too_deep_is_refused_by_name() -> None:
    def nested(depth: int) -> object:
        value: object = 1
        for level in range(depth):
            value = [value] if level % 2 else {"k": value}
        return value

    assert native(V4, custom=nested(32)).options == {"custom": nested(32)}
    with pytest.raises(InvalidRequest) as info:
        native(V4, custom=nested(33))
    assert info.value.param == "parameters.custom" and "nested deeper than 32" in str(info.value)


def test_a_request_that_sets_nothing_gets_its_models_defaults() -> None:
    """Made once per (dimension, send) and shared: equal to what the full check makes."""
    for s in (V4, PLUS, QWEN, SMALL):
        got = resolve(s, "dashscope", None, {}, dim_param="dimensions", opt_prefix="", forward_unknown=False)
        assert got == Params(s.default_dimension, s.send_dimension)
        assert got == resolve(s, "dashscope", None, {"text_type": None}, dim_param="dimensions", opt_prefix="",
                              forward_unknown=False)  # fmt: skip
