"""GuardedReader: a batch with every row missing is not trusted when the store's sentinels cannot be
read right after it (Redis went away between the read and the check, e.g. while restarting).

Before: such a batch was scored with defaults, unflagged as degraded (the chaos scenario
`redis_restarted_empty` counted 6 such decisions in a full run)."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.events import ObjArray, OnlineFeatures
from workers.features.health import GuardedReader
from workers.settings import Settings


class _Reader:
    def __init__(self, missing: bool) -> None:
        self.missing = missing

    join_keys = ["card_id"]

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        n = len(next(iter(entities.values())))
        return OnlineFeatures(np.zeros((n, 1), np.float32), {}, {"v": np.full(n, self.missing)},
                              {"v": np.zeros(n, bool)})

    def close(self) -> None:
        pass


class _Health:
    def __init__(self, empty: list[str], unknown: bool) -> None:
        self.empty, self.unknown, self.rechecks = empty, unknown, 0

    def recheck(self) -> None:
        self.rechecks += 1

    def empty_views(self) -> list[str]:
        return self.empty

    def close(self) -> None:
        pass


def _fetch(missing: bool, empty: list[str], unknown: bool) -> OnlineFeatures:
    h: Any = _Health(empty, unknown)
    g = GuardedReader(_Reader(missing), h, Settings())
    return g.fetch({"card_id": np.array(["c1", "c2"], dtype=object)})


def test_all_missing_and_the_store_cannot_be_asked_is_degraded() -> None:
    out = _fetch(missing=True, empty=[], unknown=True)
    assert out.degraded and out.unavailable == "unreachable"


def test_all_missing_from_an_empty_store_is_empty_store() -> None:
    out = _fetch(missing=True, empty=["v"], unknown=False)
    assert out.degraded and out.unavailable == "empty_store"


def test_all_missing_with_sentinels_present_is_trusted() -> None:
    out = _fetch(missing=True, empty=[], unknown=False)
    assert not out.degraded


def test_rows_found_are_trusted_even_when_the_check_failed() -> None:
    out = _fetch(missing=False, empty=[], unknown=True)
    assert not out.degraded
