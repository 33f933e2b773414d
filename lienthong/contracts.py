"""Data contracts: load and validate the YAML contracts in schemas/, and derive from them what others need.

A contract is the single source of a dataset's fields. From it come the Arrow schema (zones on disk), the
PostgreSQL DDL (published tables), the standardization plan (source field -> typed column) and the quality
rules (Great Expectations suites, the quality gate). Nothing else restates a field list by hand.

The YAML follows the Open Data Contract Standard v3.1 shape, restricted to the subset in
`contract.schema.json`; a bad contract raises `ContractError` naming the file, the path inside it and
what is wrong. A staged contract (customProperty zone: staged) with no quality rule is refused: its suite
would be empty and the quality gate would pass anything.

Quality rules beyond ODCS's library metrics (lienthong.quality maps each to a GX expectation):
`futureValues` (a date, or an integer year, after the run's date), a schema-level `duplicateValues` with
`arguments.properties` (a key over several columns), and `arguments.onlyWhere: column=VALUE` (the rule
applies to those rows only; warning rules, since staging pre-checks critical ones without the condition).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from lienthong.yamltext import safe_load

CLASSIFICATIONS = ("public", "internal", "personal", "sensitive")
_CONTRACT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$", re.IGNORECASE)


class ContractError(ValueError):
    """A contract file is not valid: names the file, the path inside it and the problem."""

    def __init__(self, file: str | Path, path: str, problem: str):
        self.file, self.path, self.problem = str(file), path, problem
        super().__init__(f"{file}: at {path}: {problem}")


@dataclass(frozen=True)
class QualityRule:
    """One quality rule: a metric on a column (or a custom dataset-level check) with its tolerance."""

    name: str
    severity: str  # critical | warning
    column: str | None = None
    metric: str | None = None  # nullValues | duplicateValues | invalidValues | futureValues | rowCount
    implementation: str | None = None  # custom check name
    arguments: dict[str, Any] = field(default_factory=dict)
    max_fraction: float | None = None  # tolerance as a fraction of rows
    max_rows: int | None = None  # tolerance as a count of rows
    description: str = ""

    @property
    def columns(self) -> list[str]:
        """Every column the rule reads: its own, a schema-level key's `properties`, an `onlyWhere` column."""
        cols = [self.column] if self.column else []
        cols += [c for c in self.arguments.get("properties") or [] if c not in cols]
        if (where := self.only_where) and where[0] not in cols:
            cols.append(where[0])
        return cols

    @property
    def only_where(self) -> tuple[str, str] | None:
        """(column, value) when the rule applies only to rows whose column equals value (`onlyWhere`)."""
        raw = self.arguments.get("onlyWhere")
        if not raw:
            return None
        col, value = str(raw).split("=", 1)
        return col, value

    @property
    def tolerance_text(self) -> str:
        if self.max_fraction is not None:
            return f"<= {self.max_fraction:.2%} of rows"
        return f"<= {self.max_rows or 0} rows"

    def allows(self, failing: int, total: int) -> bool:
        """Whether `failing` rows out of `total` stay within this rule's tolerance."""
        if self.max_fraction is not None:
            return total == 0 or failing / total <= self.max_fraction + 1e-12
        return failing <= (self.max_rows or 0)


@dataclass(frozen=True)
class Field:
    name: str
    logical_type: str
    required: bool = False
    primary_key: bool = False
    primary_key_position: int | None = None
    unique: bool = False
    classification: str = "internal"
    description: str = ""
    physical_type: str | None = None
    source_field: str | None = None
    parse: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    children: tuple[Field, ...] = ()  # struct members (object) or list item members (array of object)
    item_type: str | None = None  # for arrays
    quality: tuple[QualityRule, ...] = ()

    @property
    def is_personal(self) -> bool:
        return self.classification in ("personal", "sensitive")

    def arrow_type(self) -> pa.DataType:
        if self.logical_type == "array":
            if self.item_type == "object":
                return pa.list_(pa.struct([pa.field(c.name, c.arrow_type(), not c.required) for c in self.children]))
            return pa.list_(_scalar_arrow(self.item_type or "string", None))
        if self.logical_type == "object":
            return pa.struct([pa.field(c.name, c.arrow_type(), not c.required) for c in self.children])
        return _scalar_arrow(self.logical_type, self.physical_type)

    def postgres_type(self) -> str:
        if self.logical_type in ("array", "object"):
            return "jsonb"
        if self.physical_type and (decimal := _DECIMAL.match(self.physical_type)):
            p, s = decimal.groups()
            return f"numeric({p},{s})"
        return {
            "string": "text",
            "integer": "bigint",
            "number": "double precision",
            "boolean": "boolean",
            "date": "date",
            "timestamp": "timestamptz",
        }[self.logical_type]


def _scalar_arrow(logical: str, physical: str | None) -> pa.DataType:
    if physical and (decimal := _DECIMAL.match(physical)):
        p, s = decimal.groups()
        return pa.decimal128(int(p), int(s))
    return {
        "string": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[logical]


@dataclass(frozen=True)
class Contract:
    id: str
    name: str
    version: str
    status: str
    domain: str
    purpose: str
    owner_agency: str
    custom: dict[str, Any]
    freshness: tuple[float, str] | None
    object_name: str
    fields: tuple[Field, ...]
    dataset_rules: tuple[QualityRule, ...]
    path: Path

    @property
    def primary_key(self) -> list[str]:
        keys = [f for f in self.fields if f.primary_key]
        return [f.name for f in sorted(keys, key=lambda f: f.primary_key_position or 0)]

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"contract {self.name} has no field {name!r}")

    @property
    def rules(self) -> list[QualityRule]:
        """Every quality rule: per column, then dataset level."""
        return [r for f in self.fields for r in f.quality] + list(self.dataset_rules)

    def arrow_schema(self, extra: list[pa.Field] | None = None) -> pa.Schema:
        """The Arrow schema of this dataset (plus `extra` platform columns), contract id in the metadata."""
        fields = [pa.field(f.name, f.arrow_type(), nullable=not f.required) for f in self.fields]
        meta = {b"contract_id": self.id.encode(), b"contract_version": self.version.encode()}
        return pa.schema(fields + list(extra or []), metadata=meta)

    def postgres_ddl(
        self, table: str, schema: str = "public", extra: dict[str, str] | None = None, primary_key: bool = True
    ) -> str:
        """CREATE TABLE for this dataset, comments carrying descriptions and classifications."""
        q = _quote_ident
        cols = [f"  {q(f.name)} {f.postgres_type()}{' NOT NULL' if f.required else ''}" for f in self.fields]
        cols += [f"  {q(name)} {typ}" for name, typ in (extra or {}).items()]
        if self.primary_key and primary_key:
            cols.append(f"  PRIMARY KEY ({', '.join(q(k) for k in self.primary_key)})")
        full = f"{q(schema)}.{q(table)}"
        stmts = [f"CREATE TABLE {full} (\n" + ",\n".join(cols) + "\n)"]
        stmts.append(f"COMMENT ON TABLE {full} IS {_quote_lit(f'{self.id} v{self.version}')}")
        for f in self.fields:
            note = f"[{f.classification}] {f.description}".strip()
            stmts.append(f"COMMENT ON COLUMN {full}.{q(f.name)} IS {_quote_lit(note)}")
        return ";\n".join(stmts) + ";"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@cache
def _meta_schema() -> dict[str, Any]:
    return json.loads(files("lienthong").joinpath("contract.schema.json").read_text(encoding="utf-8"))


def _json_path(parts) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _custom(props: list[dict] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in props or []:
        out[item["property"]] = item["value"]
    return out


def _rule(raw: dict[str, Any], column: str | None, where: str, file: Path) -> QualityRule:
    unit = raw.get("unit", "rows")
    max_fraction = max_rows = None
    if "mustBe" in raw:
        if raw["mustBe"] != 0:
            raise ContractError(file, where + ".mustBe", "only mustBe: 0 is supported; use mustBeLessOrEqualTo")
        max_rows = 0
    elif "mustBeLessOrEqualTo" in raw:
        if unit == "percent":
            max_fraction = float(raw["mustBeLessOrEqualTo"]) / 100.0
        else:
            max_rows = int(raw["mustBeLessOrEqualTo"])
    else:
        raise ContractError(file, where, "a quality rule needs mustBe or mustBeLessOrEqualTo")
    args = dict(raw.get("arguments") or {})
    if "pattern" in args:
        try:
            re.compile(args["pattern"])
        except re.error as exc:
            raise ContractError(file, where + ".arguments.pattern", f"not a valid regular expression: {exc}") from exc
    if raw.get("metric") == "invalidValues" and not ({"pattern", "validValues", "minValue", "maxValue"} & args.keys()):
        raise ContractError(file, where + ".arguments", "invalidValues needs pattern, validValues, minValue or maxValue")
    metric = raw.get("metric")
    if "properties" in args and not (metric == "duplicateValues" and column is None):
        raise ContractError(file, where + ".arguments.properties",
                            "properties (a key over several columns) is for a schema-level duplicateValues rule")
    if metric == "duplicateValues" and column is None and "properties" not in args:
        raise ContractError(file, where + ".arguments", "a schema-level duplicateValues rule needs properties")
    if metric == "futureValues" and column is None:
        raise ContractError(file, where, "futureValues is a column rule")
    if "onlyWhere" in args and raw["severity"] == "critical" and metric == "invalidValues":
        # Staging quarantines the rows a critical invalidValues rule rejects, with no row condition.
        raise ContractError(file, where + ".arguments.onlyWhere", "onlyWhere is for warning rules only")
    label = "+".join(args["properties"]) if "properties" in args else column or "dataset"
    name = raw.get("name") or f"{label}:{metric or raw.get('implementation')}"
    if metric == "invalidValues":
        name += ":" + ("pattern" if "pattern" in args else "validValues" if "validValues" in args else "range")
    if "onlyWhere" in args and not raw.get("name"):
        name += f"[{args['onlyWhere']}]"
    return QualityRule(
        name=name,
        severity=raw["severity"],
        column=column,
        metric=metric,
        implementation=raw.get("implementation"),
        arguments=args,
        max_fraction=max_fraction,
        max_rows=max_rows,
        description=raw.get("description", ""),
    )


def _field(raw: dict[str, Any], where: str, file: Path) -> Field:
    custom = _custom(raw.get("customProperties"))
    children: tuple[Field, ...] = ()
    item_type = None
    if raw["logicalType"] == "array":
        items = raw.get("items")
        if not items:
            raise ContractError(file, where, "an array property needs items")
        item_type = items["logicalType"]
        children = tuple(
            _field(c, f"{where}.items.properties[{i}]", file) for i, c in enumerate(items.get("properties") or [])
        )
    elif raw["logicalType"] == "object":
        children = tuple(_field(c, f"{where}.properties[{i}]", file) for i, c in enumerate(raw.get("properties") or []))
    if raw.get("physicalType") and not _DECIMAL.match(raw["physicalType"]):
        raise ContractError(file, where + ".physicalType", "only decimal(p,s) is supported as a physicalType")
    quality = tuple(
        _rule(q, raw["name"], f"{where}.quality[{i}]", file) for i, q in enumerate(raw.get("quality") or [])
    )
    for i, rule in enumerate(quality):
        if rule.metric == "futureValues" and raw["logicalType"] not in ("date", "integer"):
            raise ContractError(file, f"{where}.quality[{i}]",
                                "futureValues needs a date (or an integer year) column, not " + raw["logicalType"])
    return Field(
        name=raw["name"],
        logical_type=raw["logicalType"],
        required=bool(raw.get("required", False)),
        primary_key=bool(raw.get("primaryKey", False)),
        primary_key_position=raw.get("primaryKeyPosition"),
        unique=bool(raw.get("unique", False)),
        classification=raw.get("classification", "internal"),
        description=raw.get("description", ""),
        physical_type=raw.get("physicalType"),
        source_field=custom.get("sourceField"),
        parse=custom.get("parse"),
        custom=custom,
        children=children,
        item_type=item_type,
        quality=quality,
    )


def _check_rules(fields: tuple[Field, ...], dataset_rules: tuple[QualityRule, ...], file: Path) -> None:
    """Rule names are unique (results are matched to rules by name); the columns a rule reads exist."""
    names = {f.name for f in fields}
    seen: set[str] = set()
    located = [(f"$.schema[0].properties[{i}].quality[{j}]", r) for i, f in enumerate(fields) for j, r in enumerate(f.quality)]
    located += [(f"$.schema[0].quality[{j}]", r) for j, r in enumerate(dataset_rules)]
    for where, rule in located:
        if rule.name in seen:
            raise ContractError(file, where, f"duplicate quality rule name {rule.name!r}: give the rule a name")
        seen.add(rule.name)
        if "onlyWhere" in rule.arguments and "=" not in str(rule.arguments["onlyWhere"]):
            raise ContractError(file, where + ".arguments.onlyWhere", "onlyWhere must be column=VALUE")
        missing = [c for c in rule.columns if c not in names]
        if missing:
            raise ContractError(file, where + ".arguments", f"rule {rule.name} reads unknown columns {missing}")


def parse_contract(doc: Any, file: str | Path = "<memory>") -> Contract:
    """Validate a contract document (already parsed YAML) and build the Contract."""
    import jsonschema

    file = Path(file)
    validator = jsonschema.Draft202012Validator(_meta_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        raise ContractError(file, _json_path(err.absolute_path), err.message)
    if len(doc["schema"]) != 1:
        raise ContractError(file, "$.schema", "one schema object per contract (one dataset per file)")
    obj = doc["schema"][0]
    fields = tuple(_field(p, f"$.schema[0].properties[{i}]", file) for i, p in enumerate(obj["properties"]))
    seen: set[str] = set()
    for i, f in enumerate(fields):
        if f.name in seen:
            raise ContractError(file, f"$.schema[0].properties[{i}].name", f"duplicate field name {f.name!r}")
        seen.add(f.name)
    if not any(f.primary_key for f in fields):
        raise ContractError(file, "$.schema[0].properties", "no property has primaryKey: true")
    pk = [f for f in fields if f.primary_key]
    if len(pk) > 1 and any(f.primary_key_position is None for f in pk):
        raise ContractError(file, "$.schema[0].properties", "a composite primary key needs primaryKeyPosition on each part")
    dataset_rules = tuple(
        _rule(q, None, f"$.schema[0].quality[{i}]", file) for i, q in enumerate(obj.get("quality") or [])
    )
    _check_rules(fields, dataset_rules, file)
    custom = _custom(doc.get("customProperties"))
    if custom.get("zone") == "staged" and not dataset_rules and not any(f.quality for f in fields):
        # A staged dataset feeds the quality gate: with no rule its suite is empty and the gate passes anything.
        raise ContractError(file, "$.schema[0]", "a staged contract needs at least one quality rule")
    if "ownerAgency" not in custom:
        raise ContractError(file, "$.customProperties", "missing ownerAgency")
    fresh = None
    for sla in doc.get("slaProperties") or []:
        if sla["property"] == "freshness":
            fresh = (float(sla["value"]), sla.get("unit", "d"))
    return Contract(
        id=doc["id"],
        name=doc["name"],
        version=doc["version"],
        status=doc["status"],
        domain=doc.get("domain", ""),
        purpose=(doc.get("description") or {}).get("purpose", ""),
        owner_agency=custom["ownerAgency"],
        custom=custom,
        freshness=fresh,
        object_name=obj.get("physicalName", obj["name"]),
        fields=fields,
        dataset_rules=dataset_rules,
        path=file,
    )


def load_contract_file(path: str | Path) -> Contract:
    path = Path(path)
    try:
        doc = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "$"
        raise ContractError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(doc, dict):
        raise ContractError(path, "$", "a contract must be a YAML mapping")
    contract = parse_contract(doc, path)
    if contract.name != path.stem:
        raise ContractError(path, "$.name", f"name {contract.name!r} must match the file name {path.stem!r}")
    return contract


def default_contracts_dir() -> Path:
    from lienthong.settings import load_settings

    return load_settings().contracts_dir


@cache
def _load_one(path: str) -> Contract:
    return load_contract_file(path)


@cache
def _load_all(directory: str) -> dict[str, Contract]:
    out = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        if path.name == "agencies.yaml":
            continue
        c = _load_one(str(path))
        out[c.name] = c
    return out


def load_contracts(directory: str | Path | None = None) -> dict[str, Contract]:
    """Every contract in the directory (default: the repository's schemas/), by dataset name."""
    return _load_all(str(Path(directory or default_contracts_dir()).resolve()))


def contract(name: str, directory: str | Path | None = None) -> Contract:
    """One contract by dataset name. A contract lives in `<name>.yaml` (load_contract_file refuses any other
    file name), so only that file is read and validated: a task that needs two contracts does not pay for
    all of them."""
    folder = Path(directory or default_contracts_dir()).resolve()
    path = folder / f"{name}.yaml"
    if _CONTRACT_NAME.fullmatch(name) and name != "agencies" and path.is_file():
        return _load_one(str(path))
    raise KeyError(f"no contract named {name!r} in {folder}")
