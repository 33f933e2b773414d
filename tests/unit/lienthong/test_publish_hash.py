"""The published content fingerprint: order-independent, changed by any value, tied to the contract version."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from lienthong.contracts import contract
from lienthong.publish import content_hash


def _rows(names: list[str]) -> pa.Table:
    n = len(names)
    return pa.table({"rule": names, "n": list(range(n)), "nested": [[{"k": v}] for v in names]})


def test_fingerprint_ignores_order_but_not_values_or_contract_version():
    c = contract("quality_summary")
    t = _rows(["a", "b", "c"])
    same = content_hash(t, c)
    assert content_hash(t.take([2, 0, 1]), c) == same
    assert content_hash(_rows(["a", "b", "d"]), c) != same
    assert content_hash(_rows(["a", "b"]), c) != same
    # a duplicated row is a change too (sums and counts see it; a plain XOR would not)
    assert content_hash(pa.concat_tables([t, t.slice(0, 1)]), c) != same
    newer = dataclasses.replace(c, version="9.9.9")
    assert content_hash(t, newer) != same
