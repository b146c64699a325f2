"""API keys: how they are made, stored (a SHA-256 hash only) and checked.

A key is `eg-` + 32 random bytes (url-safe base64): 256 bits, so an unsalted SHA-256 is enough to store it
(nothing to brute-force) and lets a request's key be found with one dict lookup by its hash; the stored
hash is then compared with hmac.compare_digest. Keys arrive as `Authorization: Bearer <key>` on every
route, or as `X-DashScope-ApiKey: <key>` on the DashScope routes. No key is ever logged or echoed.

A key that passed is remembered (in this process's memory only, MAX_VERIFIED of them, all forgotten when the
teams and keys are replaced): the same key on the next request is found by one dict lookup instead of a
SHA-256. A key that did not pass is never remembered, so an unknown key is hashed and checked every time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence

from ..errors import InvalidRequest, Unauthorized
from .team import Team

KEY_PREFIX = "eg-"
MAX_KEY_CHARS = 256
MAX_VERIFIED = 1024  # keys that passed, remembered (then forgotten all at once, and remembered again as they come)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


KEY_HEADERS = {b"authorization": "Authorization", b"x-dashscope-apikey": "X-DashScope-ApiKey"}


def one_key_header_each(raw: Iterable[tuple[bytes, bytes]]) -> None:
    """400 when a key header comes more than once: which one would win is a guess (a proxy that adds its own,
    a client that sends two), so neither does. Checked whether or not auth is required."""
    seen: set[bytes] = set()
    for name, _ in raw:
        if name in KEY_HEADERS:
            if name in seen:
                shown = KEY_HEADERS[name]
                raise InvalidRequest(f"{shown}: sent more than once; send one key", param=shown.lower())
            seen.add(name)


def presented_key(headers: Mapping[str, str], dashscope: bool) -> str | None:
    value = headers.get("authorization")
    if value is not None:
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None
    if dashscope:
        token = headers.get("x-dashscope-apikey", "").strip()
        return token or None
    return None


class Authenticator:
    def __init__(
        self,
        teams: Mapping[str, Team],
        key_hashes: Mapping[str, list[str]],
        *,
        required: bool,
        admins: Sequence[str] = (),
    ) -> None:
        """`admins`: hashes of keys of no team that read every team's usage and costs (and embed nothing)."""
        self.required = required
        self.admins = {h: h for h in admins}
        self.replace(teams, key_hashes)

    def replace(self, teams: Mapping[str, Team], key_hashes: Mapping[str, list[str]]) -> None:
        """New teams and keys at once (teams_reload.py): one assignment, so a request sees old or new."""
        # hash -> (the stored hash, its team): found by the presented key's hash, then compared in constant time
        self._by_hash = {h: (h, teams[name]) for name, hashes in key_hashes.items() for h in hashes}
        self._verified: dict[str, tuple[str, Team]] = {}  # a key that passed -> its entry of _by_hash
        self.teams = dict(teams)

    @classmethod
    def off(cls) -> Authenticator:
        return cls({}, {}, required=False)

    def team(self, name: str) -> Team | None:
        """A team by name (a batch job runs as the team that created it), among the current teams."""
        return next((team for _, team in self._by_hash.values() if team.name == name), None)

    def team_of(self, headers: Mapping[str, str], *, dashscope: bool) -> Team | None:
        """The caller's team; None when auth is off (keys are then ignored). Raises Unauthorized."""
        return self.identify(headers, dashscope=dashscope)[0]

    def identify(self, headers: Mapping[str, str], *, dashscope: bool) -> tuple[Team | None, str]:
        """The caller's team and the stored hash of its key ('' when auth is off). Raises Unauthorized."""
        if not self.required:
            return None, ""
        key = self._presented(headers, dashscope)
        entry = self._verified.get(key)
        if entry is None:
            digest = self._hashed(key)
            entry = self._by_hash.get(digest)
            if entry is None or not hmac.compare_digest(entry[0], digest):
                raise Unauthorized("invalid API key")
            verified = self._verified
            if len(verified) >= MAX_VERIFIED:
                verified.clear()
            verified[key] = entry
        return entry[1], entry[0]

    def reader_of(self, headers: Mapping[str, str]) -> Team | None:
        """Who reads usage: a team (its own rows; all of them when the team is an admin), or None for an
        admin key (and for anyone while auth is off). Raises Unauthorized."""
        if not self.required:
            return None
        digest = self._digest(headers, False)
        admin = self.admins.get(digest)
        if admin is not None and hmac.compare_digest(admin, digest):
            return None
        team, _ = self.identify(headers, dashscope=False)
        return None if team is not None and team.admin else team

    @staticmethod
    def _presented(headers: Mapping[str, str], dashscope: bool) -> str:
        key = presented_key(headers, dashscope)
        if key is None:
            where = "Authorization: Bearer <key>" + (" or X-DashScope-ApiKey: <key>" if dashscope else "")
            raise Unauthorized(f"missing API key: send {where}")
        return key

    @staticmethod
    def _hashed(key: str) -> str:
        """The presented key's hash (a key longer than any valid one is cut: it fails all the same)."""
        return hash_key(key[: MAX_KEY_CHARS + 1])

    @classmethod
    def _digest(cls, headers: Mapping[str, str], dashscope: bool) -> str:
        return cls._hashed(cls._presented(headers, dashscope))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_off_warning(host: str) -> str | None:
    """The warning to print when auth is off on a bind other clients can reach."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: GATEWAY_AUTH=off while listening on {host}: ANY client that can reach this address can use "
        "the gateway, its upstream keys and quotas, with no API key and no team limits. Set GATEWAY_AUTH=required "
        "and configure teams (docs/limits.md), or bind 127.0.0.1."
    )
