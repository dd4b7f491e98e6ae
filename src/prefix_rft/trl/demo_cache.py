"""Token ids of recently used demos, bounded in tokens (a run can draw from tens of thousands of long demos)."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict


class DemoIdsCache:
    """Least-recently-used map from a demo's text to its token ids, holding at most `max_tokens` ids.

    Keys are 16-byte digests of the text and ids are 4-byte arrays, so an entry costs about 4 bytes per token
    instead of the ~36 of a list of Python ints plus the text. The most recent entry is kept even if it alone
    exceeds the bound.
    """

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens, self.tokens = max_tokens, 0
        self._ids: OrderedDict[bytes, array] = OrderedDict()

    @staticmethod
    def _key(demo: str) -> bytes:
        return hashlib.blake2b(demo.encode(), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, demo: str) -> bool:
        return self._key(demo) in self._ids

    def get(self, demo: str) -> list[int] | None:
        """The ids of `demo` (now the most recently used), or None if not held."""
        key = self._key(demo)
        ids = self._ids.get(key)
        if ids is None:
            return None
        self._ids.move_to_end(key)
        return ids.tolist()

    def put(self, demo: str, ids: list[int]) -> None:
        """Hold `ids` for `demo`, evicting the least recently used entries beyond `max_tokens`."""
        key = self._key(demo)
        if key in self._ids:
            self.tokens -= len(self._ids.pop(key))
        self._ids[key] = array("i", ids)
        self.tokens += len(ids)
        while self.tokens > self.max_tokens and len(self._ids) > 1:
            self.tokens -= len(self._ids.popitem(last=False)[1])
