"""The distinct-value machinery every standardization function relies on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lienthong.standardize.common import (
    Standardized,
    distinct_rows,
    issues_from_flags,
    join_issues,
    map_distinct,
)


def test_map_distinct_calls_once_per_distinct_value_and_maps_back_in_row_order():
    calls = []
    values = pa.chunked_array([["b", "a", None], ["b", "c"]])
    (out,) = map_distinct(values, lambda v: calls.append(v) or (v.upper(),), (pa.string(),))
    assert out.to_pylist() == ["B", "A", None, "B", "C"]
    assert sorted(calls) == ["a", "b", "c"]


def test_map_distinct_gives_null_rows_their_own_answer():
    (out,) = map_distinct(["x", None], lambda v: (1,), (pa.int64(),), null_result=(0,))
    assert out.to_pylist() == [1, 0]


def test_distinct_rows_treats_absent_columns_and_nulls_as_part_of_the_key():
    combos, idx = distinct_rows(["a", "a", "a", None], None, ["1", "2", "1", None])
    assert len(combos) == 3
    assert [combos[i] for i in idx.to_pylist()] == [("a", None, "1"), ("a", None, "2"), ("a", None, "1"),
                                                    (None, None, None)]


def test_issue_flags_join_in_order_and_leave_clean_rows_null():
    issue = issues_from_flags([("one", np.array([1, 0, 1, 0])), ("two", np.array([1, 1, 0, 0]))], 4)
    assert issue.to_pylist() == ["one;two", "two", "one", None]
    assert join_issues(pa.array(["a", None, None]), pa.array(["b", "c", None])).to_pylist() == ["a;b", "c", None]


def test_issue_counts_count_each_code_of_a_row():
    r = Standardized(pa.array([1, 2, 3]), None, pa.array(["x;y", "x", None]))
    assert r.issue_counts() == {"x": 2, "y": 1}
