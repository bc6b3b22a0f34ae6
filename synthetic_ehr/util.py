"""Small shared helpers: per-patient random streams, dates as ordinals, weighted choice."""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate

DAYS_PER_YEAR = 365.25


def stream(seed: int, *keys: int | str) -> random.Random:
    """An independent random stream for (seed, *keys), e.g. (seed, practice, patient).

    Deriving every patient's stream from its own key (not from a shared generator) is what makes
    the output identical whatever the chunking or number of workers.
    """
    material = "/".join(str(k) for k in (seed, *keys)).encode()
    digest = hashlib.blake2b(material, digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


@lru_cache(maxsize=65536)
def iso(ordinal: int) -> str:
    """ISO date for a proleptic Gregorian ordinal (cached: dates repeat a lot)."""
    return dt.date.fromordinal(ordinal).isoformat()


@lru_cache(maxsize=65536)
def uk_date(ordinal: int) -> str:
    """dd/mm/yyyy, as UK GP system reports print dates."""
    d = dt.date.fromordinal(ordinal)
    return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"


def years(n: float) -> int:
    """Whole days in n years."""
    return int(round(n * DAYS_PER_YEAR))


def age_on(birth: int, on: int) -> int:
    """Completed years of age on a day (both ordinals)."""
    b = dt.date.fromordinal(birth)
    d = dt.date.fromordinal(on)
    return d.year - b.year - ((d.month, d.day) < (b.month, b.day))


class Weighted:
    """Fast repeated weighted choice over a fixed list (cumulative weights + bisect)."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, items: Sequence, weights: Sequence[float]) -> None:
        pairs = [(i, w) for i, w in zip(items, weights, strict=True) if w > 0]
        if not pairs:
            raise ValueError("no item has positive weight")
        self.items = [i for i, _ in pairs]
        self.cum = list(accumulate(w for _, w in pairs))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


_BAND_TABLES: dict[tuple[str, ...], list[str]] = {}
_MAX_AGE = 130


def band_of(age: int, bands: Iterable[str]) -> str:
    """The 'lo-hi' band label containing age (bands like '16-34'); the last band above all,
    the first below all. Tables are built once per set of bands (this is on the hot path)."""
    key = tuple(bands)
    table = _BAND_TABLES.get(key)
    if table is None:
        parsed = [(int(b.split("-")[0]), int(b.split("-")[1]), b) for b in key]
        table = []
        for a in range(_MAX_AGE + 1):
            label = next((b for lo, hi, b in parsed if lo <= a <= hi), None)
            if label is None:
                label = key[-1] if a > parsed[-1][1] else key[0]
            table.append(label)
        _BAND_TABLES[key] = table
    return table[min(max(age, 0), _MAX_AGE)]


def poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw (Knuth); lam is small here."""
    if lam <= 0:
        return 0
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
