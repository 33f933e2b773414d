"""The run ledger has one owner: no module but `lienthong.runs` writes or reads its tables in SQL, and the
connectors reach the warehouse only through the store their caller hands in. Read from the source (AST: string
literals and f-strings), no database."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lienthong.runs import LEDGER_TABLES

REPO = Path(__file__).resolve().parents[3]
SCANNED = ("lienthong", "connectors", "dags", "plugins", "devstack", "benchmarks")
OWNER = REPO / "lienthong" / "runs"

# A ledger table in a clause that reads or writes it: FROM / JOIN / INTO / UPDATE / TABLE (CREATE, ALTER, DROP,
# LOCK, TRUNCATE ... TABLE [IF [NOT] EXISTS]) / COPY / TRUNCATE, bare or schema-qualified (literally, or through
# an f-string placeholder such as `{OPS_SCHEMA}.`).
_TABLES = "|".join(sorted(LEDGER_TABLES, key=len, reverse=True))
_CLAUSE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|COPY|TRUNCATE|TABLE(?:\s+IF(?:\s+NOT)?\s+EXISTS)?|ON)\s+"
    r"(?:ONLY\s+)?(?:\"?lienthong_ops\"?\.|\{[^{}]+\}\.)?\"?(" + _TABLES + r")\b(?![.(])",
)  # keywords in capitals, as this code base writes SQL: prose ("from the publication") is not SQL


def _texts(tree: ast.AST):
    """Every string literal and f-string (placeholders kept as `{expr}`) with its line."""
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                    inside_fstring.add(id(value))
                elif isinstance(value, ast.FormattedValue):
                    parts.append("{" + ast.unparse(value.value) + "}")
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
            yield node.lineno, node.value


def ledger_sql(text: str) -> list[str]:
    return [m.group(0) for m in _CLAUSE.finditer(text)]


def _sources():
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if OWNER not in path.parents:
                yield path


@pytest.mark.parametrize("sql", [
    "SELECT run_id FROM lienthong_ops.stage_run ORDER BY 1",
    "SELECT * FROM {OPS_SCHEMA}.quality_result r JOIN {OPS_SCHEMA}.quality_run q USING (run_id)",
    "INSERT INTO {_S}.watermark (source) VALUES (%s)",
    "UPDATE lienthong_ops.publication SET status = 'expired'",
    "DELETE FROM ingest_run WHERE run_id = %s",
    "CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.audit_report (report_id text)",
    "ALTER TABLE lienthong_ops.stage_run ADD COLUMN IF NOT EXISTS started_at timestamptz",
    'LOCK TABLE "lienthong_ops"."reconcile_run" IN EXCLUSIVE MODE',
])
def test_the_scan_recognises_sql_on_a_ledger_table(sql):
    assert ledger_sql(sql), sql


@pytest.mark.parametrize("text", [
    "plus one row in `lienthong_ops.audit_report`",  # prose
    "the publication round of the stage_run",
    "SELECT to_regclass('lienthong_ops.audit_report')",  # whether it exists: neither a read nor a write
    "SELECT * FROM lienthong_ops.finding JOIN lienthong_ops.finding_event USING (finding_id)",  # findings' own
    "SELECT * FROM read_parquet('raw/*.parquet')",
])
def test_the_scan_ignores_what_is_not_sql_on_a_ledger_table(text):
    assert not ledger_sql(text), text


def test_no_module_but_the_ledger_writes_or_reads_its_tables():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, text in _texts(tree):
            offenders += [f"{path.relative_to(REPO)}:{line}: {hit}" for hit in ledger_sql(text)]
    assert offenders == [], "SQL on ledger tables outside lienthong/runs:\n" + "\n".join(offenders)


def test_connectors_do_not_import_the_warehouse():
    imports = []
    for path in sorted((REPO / "connectors").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            imports += [f"{path.relative_to(REPO)}: {n}" for n in names
                        if n == "lienthong.db" or n.startswith("lienthong.runs")]
    assert imports == [], "connectors get their store from the caller:\n" + "\n".join(imports)
