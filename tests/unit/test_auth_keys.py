"""The Authenticator: a key finds its team by its hash; a key that passed is remembered (no SHA-256 on its next
request) and forgotten when the teams and keys are replaced; a key that did not pass is never remembered."""

from __future__ import annotations

import hashlib

import pytest

from app.errors import Unauthorized
from app.limits.window import TeamQuota
from app.teams import keys as keys_module
from app.teams.keys import Authenticator, hash_key, new_key
from app.teams.team import Team
from app.usage.rows import key_id

SEARCH, ADS = Team("search", None, TeamQuota()), Team("ads", None, TeamQuota())


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_key_that_passed_passes_again_without_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    auth = Authenticator({"search": SEARCH}, {"search": [hash_key(key)]}, required=True)
    assert auth.identify(bearer(key), dashscope=False) == (SEARCH, hash_key(key))
    hashed: list[str] = []
    monkeypatch.setattr(keys_module, "hash_key", lambda k: hashed.append(k) or hash_key(k))
    assert auth.identify(bearer(key), dashscope=False) == (SEARCH, hash_key(key))
    assert auth.identify({"x-dashscope-apikey": key}, dashscope=True) == (SEARCH, hash_key(key))
    assert hashed == []


def test_a_key_that_failed_is_checked_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator({"search": SEARCH}, {"search": [hash_key(new_key())]}, required=True)
    hashed: list[str] = []
    monkeypatch.setattr(keys_module, "hash_key", lambda k: hashed.append(k) or hash_key(k))
    wrong = new_key()
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.identify(bearer(wrong), dashscope=False)
    assert hashed == [wrong] * 3
    with pytest.raises(Unauthorized):
        auth.identify({}, dashscope=False)


def test_a_replaced_key_fails_at_once_and_a_moved_one_names_its_new_team() -> None:
    gone, moved = new_key(), new_key()
    auth = Authenticator({"search": SEARCH}, {"search": [hash_key(gone), hash_key(moved)]}, required=True)
    assert auth.identify(bearer(gone), dashscope=False)[0] is SEARCH
    assert auth.identify(bearer(moved), dashscope=False)[0] is SEARCH
    auth.replace({"ads": ADS}, {"ads": [hash_key(moved)]})
    with pytest.raises(Unauthorized):
        auth.identify(bearer(gone), dashscope=False)
    assert auth.identify(bearer(moved), dashscope=False)[0] is ADS


def test_the_keys_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "MAX_VERIFIED", 2)
    keys = [new_key() for _ in range(5)]
    auth = Authenticator({"search": SEARCH}, {"search": [hash_key(k) for k in keys]}, required=True)
    for _ in range(2):
        for key in keys:
            assert auth.identify(bearer(key), dashscope=False) == (SEARCH, hash_key(key))
            assert 0 < len(auth._verified) <= 2


def test_many_wrong_keys_are_never_remembered_and_leave_the_right_ones_passing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "MAX_VERIFIED", 4)
    right = [new_key() for _ in range(3)]
    auth = Authenticator({"search": SEARCH}, {"search": [hash_key(k) for k in right]}, required=True)
    for i in range(2000):  # a scan of guessed keys between the team's own requests
        with pytest.raises(Unauthorized):
            auth.identify(bearer(f"eg-{i:043d}"), dashscope=False)
        key = right[i % 3]
        assert auth.identify(bearer(key), dashscope=False) == (SEARCH, hash_key(key))
        assert set(auth._verified) <= set(right)


def test_auth_off_ignores_keys() -> None:
    assert Authenticator.off().identify(bearer("anything"), dashscope=False) == (None, "")


def test_key_id_is_the_hash_of_the_stored_hash() -> None:
    stored = hash_key(new_key())
    want = "key_" + hashlib.sha256(stored.encode()).hexdigest()[:12]
    assert key_id(stored) == want
    assert key_id(stored) == want  # again, remembered
