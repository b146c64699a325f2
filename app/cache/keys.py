"""content_key(): the cache key of one item, a pure function, versioned.

The key hashes everything that decides the vector: the identity of what computed it (a deployment's cache
group, or its upstream's kind and address: upstreams/fleet.py), the upstream's model id, the dimension,
every forwarded option (sorted), the item's modality and its identity (text, URL string, or the SHA-256 of
decoded media bytes). Bump KEY_VERSION whenever what goes into the hash changes meaning: old entries then
simply stop matching and age out by their TTL.

The hash is a Redis Cluster hash tag (`NS:v3:{HEX}`; it kept a separate lease key in the vector's slot;
leases now live in the vector's key itself, flights/leases.py, and the tag stays: a key change would miss
every cached vector once). Version 2 introduced the tag; version 3 hashes the deployment's identity (its
cache group, or its upstream's kind, base URL and workspace) where the upstream's configured name was, so
that two servers never serve each other's vectors. Vectors cached under older keys are simply missed
(fetched again once) and expire by their TTL.

A team's cache scope (`cache_scope`: team, or a name; teams.cache_scope_of) is hashed last, and only when
it is not `shared`: the keys of shared requests are exactly those of version 3 before scopes existed (no
bump: a bump makes every cached vector a miss once, paid upstream again). Since the scope is in the key,
everything keyed by it is scoped too: the hot cache, coalescing in the process and the Redis leases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from ..inputs.items import Item
from ..inputs.params import Params
from ..runtime.memo import Memo, MemoGauges

KEY_VERSION = 3
MEMO_KEYS = 8192  # item keys a KeyMemo keeps (then it starts again empty)
MEMO_KEYS_BYTES = 4 << 20  # what they hold in all, at most (docs/operations.md: memory per worker)
MEMO_IDENTITY_BYTES = 512  # items whose identity is longer are hashed every time (a memo of them would be big)
MEMO_KEY_BYTES = 4 << 10  # the most one entry holds, else not kept (an identity of 512, a key of ~50: ~760 B)
KEY_ENTRY_BYTES = 200  # the key's and identity's headers (49, 33), the (maker, identity) tuple, slots (175 measured)


class KeyMaker:
    """Hashes the request-wide part once; each item's key then costs one copy and one update."""

    __slots__ = ("_base", "_by_modality", "_prefix")

    def __init__(
        self, namespace: str, identity: str, upstream_model: str, params: Params, scope: str | None = None
    ) -> None:
        head: list[object] = [KEY_VERSION, identity, upstream_model, params.dimension, sorted(params.options.items())]
        if scope is not None:  # only then: a shared request's key is the one it had before scopes existed
            head.append(scope)
        # Sorted keys: an option's value may be an object (a forwarded DashScope parameter), whose key order
        # does not change the vector.
        self._base = hashlib.blake2b(orjson.dumps(head, option=orjson.OPT_SORT_KEYS), digest_size=20)
        self._by_modality: dict[str, hashlib.blake2b] = {}  # the base with the modality hashed in, per modality
        self._prefix = f"{namespace}:v{KEY_VERSION}:"

    def key(self, item: Item) -> str:
        base = self._by_modality.get(item.modality)
        if base is None:
            base = self._base.copy()
            base.update(item.modality.encode())
            base.update(b"\0")
            self._by_modality[item.modality] = base
        h = base.copy()
        h.update(item.identity)
        return f"{self._prefix}{{{h.hexdigest()}}}"

    def keys(self, items: Sequence[Item]) -> list[str]:
        return [self.key(it) for it in items]


class KeyMemo(Memo[tuple[KeyMaker, bytes], str]):
    """The keys of recent items, per key maker: an item sent again (a cache hit, mostly) costs one dict lookup
    instead of a hash copy, update and hex digest (~0.5 us an item). Correct without invalidation: a key is a
    pure function of its maker and the item's identity. Bounded (runtime/memo.py): MEMO_KEYS keys,
    MEMO_KEYS_BYTES in all (the key, the identity, KEY_ENTRY_BYTES), identities up to MEMO_IDENTITY_BYTES."""

    __slots__ = ()

    def __init__(self, gauges: MemoGauges | None = None) -> None:
        super().__init__(
            max_entries=MEMO_KEYS, max_bytes=MEMO_KEYS_BYTES, max_entry_bytes=MEMO_KEY_BYTES, gauges=gauges
        )

    def keys(self, maker: KeyMaker, items: Sequence[Item]) -> list[str]:
        memo = self.recent
        out = []
        for it in items:
            identity = it.identity
            pair = (maker, identity)
            key = memo.get(pair)
            if key is None:
                key = maker.key(it)
                if len(identity) <= MEMO_IDENTITY_BYTES:
                    self.put(pair, key, len(key) + len(identity) + KEY_ENTRY_BYTES)
                    memo = self.recent  # a new one when the memo started again
            out.append(key)
        return out


def content_key(
    namespace: str, identity: str, upstream_model: str, params: Params, item: Item, scope: str | None = None
) -> str:
    return KeyMaker(namespace, identity, upstream_model, params, scope).key(item)
