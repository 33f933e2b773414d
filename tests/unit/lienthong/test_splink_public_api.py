"""Splink is used through its public API only: no module that uses Splink reaches into a private attribute
(`linker._settings_obj`, `chart._x`) or imports from `splink.internals`, which change between releases
without notice."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECKED = ("lienthong", "connectors", "benchmarks")


def private_splink_uses(source: str) -> list[str]:
    """`line: expression` for each private attribute read or written, and each `splink.internals` import,
    in a module that imports Splink (attributes of `self` / `cls`, and dunders, are the module's own)."""
    tree = ast.parse(source)
    imports_splink = False
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name == "splink" or name.startswith("splink."):
                    imports_splink = True
                if name.startswith("splink.internals") or (name == "splink" and isinstance(node, ast.ImportFrom)
                                                           and any(a.name == "internals" for a in node.names)):
                    found.append(f"{node.lineno}: import {name}")
    if not imports_splink:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checker_flags_private_attribute_writes_reads_and_internal_imports():
    snippet = (
        "from splink import Linker\n"
        "from splink.internals.settings import Settings\n"
        "linker._settings_obj._probability_two_random_records_match = 0.1\n"
        "x = chart.raw_records, self._cache, obj.__class__\n"
        "y = linker._intermediate_table_cache\n"
    )
    found = private_splink_uses(snippet)
    assert "2: import splink.internals.settings" in found
    assert any(f.startswith("3: linker._settings_obj._probability") for f in found)
    assert "5: linker._intermediate_table_cache" in found
    assert not any("raw_records" in f or "self._cache" in f or "__class__" in f for f in found)
    assert private_splink_uses("import duckdb\ncon._private = 1\n") == []  # not a Splink module


def test_no_module_touches_a_private_splink_attribute():
    paths = sorted(p for d in CHECKED for p in (ROOT / d).rglob("*.py"))
    assert any(p.name == "people.py" for p in paths)
    found = {str(p.relative_to(ROOT)): uses for p in paths if (uses := private_splink_uses(p.read_text(encoding="utf-8")))}
    assert not found, f"Splink's private API used: {found}"
