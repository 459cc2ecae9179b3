"""BlockSpec: a frozen, hashable description of one block of a network.

A spec is a family name plus a sorted tuple of (name, value) parameters. Its ``block_id`` is
a hash of the canonical JSON form, so the same spec gives the same id on every machine and in
every run (a dataset row, a predictor and a cache entry all refer to blocks by this id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

Scalar = int | float | str | bool
#: the pool kinds the block builder knows (``blocks.Pool``); every other kind is refused
POOL_KINDS = ("max", "avg", "global")


@dataclass(frozen=True)
class BlockSpec:
    family: str
    params: tuple[tuple[str, Scalar], ...]

    @classmethod
    def make(cls, family: str, **params: Scalar) -> "BlockSpec":
        for k, v in params.items():
            if not isinstance(v, (int, float, str, bool)):
                raise TypeError(f"spec parameter {k!r} must be a scalar, got {type(v).__name__}")
        return cls(family, tuple(sorted(params.items())))

    def __getitem__(self, key: str) -> Scalar:
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dict(self.params)}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Stable across runs and machines."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> "BlockSpec":
        d = dict(json.loads(text) if isinstance(text, str) else text)
        family = d.pop("family")
        return cls.make(family, **d)

    @property
    def block_id(self) -> str:
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    def short(self) -> str:
        return self.family + "(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"
