"""The cache scope in the content key: absent for shared teams (the keys every vector was cached under
before scopes existed), present otherwise, and distinct per scope."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import orjson

from app.cache.keys import KEY_VERSION, content_key
from app.config.settings import Settings
from app.inputs.items import Item
from app.inputs.params import Params
from app.teams.team import cache_scope_of, teams_from

ROOT = __file__.rsplit("/tests/", 1)[0]


def text(s: str) -> Item:
    return Item("text", {"text": s}, s.encode(), 1)


def test_scope_words() -> None:
    assert cache_scope_of("a", "shared") is None
    assert cache_scope_of("a", "team") == "team:a"
    assert cache_scope_of("a", "research") == "scope:research"
    assert cache_scope_of("research", "team") != cache_scope_of("x", "research")  # a team and a scope of one name


def test_shared_keys_are_the_keys_of_before_scopes() -> None:
    """Computed by an unchanged copy of the version 3 key function: a shared team's keys did not move, so
    nothing cached before is missed (the key version is not bumped)."""
    item = text("hello")
    p = Params(512, True, {"text_type": "query"})
    assert KEY_VERSION == 3
    head = [3, "dashscope", "m", 512, sorted({"text_type": "query"}.items())]
    h = hashlib.blake2b(orjson.dumps(head, option=orjson.OPT_SORT_KEYS), digest_size=20)
    h.update(b"text\0" + item.identity)
    assert content_key("eg", "dashscope", "m", p, item) == f"eg:v3:{{{h.hexdigest()}}}"
    assert content_key("eg", "dashscope", "m", p, item, None) == content_key("eg", "dashscope", "m", p, item)


def test_each_scope_has_its_own_keys() -> None:
    item, p = text("hello"), Params(512, True)
    keys = {content_key("eg", "u", "m", p, item, s) for s in (None, "team:a", "team:b", "scope:a", "scope:b")}
    assert len(keys) == 5
    assert all(k.startswith("eg:v3:{") for k in keys)  # same version, same hash-tag shape (leases share its slot)


def test_teams_carry_their_scope() -> None:
    key = "sha256:" + "ab" * 32
    s = Settings(
        teams={
            "a": {"keys": [key]},
            "b": {"keys": [key.replace("ab", "cd", 1)], "cache_scope": "team"},
            "c": {"keys": [key.replace("ab", "ef", 1)], "cache_scope": "research"},
        }
    )
    teams = teams_from(s.teams)
    assert (teams["a"].scope, teams["b"].scope, teams["c"].scope) == (None, "team:b", "scope:research")


def test_a_bad_scope_name_is_refused_naming_the_field() -> None:
    code = "from app.config.settings import Settings\nSettings(teams={'a': {'cache_scope': 'no spaces'}})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "cache_scope" in done.stderr
