"""Apply the standardization library to a dataset's extracted source columns, as its contract says.

A contract field asks for it with the customProperty `standardize`:

| value | does | repaired (counted, value changed) | quarantined | finding (kept, reported) |
|---|---|---|---|---|
| `name` | NFC, TCVN3/VNI repair, whitespace, ALL CAPS → title case | each repair code | — | — |
| `text` | the same without title case (company names, addresses) | each repair code | — | — |
| `date` | dates in any known form → the form the field's `parse` expects | `date_format_variant` | (unparseable: by the typing step) | — |
| `enterprise_code` | python-stdnum check | — | `invalid_check_digit` | — |
| `personal_id` | structure, century/sex and year digits vs the record | — | — | `id_birth_mismatch`, `legacy_9_digit`, `unknown_province_prefix`, `bad_format`, `missing` |
| `commune_2025` | old commune code → 2025 code (field `derivedFrom` the original) | `commune_code_outdated` | — | `commune_split_ambiguous`, `commune_code_ambiguous`, `unknown_commune_code` |
| `land_use` | Circular 08/2024 catalogue | — | — | `unknown_land_use_code`, `land_use_code_outdated` |

Helpers name their inputs with customProperties: `birthFrom`, `sexFrom`, `districtFrom`, `provinceFrom`
(contract field names), `onlyWhere` (`field=VALUE`: apply only to those rows, e.g. person holders).
Everything runs once per distinct value (see lienthong.standardize.common).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from lienthong.contracts import Contract, Field

QUARANTINE_CODES = {"enterprise_code": {"invalid_check_digit"}}
REPAIR_CODES = {
    "name": None,  # every issue code of these is a repair
    "text": None,
    "date": {"date_format_variant"},
    "commune_2025": {"commune_code_outdated"},
}
_DATE_FORM = {"partial_iso_date": "yyyy-mm-dd", "dmy_date": "dd/mm/yyyy", None: "yyyy-mm-dd"}
_RENDER = {"yyyy-mm-dd": "%Y-%m-%d", "dd/mm/yyyy": "%d/%m/%Y"}


@dataclass
class Applied:
    table: pa.Table  # the src_* columns, standardized
    repairs: pa.Array  # list<string> per row: "field:code"
    findings: pa.Array
    reasons: pa.Array  # list<string> per row, in staging's 'kind|rule|text' form
    repair_counts: Counter = field(default_factory=Counter)
    finding_counts: Counter = field(default_factory=Counter)


def _src(table: pa.Table, name: str | None) -> pa.Array | None:
    if not name or f"src_{name}" not in table.column_names:
        return None
    return table.column(f"src_{name}").combine_chunks()


def _only_where(table: pa.Table, f: Field) -> pa.Array | None:
    cond = f.custom.get("onlyWhere")
    if not cond:
        return None
    col, value = cond.split("=", 1)
    return pc.fill_null(pc.equal(_src(table, col), value), False)


def apply_standardization(contract: Contract, table: pa.Table) -> Applied:
    """Standardize the `src_*` columns of `table` (one row per record) in place of the source text."""
    from lienthong.standardize import dates, identifiers, land_use, text, units

    n = table.num_rows
    repairs: list[list[str]] = [[] for _ in range(n)]
    findings: list[list[str]] = [[] for _ in range(n)]
    reasons: list[list[str]] = [[] for _ in range(n)]
    rep_c: Counter = Counter()
    find_c: Counter = Counter()
    for f in contract.fields:
        kind = f.custom.get("standardize")
        if not kind or f"src_{f.name}" not in table.column_names:
            continue
        src = _src(table, f.name)
        new_values = None
        if kind in ("name", "text"):
            res = text.standardize_name(src) if kind == "name" else _text(text, src)
            new_values = res.values
        elif kind == "date":
            form = _DATE_FORM.get(f.parse, "yyyy-mm-dd")
            res = dates.parse_dates(src, forms=form)
            # Re-render every recognised date in the form the typing step expects; partial dates keep theirs.
            rendered = pc.strftime(pc.cast(res.values, pa.timestamp("s")), format=_RENDER[form])
            new_values = pc.if_else(pc.fill_null(res.repaired, False), rendered, src)
        elif kind == "enterprise_code":
            res = identifiers.enterprise_code(src)
        elif kind == "personal_id":
            birth = _src(table, f.custom.get("birthFrom"))
            birth_field = next((x for x in contract.fields if x.name == f.custom.get("birthFrom")), None)
            if birth is not None and birth_field is not None and birth_field.logical_type == "integer":
                birth = pc.cast(pc.if_else(pc.fill_null(pc.utf8_is_digit(birth), False), birth, None), pa.int64())
            res = identifiers.personal_id(src, birth, _src(table, f.custom.get("sexFrom")))
        elif kind == "commune_2025":
            res = units.commune_to_2025(src, _src(table, f.custom.get("districtFrom")), _src(table, f.custom.get("provinceFrom")))
            new_values = res.values
        elif kind == "land_use":
            res = land_use.land_use(src)
            new_values = res.values
            if f"src_{f.name}_catalogue_version" in table.column_names:
                table = table.set_column(table.column_names.index(f"src_{f.name}_catalogue_version"),
                                         f"src_{f.name}_catalogue_version", res.version)
        else:
            raise ValueError(f"contract {contract.name}, field {f.name}: unknown standardize {kind!r}")
        mask = _only_where(table, f)
        if mask is not None and new_values is not None:
            new_values = pc.if_else(mask, new_values, src)
        if new_values is not None:
            table = table.set_column(table.column_names.index(f"src_{f.name}"), f"src_{f.name}", new_values.cast(pa.string()))
        repair_codes = REPAIR_CODES.get(kind, set())
        quarantine = QUARANTINE_CODES.get(kind, set())
        # Only the rows with an issue are visited (a few per cent): no Python loop over every row.
        flagged = pc.is_valid(res.issue)
        if mask is not None:
            flagged = pc.and_(flagged, mask)
        rows = pc.indices_nonzero(flagged)
        for i, issue in zip(rows.to_pylist(), pc.take(res.issue, rows).to_pylist(), strict=True):
            for code in issue.split(";"):
                tag = f"{f.name}:{code}"
                if code in quarantine:
                    reasons[i].append(f"invalid|{f.name}:{code}|{f.name} ({f.source_field or f.name}) {code.replace('_', ' ')}")
                elif repair_codes is None or code in repair_codes:
                    repairs[i].append(tag)
                    rep_c[tag] += 1
                else:
                    findings[i].append(tag)
                    find_c[tag] += 1
    lst = pa.list_(pa.string())
    return Applied(table, pa.array(repairs, lst), pa.array(findings, lst), pa.array(reasons, lst), rep_c, find_c)


def _text(text_mod, src: pa.Array):
    """Like standardize_name but leaves capitals alone (company names, addresses, titles)."""
    step1 = text_mod.nfc(src)
    step2 = text_mod.repair_mojibake(step1.values)
    step3 = text_mod.clean_case_and_space(step2.values, title_case_capitals=False)
    from lienthong.standardize.common import Standardized, join_issues

    return Standardized(step3.values, None, join_issues(step1.issue, step2.issue, step3.issue))
