"""The route table: every path the gateway serves, written once. The routes, the fast path, the access log
and request metrics (asgi/observe.py), the /compatible-mode aliases, the error renderer (which wire a path
speaks, what a lost caller should use) and the batch jobs (the one endpoint a batch line may name) read it
here; tests/unit/test_layout.py fails on a route path written anywhere else in app/."""

from __future__ import annotations

# OpenAI wire
EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
MODEL = "/v1/models/{model_id:path}"
FILES = "/v1/files"
FILE = "/v1/files/{file_id}"
FILE_CONTENT = "/v1/files/{file_id}/content"
BATCHES = "/v1/batches"
BATCH = "/v1/batches/{batch_id}"
BATCH_CANCEL = "/v1/batches/{batch_id}/cancel"
USAGE = "/v1/organization/usage/embeddings"
COSTS = "/v1/organization/costs"

# DashScope wire: everything under /api/
DASHSCOPE = "/api/"
MULTIMODAL = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
UPLOADS = "/api/v1/uploads"
TASKS = "/api/v1/tasks"
TASK = "/api/v1/tasks/{task_id}"
TASK_CANCEL = "/api/v1/tasks/{task_id}/cancel"
TASK_RESULT = "/api/v1/tasks/{task_id}/result.txt.gz"

# Operations
HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"

# DashScope's OpenAI-compatible mode: the /v1 routes again under this prefix (asgi/aliases.py)
COMPATIBLE = "/compatible-mode/v1"
COMPATIBLE_ROOT = "/compatible-mode/"
OPENAI_ROOT = "/v1/"

# Served past FastAPI's routing when they need nothing from it (asgi/fastpath.py).
FAST_PATHS = (EMBEDDINGS, MULTIMODAL, TEXT)
# The `route` label of request metrics and the access log; any other path counts as "other".
METRIC_ROUTES = {EMBEDDINGS: "openai", MULTIMODAL: "dashscope_multimodal", TEXT: "dashscope_text", MODELS: "models"}
# Probes and scrapes: neither counted nor logged.
QUIET = frozenset({HEALTHZ, READYZ, METRICS})
# Known prefixes, longest first, and what a caller lost under one of them should use instead (the 404's text).
ROUTES_UNDER = (
    (COMPATIBLE + "/", f"POST {COMPATIBLE}/embeddings, GET {COMPATIBLE}/models, GET {COMPATIBLE}/models/{{id}}"
     " (the same routes as /v1)"),
    (COMPATIBLE_ROOT, f"the OpenAI-compatible mode is served under {COMPATIBLE}: POST {COMPATIBLE}/embeddings"),
    (DASHSCOPE, f"POST {MULTIMODAL}, POST {TEXT}"),
    (OPENAI_ROOT, f"POST {EMBEDDINGS}, GET {MODELS}, GET {MODELS}/{{id}}"),
)  # fmt: skip
