"""Land payloads rendered on the client: what each column is fetched as, and how a batch of fetched rows
becomes the payload column, the same text PostgreSQL's `row_to_json` gives for the row.

Owns: `Column` (a table column and its type, read from `information_schema`), the per-type *kind* that says
how a value is fetched and written into JSON, the select list of the keyset query, and `render_rows`.

Why not `row_to_json` on the server: the database then spends about 2.4 µs of CPU a row building JSON,
against 1.15 µs to send the same columns as text (measured on the sandbox registry, PostgreSQL 18), and
the server's answer to each FETCH is on the walk's critical path (the fetch thread waits for it). Nor a
JSON built by string concatenation in SQL (1.7 µs a row: measured slower end to end). The client turns
text into JSON column by column with Arrow kernels (quote, escape, join: a few hundred ns a row) in the
landing thread, beside the fetch. psycopg2 hands each value over as UTF-8 bytes (no Python string
decoded per value) and Arrow checks the UTF-8 of whole columns.

Kinds, by the column's type (`udt_name`):
- `string` (text, varchar, bpchar): fetched as is, written as a JSON string (escaped like PostgreSQL's
  `escape_json`: `"` and `\\` and control characters; non-ASCII as is);
- `literal` (integers, numeric, floats, boolean): fetched as `::text`, whose output is already the JSON
  number or `true`/`false`; numeric/float NaN and ±Infinity are not JSON numbers and are written quoted,
  as `row_to_json` does;
- `json` (every other type: date, timestamps, arrays, json, uuid, enums, ...): fetched as the server's
  `to_json(value)::text` and written as is, so an unexpected column renders exactly as before.
- `cap_nhat_luc` is fetched as its fixed-format RFC 3339 UTC text and written as a string.

Hand-written because no library renders Arrow columns as one JSON object per row with PostgreSQL's
number texts kept verbatim (pyarrow has no JSON writer; json/orjson would need a Python object per value).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg2 import sql

STRING_TYPES = frozenset({"text", "varchar", "bpchar"})
LITERAL_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8", "bool"})
_NON_FINITE = pa.array(["NaN", "Infinity", "-Infinity"])
_INEXACT_TYPES = frozenset({"numeric", "float4", "float8"})
CURSOR_FIELD = "cap_nhat_luc"
# RFC 3339 in UTC with fixed microseconds (see extract.render_ts): rendered by the server, so equal instants
# give equal text and the text sorts like the instant.
PG_TS_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # information_schema.columns.udt_name

    @property
    def kind(self) -> str:
        if self.name == CURSOR_FIELD or self.type in STRING_TYPES:
            return "string"
        return "literal" if self.type in LITERAL_TYPES else "json"


def select_list(columns: Sequence[Column], alias: str = "t") -> sql.Composed:
    """The keyset query's columns, one text value per table column, in the table's order."""
    exprs = []
    for c in columns:
        ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.name))
        if c.name == CURSOR_FIELD:
            expr = sql.SQL("to_char({} AT TIME ZONE 'UTC', {})").format(ref, sql.Literal(PG_TS_FORMAT))
        elif c.kind == "string":
            expr = ref
        elif c.kind == "literal":
            expr = sql.SQL("{}::text").format(ref)
        else:
            expr = sql.SQL("to_json({})::text").format(ref)
        exprs.append(expr)
    return sql.SQL(", ").join(exprs)


def render_rows(columns: Sequence[Column], rows: Sequence[tuple[Any, ...]]) -> tuple[pa.StructArray, pa.Array]:
    """Fetched rows (UTF-8 text per column, as bytes or str, as `select_list` asks) -> (the columns as one
    Arrow struct array of strings, the payload per row). Arrow turns the tuples into columns in one call
    and checks the UTF-8 of whole columns when it casts them to strings (psycopg2 hands bytes over, see
    extract.row_batches); the rest is vectorised: the payload is one element-wise join of the columns and
    the literal text between them (`{"id":`, `,"ma_xa":"`, ...). A string column without nulls has its
    quotes in that literal text; only a column with nulls needs a pass of its own (a null is `null`)."""
    fetched = pa.array(rows, type=pa.struct([(c.name, pa.binary()) for c in columns]))
    fetched = fetched.cast(pa.struct([(c.name, pa.string()) for c in columns]))
    pieces: list[Any] = []
    text = "{"
    for i, c in enumerate(columns):
        values = fetched.field(i)
        text += ("" if i == 0 else ",") + json.dumps(c.name, ensure_ascii=False) + ":"
        if c.kind == "string":
            values = _escaped(values)
            if values.null_count:
                values = pc.fill_null(_quoted(values), "null")
            else:
                text += '"'
                pieces += [text, values]
                text = '"'
                continue
        else:
            if c.type in _INEXACT_TYPES:
                non_finite = pc.is_in(values, value_set=_NON_FINITE)
                if pc.any(non_finite).as_py():
                    values = pc.if_else(non_finite, _quoted(values), values)
            if values.null_count:
                values = pc.fill_null(values, "null")
        pieces += [text, values]
        text = ""
    pieces.append(text + "}")
    return fetched, pc.binary_join_element_wise(*pieces, "")


def _quoted(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', values, '"', "")


def _escaped(values: pa.Array) -> pa.Array:
    """The values' text as the inside of JSON strings. Whole column checked at once (the usual column has
    nothing to escape and is returned as is)."""
    data = values.buffers()[2]
    if data is None:
        return values
    raw = np.frombuffer(data, dtype=np.uint8)
    if not ((raw < 0x20) | (raw == 0x22) | (raw == 0x5C)).any():  # control characters, " and \ (RFC 8259 §7)
        return values
    # rare: the standard library escapes these values exactly as PostgreSQL's escape_json does
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False)[1:-1] for v in values.to_pylist()],
                    type=pa.string())
