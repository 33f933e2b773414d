"""What a connector expects of a source's records, taken from the staged contract, and the checks on it.

- A record missing its key or a required field, or whose cursor cannot be parsed, is landed unchanged and
  flagged (`_issues` in raw) with a reason naming the record and the field; the run continues and staging
  quarantines it.
- A field the contract does not know is landed (the payload keeps everything) and logged once per run as
  schema drift.
- A required field absent from every record of a page means the source changed its schema: the run fails
  with a message naming the field, the page and the source, and the watermark stays where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.base.errors import SchemaDriftError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSchema:
    known_fields: frozenset[str]
    required_fields: frozenset[str]

    @classmethod
    def from_contract(cls, *contracts: Any) -> SourceSchema:
        """Top-level source field names from the contracts' `sourceField` paths (and their key/cursor); give
        every contract staged from the same source records (e.g. enterprise and legal_representative)."""
        known: set[str] = set()
        required: set[str] = set()
        for contract in contracts:
            one = cls._one(contract)
            known |= one.known_fields
            required |= one.required_fields
        return cls(frozenset(known), frozenset(required))

    @classmethod
    def _one(cls, contract: Any) -> SourceSchema:
        known: set[str] = set()
        required: set[str] = set()
        if contract.custom.get("unnest"):
            known.add(contract.custom["unnest"])
        for f in contract.fields:
            if not f.source_field:
                continue
            top = f.source_field.split(".", 1)[0]
            known.add(top)
            if f.required:
                required.add(top)
        for extra in ("sourceKey", "sourceUpdatedAt"):
            if contract.custom.get(extra):
                known.add(contract.custom[extra])
                required.add(contract.custom[extra])
        return cls(frozenset(known), frozenset(required))


@dataclass
class SchemaWatch:
    """Checks pages of one run against a SourceSchema; remembers what drift it already reported."""

    schema: SourceSchema | None
    source: str
    key_field: str
    cursor_field: str
    parse_cursor: Callable[[str], datetime]
    new_fields: dict[str, str] = field(default_factory=dict)  # field -> first record that had it
    flagged: int = 0
    _required: list[str] | None = field(default=None, init=False, repr=False)
    _accepted: set[str] = field(default_factory=set, init=False, repr=False)

    def check_page(self, items: list[dict[str, Any]], page: int) -> list[list[str]]:
        """Per item, the reasons it cannot be used as is (empty list when fine). Raises SchemaDriftError when
        a required field vanished from the whole page."""
        if self.schema and items:
            for name in sorted(self.schema.required_fields):
                if all(isinstance(it, dict) and name not in it for it in items):
                    raise SchemaDriftError(
                        f"{self.source}: required field {name!r} is absent from all {len(items)} records of page {page}; "
                        "the source's schema changed — update the contract before ingesting again"
                    )
        issues: list[list[str]] = []
        for i, item in enumerate(items):
            issues.append(self._item_issues(item, page, i))
        return issues

    def _item_issues(self, item: Any, page: int, index: int) -> list[str]:
        # Runs for every record: the usual record has nothing to say, so the label is only made for a
        # finding, and the field names are compared with the set of names already accepted (the contract's,
        # attributes kept beside them, drift already reported) in one set operation.
        if not isinstance(item, dict):
            return [f"record #{page}.{index}: not an object"]
        key = item.get(self.key_field)
        out = []
        if key in (None, ""):
            out.append(f"missing key field {self.key_field}")
        if self.schema:
            if self._required is None:  # once per run, not per record
                self._required = sorted(self.schema.required_fields - {self.key_field})
                self._accepted = set(self.schema.known_fields)
            for name in self._required:
                if item.get(name) in (None, ""):
                    out.append(f"required field {name} is missing")
            unseen = item.keys() - self._accepted
            if unseen:
                self._note_fields(unseen, _label(key, page, index))
        cursor = item.get(self.cursor_field)
        if cursor not in (None, ""):
            try:
                self.parse_cursor(str(cursor))
            except ValueError:
                out.append(f"field {self.cursor_field} cannot be parsed: {str(cursor)[:40]!r}")
        if out:
            self.flagged += 1
            label = _label(key, page, index)
            out = [f"{label}: {reason}" for reason in out]
        return out

    def _note_fields(self, names: set[str], label: str) -> None:
        known = self.schema.known_fields if self.schema else frozenset()
        for name in sorted(names):
            self._accepted.add(name)
            # An XML attribute kept beside its element ("VonDieuLe@donVi") belongs to a known field.
            if name.split("@", 1)[0] in known:
                continue
            if name not in self.new_fields:
                self.new_fields[name] = label
                log.warning("%s: schema drift: new field %r (first seen in %s) is landed as is", self.source, name, label)


def _label(key: Any, page: int, index: int) -> str:
    return f"record {key}" if key not in (None, "") else f"record #{page}.{index}"
