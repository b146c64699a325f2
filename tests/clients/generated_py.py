"""The client openapi-python-client generates from the gateway's live OpenAPI document, used as its README
shows: vectors, then a 401 and a 429 read as the generated `OpenAIError` model.

Run with the client matrix's virtualenv (.venv-clients): `python generated_py.py OUT_DIR '{"base": ...,
"key": ..., "throttled": ..., "model": ..., "texts": [...]}'`, OUT_DIR holding the generated package
`embedding_gateway_client`. Prints {"vectors": [...], "unauthorized": {...}, "limited": {...}} on stdout;
tests/clients/test_generated_clients.py checks it.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    out_dir, args = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, out_dir)
    from embedding_gateway_client import AuthenticatedClient
    from embedding_gateway_client.api.default import create_embeddings
    from embedding_gateway_client.models import (
        EmbeddingRequest,
        EmbeddingRequestEncodingFormatType0,
        EmbeddingResponse,
        OpenAIError,
    )

    body = EmbeddingRequest(
        model=args["model"], input_=args["texts"], encoding_format=EmbeddingRequestEncodingFormatType0.FLOAT
    )

    def call(key: str) -> Any:
        with AuthenticatedClient(base_url=args["base"], token=key) as client:
            return create_embeddings.sync_detailed(client=client, body=body)

    def failure(response: Any) -> dict[str, Any]:
        parsed = response.parsed
        assert isinstance(parsed, OpenAIError), f"status {response.status_code}: {type(parsed).__name__}"
        code = parsed.error.code
        return {"status": int(response.status_code), "type": parsed.error.type_, "code": code or None}

    ok = call(args["key"]).parsed
    assert isinstance(ok, EmbeddingResponse), type(ok).__name__
    unauthorized = failure(call("not-a-key"))
    call(args["throttled"])  # the team's one request of the window
    limited = failure(call(args["throttled"]))
    out = {"vectors": [d.embedding for d in ok.data], "unauthorized": unauthorized, "limited": limited}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
