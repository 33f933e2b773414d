"""Noise: the small value corruptions real agency data carries, and the log of every one applied.

Owns: `NoiseLog` (collects each applied noise with the record it hit, turned into truth/noise.parquet and
the `noise` lists of truth/links.parquet once records have their final rows and keys), the per-value
corruptions (name typos, swapped name order, mistyped IDs, date-format variants, partial dates) and
`pick` (which records a noise hits: an independent Bernoulli draw per eligible record, so a rate is a
probability and a test can check it with a binomial tolerance). The rates live in config.NOISE_CATALOGUE.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lienthong.text.legacy_encodings import mojibake

__all__ = ["NoiseLog", "pick", "typo", "swap_name_order", "mistype_id", "date_variant", "nfd", "mojibake"]


def pick(rng: np.random.Generator, eligible: np.ndarray, rate: float) -> np.ndarray:
    """Indices (into the record arrays) hit by a noise: each eligible record independently with `rate`.
    `eligible` is a boolean mask; the draw is made for every record so the stream does not depend on
    which records are eligible."""
    u = rng.random(len(eligible))
    return np.flatnonzero(eligible & (u < rate))


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _strip_marks(ch: str) -> str:
    base = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
    return {"đ": "d", "Đ": "D"}.get(base, base)


_TONE_SWAP = ("\u0300", "\u0301", "\u0303", "\u0309", "\u0323")


def typo(name: str, rng: np.random.Generator) -> str:
    """One slip in a name: an accent dropped or the tone changed, a letter dropped or doubled."""
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    for _ in range(10):
        i = letters[int(rng.integers(len(letters)))]
        ch = name[i]
        op = int(rng.integers(4))
        if op == 0 and _strip_marks(ch) != ch:
            new = name[:i] + _strip_marks(ch) + name[i + 1:]
        elif op == 1 and _strip_marks(ch) != ch:
            # Change the tone mark, keep the other marks (ư, â ...): the commonest Vietnamese typo.
            parts = [c for c in unicodedata.normalize("NFD", ch) if c not in _TONE_SWAP]
            tone = _TONE_SWAP[int(rng.integers(len(_TONE_SWAP)))]
            new = name[:i] + unicodedata.normalize("NFC", "".join(parts) + tone) + name[i + 1:]
        elif op == 2 and len(letters) > 3 and (i + 1 < len(name) and name[i + 1].isalpha()):
            new = name[:i] + name[i + 1:]
        else:
            new = name[:i] + ch + name[i:]
        if new != name:
            return new
    return name + name[-1]


def swap_name_order(name: str) -> str:
    """'Nguyễn Văn An' -> 'An Nguyễn Văn' (given name first, as some systems store it)."""
    parts = name.split(" ")
    return " ".join([parts[-1], *parts[:-1]]) if len(parts) > 1 else name


def mistype_id(value: str, rng: np.random.Generator) -> str:
    """One keying slip in a digit string: a digit changed, dropped, or two neighbours swapped."""
    n = len(value)
    for _ in range(10):
        op = int(rng.integers(3))
        i = int(rng.integers(n))
        if op == 0:
            d = str((int(value[i]) + int(rng.integers(1, 10))) % 10)
            new = value[:i] + d + value[i + 1:]
        elif op == 1:
            new = value[:i] + value[i + 1:]
        else:
            j = min(i + 1, n - 1) if i + 1 < n else i - 1
            a, b = sorted((i, j))
            new = value[:a] + value[b] + value[a] + value[b + 1:]
        if new != value:
            return new
    return value[:-1]


def date_variant(ddmmyyyy: str, rng: np.random.Generator) -> str:
    """'05/03/1985' -> '5/3/1985', '1985-03-05' or '05-03-1985' (never the input)."""
    d, m, y = ddmmyyyy.split("/")
    options = [f"{int(d)}/{int(m)}/{y}", f"{y}-{m}-{d}", f"{d}-{m}-{y}"]
    options = [o for o in options if o != ddmmyyyy]
    return options[int(rng.integers(len(options)))]


@dataclass
class NoiseLog:
    """Every applied noise, keyed by the record's position before sorting; resolved to rows and keys by
    the writer. `sub` is the representative's index inside its enterprise, -1 elsewhere."""

    rows: list[tuple[str, str, int, int, str, str, str | None, str | None]] = field(default_factory=list)
    eligible: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, dataset: str, scope: str, idx: int, sub: int, field_: str, noise: str,
            original: str | None, noisy: str | None) -> None:
        self.rows.append((dataset, scope, int(idx), int(sub), field_, noise, original, noisy))

    def count_eligible(self, dataset: str, noise: str, n: int) -> None:
        """Record how many records a noise could have hit, so its rate can be checked."""
        self.eligible[(dataset, noise)] += int(n)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{dataset: {noise: {"eligible": n, "applied": k}}}, sorted, for config.json."""
        # A noise that touched several fields of one record counts once for that record.
        hits = {(r[0], r[5], r[1], r[2], r[3]) for r in self.rows}
        applied: dict[tuple[str, str], int] = defaultdict(int)
        for h in hits:
            applied[(h[0], h[1])] += 1
        out: dict[str, dict[str, dict[str, int]]] = {}
        for key in sorted(set(applied) | set(self.eligible)):
            out.setdefault(key[0], {})[key[1]] = {"eligible": self.eligible.get(key, 0),
                                                  "applied": applied.get(key, 0)}
        return out

    def for_dataset(self, dataset: str, scope: str = "") -> list[tuple[int, int, str, str, str | None, str | None]]:
        return [(r[2], r[3], r[4], r[5], r[6], r[7]) for r in self.rows if r[0] == dataset and r[1] == scope]


def noise_table(resolved: list[tuple[str, str, int, str, str, str | None, str | None]]) -> pa.Table:
    """(dataset, record_key, source_row, field, noise, original, noisy) rows -> truth/noise.parquet."""
    cols: list[Sequence[Any]] = list(zip(*resolved, strict=True)) if resolved else [[] for _ in range(7)]
    return pa.table({
        "dataset": pa.array(cols[0], pa.string()),
        "record_key": pa.array(cols[1], pa.string()),
        "source_row": pa.array(cols[2], pa.int64()),
        "field": pa.array(cols[3], pa.string()),
        "noise": pa.array(cols[4], pa.string()),
        "original": pa.array(cols[5], pa.string()),
        "noisy": pa.array(cols[6], pa.string()),
    })
