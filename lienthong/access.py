"""Per-agency access to the published datasets: `schemas/agencies.yaml` turned into PostgreSQL roles and views.

Owns the access configuration (load and validate it against the published contracts: an unknown agency
field, dataset, column or mode is a `AccessConfigError` naming agency, dataset and column; so is a grant
without purposes, a purpose without a legal basis, or a basis without an instrument number and article: each
read rests on a `Purpose` of the agency, and each purpose on `LegalBasis` entries) and its
application to the warehouse (`apply_access`), in ONE transaction and idempotently:

* schema `lienthong_access`: the masking functions (IDs keep their last 3 characters, names their initials,
  dates and timestamps their year, addresses their commune code). Plain SQL, IMMUTABLE, so they inline;
* schema `lienthong_private`: per-agency pseudonymization keys and `pseudonym(agency, text)`, keyed
  HMAC-SHA256 as hex. Each agency's key is derived from the platform key `LIENTHONG_PSEUDONYM_KEY`
  (`agency_key`: HMAC of the agency's name under the platform key), so two agencies' pseudonyms of one person
  differ and cannot be joined with each other; within one agency they are stable and join. The embedded
  server has no pgcrypto (its build ships no pgcrypto extension), so HMAC is computed from the core
  `sha256()` function: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) (RFC 2104). The padded keys are
  derived in Python and stored in a table only the owner can read; the platform key is never sent to the
  server, and neither a key nor its pads appear in any view definition: views call the SECURITY DEFINER
  function with their agency's name. Agencies get EXECUTE on it but no USAGE on the private schema, so they
  cannot call it by name (no oracle to pseudonymize guessed IDs, nor to compute another agency's pseudonyms);
* per agency: a LOGIN role (password from `LIENTHONG_AGENCY_PASSWORD_<AGENCY>`, sent as a SCRAM-SHA-256
  verifier computed client-side, so the clear password never reaches the server or its logs), member of
  the group `lienthong_agency`; a schema `agency_<name>` with one security-barrier view per granted dataset
  over `published.<dataset>` (hidden columns left out, masked / pseudonymized ones as function calls, an
  optional row filter from `rows: {column: [values]}`); USAGE on that schema and SELECT on its views only.
  Everything else is revoked: `published`, `lienthong_ops`, `lienthong_private` and other agencies' schemas;
* agency roles read and never write or hoard: no TEMP and no CREATE on the database (revoked from PUBLIC, the
  platform's own role keeps TEMP), no CREATE on any schema, no large objects (the creating functions are
  revoked from PUBLIC), so an agency owns nothing it could pass on to another; a connection limit and
  per-role statement, idle-in-transaction, idle-session and temp-file limits (`limits:` in agencies.yaml,
  defaults in `DEFAULT_LIMITS`). What could not be enforced (a server where the platform's role is no
  superuser) is reported and logged, never silently skipped.

A row filter holds for the entity, not for one view: each published contract names the entity a row is
(`entity`), each nested column the entity its items are (`itemEntity`), and a column that names records in
free text the entities it mentions (`mentions`). When an agency's grant filters a dataset of entity E, every
other granted dataset of entity E is filtered the same way and every nested list of E items it can read keeps
only the items passing the filter (the same column names in the items); where that is impossible (the items
lack the column, mix entities, or the column mentions E in free text) the configuration is refused with the
agency, dataset and column named: hide the column or drop the filter.

Nested (jsonb) columns can be visible, pseudonymized (the whole JSON text) or hidden, never masked.

A dataset not yet published (no `published.<dataset>`) or published under an older contract lacking a
granted column is skipped with a warning and reported, so the pipeline can apply access after every publish.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from psycopg2 import errors as pg_errors
from psycopg2 import sql
from psycopg2.extensions import connection, encrypt_password

from lienthong import feed
from lienthong.contracts import Contract, Field, load_contracts
from lienthong.db import connect
from lienthong.jsonfilter import item_conditions
from lienthong.runs.schema import OPS_SCHEMA, ensure_ledger
from lienthong.settings import passed_env
from lienthong.yamltext import safe_load

log = logging.getLogger(__name__)

MODES = ("visible", "masked", "pseudonymized", "hidden")
MASKS = ("id", "name", "year", "address")
ACCESS_SCHEMA = "lienthong_access"
PRIVATE_SCHEMA = "lienthong_private"
PUBLISHED_SCHEMA = "published"
AGENCY_GROUP = "lienthong_agency"
KEY_ENV = "LIENTHONG_PSEUDONYM_KEY"
KEY_CONN_ID = "lienthong_pseudonym_key"
PASSWORD_ENV_PREFIX = "LIENTHONG_AGENCY_PASSWORD_"
MIN_KEY_BYTES = 16

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")  # agency_<name> stays within PostgreSQL's 63-byte identifiers
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FILTER_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
# Per-role limits applied when an agency's entry has no `limits:` (PostgreSQL units in the strings).
DEFAULT_LIMITS: dict[str, int | str] = {
    "connections": 20,
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
    "idle_session_timeout": "1h",
    "temp_file_limit": "1GB",
}
_CODE = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
# A Vietnamese legal document number: 91/2025/QH15, 194/2025/NĐ-CP (or ND-CP), 90/2026/TT-BTC, 66.7/2025/NQ-CP.
_INSTRUMENT = re.compile(r"^[0-9]+(\.[0-9]+)?/[0-9]{4}/[A-ZĐ]+[0-9]*(-[A-ZĐ]+)*$")
_ARTICLE = re.compile(r"^(Art\. |Điều )[0-9]+.*$")
_DURATION = re.compile(r"^[1-9][0-9]{0,8}(ms|s|min|h|d)$")
_SIZE = re.compile(r"^[1-9][0-9]{0,8}(kB|MB|GB|TB)$")
# Set for every agency role: the server never writes the values bound to an agency's statements into its log
# (the single window binds looked-up IDs as parameters). Superuser settings: a role cannot change them.
_ROLE_LOGGING = {"log_parameter_max_length": "0", "log_parameter_max_length_on_error": "0"}
_LIMIT_FORMATS = {"statement_timeout": _DURATION, "idle_in_transaction_session_timeout": _DURATION,
                  "idle_session_timeout": _DURATION, "temp_file_limit": _SIZE}
# Functions that create large objects: any role may call them unless EXECUTE is revoked from PUBLIC.
_LARGE_OBJECT_CREATORS = ("lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)", "lo_import(text)",
                          "lo_import(text, oid)")


class AccessConfigError(ValueError):
    """agencies.yaml is not valid: names the file, the agency, the dataset and the column concerned."""

    def __init__(self, file: str | Path, problem: str, agency: str | None = None, dataset: str | None = None,
                 column: str | None = None):
        self.file, self.problem, self.agency, self.dataset, self.column = str(file), problem, agency, dataset, column
        where = ", ".join(f"{k} {v!r}" for k, v in (("agency", agency), ("dataset", dataset), ("column", column)) if v)
        super().__init__(f"{file}: {where + ': ' if where else ''}{problem}")


@dataclass(frozen=True)
class LegalBasis:
    """A provision of law a processing rests on: the instrument's number and the article (schemas/agencies.yaml
    `legal_bases`)."""

    id: str
    instrument: str  # e.g. 91/2025/QH15, 194/2025/NĐ-CP
    article: str  # e.g. Art. 19(1)(c)
    title: str

    @property
    def citation(self) -> str:
        return f"{self.instrument}, {self.article}"


@dataclass(frozen=True)
class Purpose:
    """A purpose an agency may read for: what it covers, the legal bases it rests on, and how long the reads made
    for it are hidden from the data subject's usage history (an investigation's `embargo_days`)."""

    code: str
    description: str
    bases: tuple[LegalBasis, ...]
    embargo_days: int = 0

    @property
    def legal_basis(self) -> str:
        """The bases as one citation string: `91/2025/QH15, Art. 19(1)(c); 194/2025/NĐ-CP, Art. 16`."""
        return "; ".join(b.citation for b in self.bases)


@dataclass(frozen=True)
class DatasetGrant:
    """What one agency may read of one dataset: a mode per column (contract order), a row filter, and the
    purposes (codes of the agency's `purposes`) it may be read for."""

    dataset: str
    columns: dict[str, str]  # every contract column -> mode ('hidden' when not listed)
    rows: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # nested column -> the row filter its items must pass (carried from a filter on the items' entity)
    nested_rows: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    purposes: tuple[str, ...] = ()

    @property
    def readable(self) -> list[str]:
        """The columns of the agency's view, in contract order."""
        return [c for c, mode in self.columns.items() if mode != "hidden"]


@dataclass(frozen=True)
class Agency:
    name: str
    title: str
    purpose: str
    role: str
    grants: dict[str, DatasetGrant]
    limits: dict[str, int | str] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    purposes: dict[str, Purpose] = field(default_factory=dict)

    def purposes_of(self, dataset: str) -> list[Purpose]:
        """The purposes the agency may read `dataset` for (none if it is not granted)."""
        grant = self.grants.get(dataset)
        return [self.purposes[p] for p in grant.purposes] if grant else []

    @property
    def schema(self) -> str:
        return f"agency_{self.name}"

    @property
    def password_env(self) -> str:
        return PASSWORD_ENV_PREFIX + self.name.upper()

    @property
    def uses_pseudonyms(self) -> bool:
        return any(m == "pseudonymized" for g in self.grants.values() for m in g.columns.values())


def grants_table(agencies: dict[str, Agency]) -> list[dict[str, Any]]:
    """One row per agency and granted dataset: the purposes, their legal bases (cited), the longest embargo,
    how many columns it reads in each mode, and the row filter. For reports and `lienthong grants`."""
    rows = []
    for agency in agencies.values():
        for dataset, grant in agency.grants.items():
            purposes = agency.purposes_of(dataset)
            bases = list(dict.fromkeys(b.citation for p in purposes for b in p.bases))
            modes = {m: sum(1 for v in grant.columns.values() if v == m) for m in MODES if m != "hidden"}
            rows.append({"agency": agency.name, "role": agency.role, "dataset": dataset,
                         "purposes": [p.code for p in purposes], "legal_bases": bases,
                         "embargo_days": max((p.embargo_days for p in purposes), default=0),
                         "columns": modes, "rows": {c: list(v) for c, v in grant.rows.items()}})
    return rows


def masking_policy(agencies: dict[str, Agency], dataset: str) -> dict[str, Any]:
    """What each agency granted `dataset` reads of it, for a release's manifest: the columns it sees and how
    (hidden ones left out), the row filter, the filters on nested items, the purposes; and the SHA-256 of
    that, one value to tell whether two releases were served under the same policy."""
    per_agency = {
        agency.name: {"columns": {c: m for c, m in grant.columns.items() if m != "hidden"},
                      "rows": {c: list(v) for c, v in grant.rows.items()},
                      "nested_rows": {n: {c: list(v) for c, v in f.items()} for n, f in grant.nested_rows.items()},
                      "purposes": list(grant.purposes)}
        for agency in agencies.values() if (grant := agency.grants.get(dataset)) is not None}
    text = json.dumps(per_agency, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return {"agencies": per_agency, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def default_agencies_path() -> Path:
    from lienthong.settings import load_settings

    return load_settings().contracts_dir / "agencies.yaml"


def load_agencies(path: str | Path | None = None, contracts: dict[str, Contract] | None = None) -> dict[str, Agency]:
    """Read and validate agencies.yaml against the published contracts; agencies by name."""
    path = Path(path or default_agencies_path())
    try:
        doc = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AccessConfigError(path, f"not valid YAML: {exc}") from exc
    contracts = contracts if contracts is not None else load_contracts()
    return parse_agencies(doc, contracts, path)


def _expect(cond: bool, path: Path, problem: str, **where: str | None) -> None:
    if not cond:
        raise AccessConfigError(path, problem, **where)


def parse_agencies(doc: Any, contracts: dict[str, Contract], path: str | Path = "<memory>") -> dict[str, Agency]:
    """Validate a parsed agencies document; see `load_agencies`."""
    path = Path(path)
    _expect(isinstance(doc, dict) and set(doc) <= {"version", "legal_bases", "agencies"}, path,
            "the document must be a mapping with 'version', 'legal_bases' and 'agencies'")
    _expect(doc.get("version") == 1, path, "version must be 1")
    bases = _legal_bases(doc.get("legal_bases"), path)
    raw_agencies = doc.get("agencies")
    _expect(isinstance(raw_agencies, dict) and bool(raw_agencies), path, "'agencies' must be a non-empty mapping")
    published = {n: c for n, c in contracts.items() if c.custom.get("zone") == "published"}
    agencies: dict[str, Agency] = {}
    roles: dict[str, str] = {}
    for name, raw in raw_agencies.items():
        _expect(isinstance(name, str) and bool(_NAME.match(name)), path,
                "an agency name is lower-case letters, digits and '_' (at most 50), starting with a letter", agency=str(name))
        _expect(isinstance(raw, dict), path, "an agency must be a mapping", agency=name)
        unknown = set(raw) - {"title", "purpose", "role", "purposes", "datasets", "limits"}
        _expect(not unknown, path, f"unknown field(s) {sorted(unknown)}", agency=name)
        purpose = raw.get("purpose")
        _expect(isinstance(purpose, str) and len(purpose.strip()) >= 20, path,
                "a purpose (what the agency reads for, in a sentence or more) is required", agency=name)
        role = raw.get("role")
        _expect(isinstance(role, str) and bool(_ROLE.match(role)), path,
                "role must be a PostgreSQL role name: lower-case letters, digits and '_'", agency=name)
        _expect(not role.startswith("pg_") and role != AGENCY_GROUP, path, f"role {role!r} is reserved", agency=name)
        _expect(role not in roles, path, f"role {role!r} is also used by agency {roles.get(role)!r}", agency=name)
        roles[role] = name
        purposes = _purposes(raw.get("purposes"), bases, path, name)
        datasets = raw.get("datasets") or {}
        _expect(isinstance(datasets, dict), path, "datasets must be a mapping", agency=name)
        grants = {}
        for ds, spec in datasets.items():
            _expect(ds in published, path, f"unknown dataset (published datasets: {', '.join(sorted(published))})",
                    agency=name, dataset=str(ds))
            grants[ds] = _grant(spec, published[ds], path, name, purposes)
        grants = carry_row_filters(grants, published, path, name)
        agencies[name] = Agency(name, str(raw.get("title") or name), " ".join(purpose.split()), role, grants,
                                _limits(raw.get("limits"), path, name), purposes)
    return agencies


def _legal_bases(raw: Any, path: Path) -> dict[str, LegalBasis]:
    """The document's catalogue of legal bases, by id; each names an instrument by number, an article and what
    it allows."""
    _expect(isinstance(raw, dict) and bool(raw), path, "'legal_bases' must be a non-empty mapping of id -> "
            "{instrument, article, title}: every grant rests on one of them")
    bases = {}
    for key, spec in raw.items():
        where = f"legal basis {key!r}: "
        _expect(isinstance(key, str) and bool(_CODE.match(key)), path, where + "an id is lower-case letters, digits "
                "and '_'")
        _expect(isinstance(spec, dict) and set(spec) == {"instrument", "article", "title"}, path,
                where + "a mapping with exactly 'instrument', 'article' and 'title'")
        instrument, article, title = (spec[k] for k in ("instrument", "article", "title"))
        _expect(isinstance(instrument, str) and bool(_INSTRUMENT.match(instrument)), path, where + f"instrument "
                f"{instrument!r} is not a document number such as 91/2025/QH15 or 194/2025/NĐ-CP")
        _expect(isinstance(article, str) and bool(_ARTICLE.match(article)), path, where + f"article {article!r} "
                "must name an article, e.g. 'Art. 19(1)(c)' or 'Điều 19 khoản 1 điểm c'")
        _expect(isinstance(title, str) and len(title.strip()) >= 10, path, where + "a title saying what it allows")
        bases[key] = LegalBasis(key, instrument, article, " ".join(title.split()))
    return bases


def _purposes(raw: Any, bases: dict[str, LegalBasis], path: Path, agency: str) -> dict[str, Purpose]:
    """The agency's purposes, by code: each with a description, its legal bases and an optional embargo."""
    _expect(isinstance(raw, dict) and bool(raw), path, "'purposes' must be a non-empty mapping of code -> "
            "{description, bases, embargo_days}", agency=agency)
    purposes = {}
    for code, spec in raw.items():
        where = f"purpose {code!r}: "
        _expect(isinstance(code, str) and bool(_CODE.match(code)), path, where + "a code is lower-case letters, "
                "digits and '_' (3 to 64), starting with a letter", agency=agency)
        _expect(isinstance(spec, dict) and set(spec) <= {"description", "bases", "embargo_days"}, path,
                where + "a mapping with 'description', 'bases' and optional 'embargo_days'", agency=agency)
        description = spec.get("description")
        _expect(isinstance(description, str) and len(description.strip()) >= 20, path,
                where + "a description of what the purpose covers is required", agency=agency)
        refs = spec.get("bases")
        _expect(isinstance(refs, list) and bool(refs), path, where + "'bases' must list the ids of its legal bases "
                "(a purpose without a legal basis is refused)", agency=agency)
        for ref in refs:
            _expect(ref in bases, path, where + f"unknown legal basis {ref!r} (known: {', '.join(bases)})",
                    agency=agency)
        embargo = spec.get("embargo_days", 0)
        _expect(isinstance(embargo, int) and not isinstance(embargo, bool) and 0 <= embargo <= 3650, path,
                where + "embargo_days: whole days from 0 to 3650", agency=agency)
        purposes[code] = Purpose(code, " ".join(description.split()), tuple(bases[r] for r in refs), embargo)
    return purposes


def _limits(raw: Any, path: Path, agency: str) -> dict[str, int | str]:
    """The agency's per-role limits: DEFAULT_LIMITS overridden by its `limits:` mapping."""
    raw = raw or {}
    _expect(isinstance(raw, dict), path, "limits must be a mapping", agency=agency)
    unknown = set(raw) - set(DEFAULT_LIMITS)
    _expect(not unknown, path, f"unknown limit(s) {sorted(unknown)} (known: {', '.join(DEFAULT_LIMITS)})", agency=agency)
    limits = {**DEFAULT_LIMITS, **raw}
    conns = limits["connections"]
    _expect(isinstance(conns, int) and not isinstance(conns, bool) and 1 <= conns <= 1000, path,
            "limits.connections: an integer from 1 to 1000", agency=agency)
    for name, pattern in _LIMIT_FORMATS.items():
        value = limits[name]
        _expect(isinstance(value, str) and bool(pattern.match(value)), path,
                f"limits.{name}: {value!r} is not a PostgreSQL {'duration (e.g. 30s, 5min)' if pattern is _DURATION else 'size (e.g. 512MB)'}",
                agency=agency)
    return limits


def _entities(value: Any) -> frozenset[str]:
    """An `entity` / `itemEntity` / `mentions` property: one name or a list of names."""
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, str) else value)


def _narrow(into: dict[str, tuple[Any, ...]], extra: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """Two row filters at once: a column filtered by both keeps the values both allow."""
    out = dict(into)
    for col, values in extra.items():
        out[col] = tuple(v for v in out[col] if v in values) if col in out else values
    return out


def carry_row_filters(grants: dict[str, DatasetGrant], published: dict[str, Contract], path: Path,
                      agency: str) -> dict[str, DatasetGrant]:
    """Make each row filter hold for its entity wherever the agency can read that entity (module docstring).

    Returns the grants with the filters carried into other datasets' rows and nested lists; raises
    AccessConfigError where a column shows filtered records that cannot be filtered."""
    filters: dict[str, dict[str, tuple[Any, ...]]] = {}  # entity -> {column: allowed values}
    typed: dict[str, dict[str, str]] = {}  # entity -> {column: logical type}
    origin: dict[str, str] = {}
    for ds, g in grants.items():
        if not g.rows:
            continue
        entity = published[ds].custom.get("entity")
        if not isinstance(entity, str):
            raise AccessConfigError(path, "a row filter needs the contract to name the entity a row is (customProperty "
                                    "'entity'), so that it can hold wherever that entity appears", agency=agency, dataset=ds)
        filters[entity] = _narrow(filters.get(entity, {}), g.rows)
        typed.setdefault(entity, {}).update({c: published[ds].field(c).logical_type for c in g.rows})
        origin.setdefault(entity, ds)
    if not filters:
        return grants
    out = {}
    for ds, g in grants.items():
        contract = published[ds]
        rows = g.rows
        entity = contract.custom.get("entity")
        if entity in filters:
            for col in filters[entity]:
                _expect(col in contract.field_names, path, f"the row filter on {origin[entity]} limits {entity} records, "
                        f"which this dataset holds without column {col!r}: grant it with the same filter or not at all",
                        agency=agency, dataset=ds)
            rows = _narrow(rows, filters[entity])
        nested: dict[str, dict[str, tuple[Any, ...]]] = {}
        for col in g.readable:
            f = contract.field(col)
            where = {"agency": agency, "dataset": ds, "column": col}
            mentioned = _entities(f.custom.get("mentions")) & filters.keys()
            if mentioned:
                raise AccessConfigError(path, f"names {', '.join(sorted(mentioned))} records in free text, which the "
                                        f"row filter on {origin[min(mentioned)]} limits and which cannot be filtered "
                                        "here: hide the column or drop the filter", **where)
            if f.logical_type not in ("array", "object"):
                continue
            items = _entities(f.custom.get("itemEntity"))
            _expect(bool(items), path, "a nested column must declare the entity of its items (customProperty "
                    "'itemEntity') when the agency has a row filter", **where)
            hit = items & filters.keys()
            if not hit:
                continue
            e = min(hit)
            members = {c.name: c.logical_type for c in f.children}
            # One entity per list (a mixed list has items the filter's columns do not apply to), a list of
            # objects, and every filter column among the items' members with the type it has in the dataset.
            if (len(items) > 1 or f.logical_type != "array" or f.item_type != "object"
                    or any(members.get(c) != typed[e][c] for c in filters[e])):
                raise AccessConfigError(path, f"holds {', '.join(sorted(hit))} records that the row filter on "
                                        f"{origin[e]} limits, but its items cannot be filtered by "
                                        f"{sorted(filters[e])}: hide the column or drop the filter", **where)
            nested[col] = filters[e]
        out[ds] = DatasetGrant(ds, g.columns, rows, nested, g.purposes)
    return out


def _grant(spec: Any, contract: Contract, path: Path, agency: str, purposes: dict[str, Purpose]) -> DatasetGrant:
    ds = contract.name
    _expect(isinstance(spec, dict) and set(spec) <= {"columns", "rows", "purposes"}
            and isinstance(spec.get("columns"), dict), path,
            "a dataset grant is a mapping with 'purposes', 'columns' (column: mode) and optional 'rows'",
            agency=agency, dataset=ds)
    granted_for = spec.get("purposes")
    _expect(isinstance(granted_for, list) and bool(granted_for), path, "a dataset grant needs 'purposes': the "
            "codes of the agency's purposes it may be read for (each names its legal basis)", agency=agency, dataset=ds)
    for code in granted_for:
        _expect(code in purposes, path, f"unknown purpose {code!r} (the agency's purposes: "
                f"{', '.join(purposes) or 'none'})", agency=agency, dataset=ds)
    _expect(len(set(granted_for)) == len(granted_for), path, "a purpose is listed twice", agency=agency, dataset=ds)
    fields = {f.name: f for f in contract.fields}
    columns = {name: "hidden" for name in fields}
    for col, mode in spec["columns"].items():
        where = {"agency": agency, "dataset": ds, "column": str(col)}
        _expect(col in fields, path, f"unknown column (the contract has: {', '.join(fields)})", **where)
        _expect(mode in MODES, path, f"unknown mode {mode!r} (one of {', '.join(MODES)})", **where)
        if mode == "masked":
            _mask_kind(fields[col], contract, path, where)
        columns[col] = mode
    _expect(any(m != "hidden" for m in columns.values()), path, "grants no column", agency=agency, dataset=ds)
    rows: dict[str, tuple[Any, ...]] = {}
    raw_rows = spec.get("rows") or {}
    _expect(isinstance(raw_rows, dict), path, "rows must be a mapping {column: [allowed values]}", agency=agency, dataset=ds)
    for col, values in raw_rows.items():
        where = {"agency": agency, "dataset": ds, "column": str(col)}
        _expect(col in fields, path, "unknown column in rows", **where)
        f = fields[col]
        types = _FILTER_TYPES.get(f.logical_type)
        if types is None:
            raise AccessConfigError(path, f"rows cannot filter a {f.logical_type} column", **where)
        _expect(isinstance(values, list) and bool(values), path, "rows: a non-empty list of allowed values", **where)
        for v in values:
            ok = isinstance(v, types) and (f.logical_type == "boolean" or not isinstance(v, bool))
            _expect(ok, path, f"rows: value {v!r} is not a {f.logical_type}", **where)
        rows[col] = tuple(values)
    return DatasetGrant(ds, columns, rows, purposes=tuple(granted_for))


def _mask_kind(f: Field, contract: Contract, path: Path, where: dict[str, str]) -> str:
    if f.logical_type in ("array", "object"):
        raise AccessConfigError(path, "a nested column cannot be masked (masking applies to the whole column): "
                                "use visible, pseudonymized or hidden", **where)
    kind = f.custom.get("mask") or ("year" if f.logical_type in ("date", "timestamp") else None)
    if not isinstance(kind, str) or kind not in MASKS:
        raise AccessConfigError(path, "the contract gives no masking for this column (property 'mask': one of "
                                f"{', '.join(MASKS)})", **where)
    if kind == "year":
        _expect(f.logical_type in ("date", "timestamp"), path, "mask 'year' needs a date or timestamp column", **where)
    elif f.logical_type != "string":
        raise AccessConfigError(path, f"mask {kind!r} needs a string column", **where)
    if kind == "address":
        commune = f.custom.get("maskCommuneColumn")
        _expect(commune in contract.field_names, path, "mask 'address' needs maskCommuneColumn naming a column", **where)
    return kind


# --- SQL ---------------------------------------------------------------------------------------------------

FUNCTIONS_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {ACCESS_SCHEMA};
COMMENT ON SCHEMA {ACCESS_SCHEMA} IS 'lienthong.access: masking functions used by the agency views';
CREATE OR REPLACE FUNCTION {ACCESS_SCHEMA}.mask_id(v text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE WHEN v IS NULL THEN NULL
              WHEN char_length(v) <= 3 THEN repeat('*', char_length(v))
              ELSE repeat('*', char_length(v) - 3) || right(v, 3) END;
CREATE OR REPLACE FUNCTION {ACCESS_SCHEMA}.mask_name(v text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  BEGIN ATOMIC
    SELECT string_agg(left(w, 1) || '.', ' ' ORDER BY n)
    FROM regexp_split_to_table(btrim(v), '\\s+') WITH ORDINALITY AS t(w, n) WHERE w <> '';
  END;
CREATE OR REPLACE FUNCTION {ACCESS_SCHEMA}.mask_year(v date) RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN extract(year FROM v)::integer;
CREATE OR REPLACE FUNCTION {ACCESS_SCHEMA}.mask_year(v timestamptz) RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN extract(year FROM v AT TIME ZONE 'UTC')::integer;
CREATE OR REPLACE FUNCTION {ACCESS_SCHEMA}.mask_address(v text, commune text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE WHEN v IS NULL THEN NULL WHEN commune IS NULL THEN '***' ELSE '***, ' || commune END;

CREATE SCHEMA IF NOT EXISTS {PRIVATE_SCHEMA};
REVOKE ALL ON SCHEMA {PRIVATE_SCHEMA} FROM PUBLIC;
COMMENT ON SCHEMA {PRIVATE_SCHEMA} IS 'lienthong.access: pseudonymization key; no agency may use this schema';
-- One key for all agencies (before per-agency keys): its views are rebuilt below, in the same transaction.
DROP FUNCTION IF EXISTS {PRIVATE_SCHEMA}.pseudonym(text) CASCADE;
DROP TABLE IF EXISTS {PRIVATE_SCHEMA}.pseudonym_key;
CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.agency_pseudonym_key (
  agency text PRIMARY KEY,
  inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),
  outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64),
  fingerprint text NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE {PRIVATE_SCHEMA}.agency_pseudonym_key FROM PUBLIC;
CREATE OR REPLACE FUNCTION {PRIVATE_SCHEMA}.pseudonym(agency text, v text) RETURNS text
  LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE k record;
BEGIN
  SELECT inner_pad, outer_pad INTO k FROM {PRIVATE_SCHEMA}.agency_pseudonym_key WHERE agency_pseudonym_key.agency = pseudonym.agency;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no pseudonymization key for agency %: apply lienthong.access with {KEY_ENV} set', agency;
  END IF;
  RETURN encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(v, 'UTF8'))), 'hex');
END
$fn$;
REVOKE ALL ON FUNCTION {PRIVATE_SCHEMA}.pseudonym(text, text) FROM PUBLIC;
"""
PSEUDONYM_FN = f"{PRIVATE_SCHEMA}.pseudonym(text, text)"


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256 (RFC 2104) for `key`."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def pseudonym(value: str, key: bytes) -> str:
    """HMAC-SHA256 of `value` under `key`, as hex: `lienthong_private.pseudonym(agency, value)` returns this
    under `agency_key(platform key, agency)` (for checks and tests)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def agency_key(key: bytes, agency: str) -> bytes:
    """The agency's own pseudonymization key, derived from the platform key (HMAC-based key derivation with the
    agency's name as context), so that one person's pseudonyms differ from agency to agency."""
    return hmac.new(key, b"lienthong pseudonym key for agency " + agency.encode("utf-8"), hashlib.sha256).digest()


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible fingerprint telling whether the key changed (pseudonyms change with it)."""
    return hmac.new(key, b"lienthong pseudonym key fingerprint", hashlib.sha256).hexdigest()[:16]


def pseudonym_key(required: bool) -> bytes | None:
    """The pseudonymization key: env LIENTHONG_PSEUDONYM_KEY, else the password of Airflow connection
    `lienthong_pseudonym_key`. Missing when `required` is a clear error."""
    value = passed_env(KEY_ENV)
    if not value and required:
        try:
            from lienthong.connections import get_connection

            value = get_connection(KEY_CONN_ID).password
        except Exception:  # no Airflow, or no such connection: reported below
            value = None
    if not value:
        if required:
            raise RuntimeError(f"an agency uses 'pseudonymized' columns but no key is set: set {KEY_ENV} (or the "
                               f"password of connection {KEY_CONN_ID!r}) to a secret of at least {MIN_KEY_BYTES} bytes")
        return None
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise RuntimeError(f"{KEY_ENV} is too short: at least {MIN_KEY_BYTES} bytes")
    return key


def _nested_filter(column: str, rows: dict[str, tuple[Any, ...]]) -> sql.Composable:
    """The items of a jsonb list that pass the row filter, in their order; NULL when none (as published)."""
    ident = sql.Identifier(column)
    conds = sql.SQL(" AND ").join(item_conditions(rows))
    return sql.SQL("(CASE WHEN jsonb_typeof({c}) = 'array' THEN (SELECT jsonb_agg(_item ORDER BY _ord) FROM "
                   "jsonb_array_elements({c}) WITH ORDINALITY AS _items(_item, _ord) WHERE {w}) END)").format(
        c=ident, w=conds)


def column_expression(grant: DatasetGrant, contract: Contract, column: str, agency: str) -> sql.Composable:
    """The SELECT-list expression of one column of `agency`'s view (mode 'hidden' has none)."""
    mode = grant.columns[column]
    f = contract.field(column)
    ident = sql.Identifier(column)
    value: sql.Composable = _nested_filter(column, grant.nested_rows[column]) if column in grant.nested_rows else ident
    if mode == "visible":
        return value if value is ident else sql.SQL("{} AS {}").format(value, ident)
    if mode == "pseudonymized":
        return sql.SQL("{}.pseudonym({}, ({})::text) AS {}").format(
            sql.Identifier(PRIVATE_SCHEMA), sql.Literal(agency), value, ident)
    if mode == "masked":
        kind = f.custom.get("mask") or "year"
        fn = sql.Identifier(ACCESS_SCHEMA, f"mask_{kind}")
        if kind == "address":
            return sql.SQL("{}({}, {}) AS {}").format(fn, ident, sql.Identifier(f.custom["maskCommuneColumn"]), ident)
        return sql.SQL("{}({}) AS {}").format(fn, ident, ident)
    raise ValueError(f"column {column} is hidden")


def view_select(grant: DatasetGrant, contract: Contract, agency: str, *, source: str | None = None,
                extra: tuple[str, ...] = ()) -> sql.Composed:
    """SELECT ... FROM published.<dataset> [WHERE row filter] for `agency`'s view; from another table of
    the published schema with the same columns (`source`, e.g. the change feed's), its `extra` columns
    passed through as they are."""
    cols = sql.SQL(", ").join([column_expression(grant, contract, c, agency) for c in grant.readable]
                              + [sql.Identifier(c) for c in extra])
    query = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(PUBLISHED_SCHEMA, source or contract.name))
    if grant.rows:
        conds = [sql.SQL("{} IN ({})").format(sql.Identifier(c), sql.SQL(", ").join(map(sql.Literal, values)))
                 for c, values in grant.rows.items()]
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds)
    return query


@dataclass
class AgencyReport:
    role: str
    schema: str
    views: list[str] = field(default_factory=list)
    feeds: list[str] = field(default_factory=list)  # datasets whose change feed the agency can read
    skipped: dict[str, str] = field(default_factory=dict)
    password_set: bool = False
    limits: dict[str, int | str] = field(default_factory=dict)
    # restrictions the server would not let the platform's role apply (e.g. superuser-only settings)
    not_enforced: list[str] = field(default_factory=list)


@dataclass
class AccessReport:
    agencies: dict[str, AgencyReport]
    retired_roles: list[str]
    key_fingerprint: str | None
    # what the session log of agency reads (lienthong.sessions) cannot do on this server; empty when it records
    session_log: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"agencies": {n: vars(a) for n, a in self.agencies.items()}, "retired_roles": self.retired_roles,
                "key_fingerprint": self.key_fingerprint, "session_log": self.session_log}


def apply_access(url: str | None = None, agencies_path: str | Path | None = None, *,
                 contracts_dir: str | Path | None = None) -> AccessReport:
    """Create or update every agency's role, schema and views from agencies.yaml, in one transaction.

    Safe to run again (after each publish): agency schemas are rebuilt from the configuration, so a column
    or dataset taken out of the file disappears from the agency's view; an agency taken out of the file
    loses its schema and its login (the role is kept NOLOGIN: roles are cluster-wide and may hold grants in
    other databases). Needs a role that may create roles (CREATEROLE) and owns the published schema."""
    contracts = load_contracts(contracts_dir)
    path = Path(agencies_path or default_agencies_path())
    agencies = load_agencies(path, contracts)
    key = pseudonym_key(required=any(a.uses_pseudonyms for a in agencies.values()))
    report = AccessReport({}, [], key_fingerprint(key) if key else None)
    with connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_access'))")
            ensure_ledger(conn)
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PUBLISHED_SCHEMA)))
            cur.execute(FUNCTIONS_SQL)
            if key:
                _store_keys(conn, key, [a.name for a in agencies.values() if a.uses_pseudonyms])
            _ensure_group(cur)
            database_wide = _restrict_database(cur)
            for agency in agencies.values():
                rep = _apply_agency(conn, agency, contracts, path)
                rep.not_enforced[:0] = database_wide
                rep.not_enforced += _write_rights(cur, agency.role)
                report.agencies[agency.name] = rep
            report.retired_roles = _retire(conn, agencies)
            # after the views: each login of an agency role is recorded with the versions they serve
            from lienthong.sessions import install_session_log

            report.session_log = install_session_log(conn, agencies)
    for name, a in report.agencies.items():
        log.info("access applied: agency %s (role %s): views %s%s", name, a.role, a.views,
                 f"; skipped {a.skipped}" if a.skipped else "")
        if a.not_enforced:
            log.warning("agency %s (role %s): NOT enforced on this server: %s", name, a.role, "; ".join(a.not_enforced))
    return report


def _try(cur, statement: sql.Composable | str) -> bool:
    """Run one statement; False (and nothing changed) when the platform's role lacks the privilege for it."""
    cur.execute("SAVEPOINT try_restrict")
    try:
        cur.execute(statement)
    except pg_errors.InsufficientPrivilege:
        cur.execute("ROLLBACK TO SAVEPOINT try_restrict")
        return False
    cur.execute("RELEASE SAVEPOINT try_restrict")
    return True


def _restrict_database(cur) -> list[str]:
    """Take from PUBLIC (and so from every agency role) what would let a reader write: TEMP and CREATE on the
    database, CREATE on schema public, the functions that create large objects. PostgreSQL grants these to
    PUBLIC by default and cannot deny a PUBLIC privilege to one role, so they go for all; the platform's own
    role keeps TEMP. Returns what the server refused."""
    db = sql.Identifier(cur.connection.info.dbname)
    refused = []
    cur.execute(sql.SQL("REVOKE TEMPORARY, CREATE ON DATABASE {} FROM PUBLIC").format(db))
    cur.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO CURRENT_USER").format(db))
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'public'")
    if cur.fetchone() and not _try(cur, "REVOKE CREATE ON SCHEMA public FROM PUBLIC"):
        refused.append("CREATE on schema public could not be revoked from PUBLIC")
    for fn in _LARGE_OBJECT_CREATORS:
        # REVOKE by a non-owner is only a warning: the result is checked per role in _write_rights.
        _try(cur, f"REVOKE EXECUTE ON FUNCTION pg_catalog.{fn} FROM PUBLIC")
    return refused


def _write_rights(cur, role: str) -> list[str]:
    """Anything `role` could still create, write or keep in the warehouse (empty when it is read-only)."""
    cur.execute("""SELECT 'TEMP on the database' WHERE has_database_privilege(%(r)s, current_database(), 'TEMP')
                   UNION ALL SELECT 'CREATE on the database' WHERE has_database_privilege(%(r)s, current_database(), 'CREATE')
                   UNION ALL SELECT 'CREATE on schema ' || nspname FROM pg_namespace
                     WHERE has_schema_privilege(%(r)s, oid, 'CREATE')""", {"r": role})
    rights = [r[0] for r in cur.fetchall()]
    for fn in _LARGE_OBJECT_CREATORS:
        cur.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, f"pg_catalog.{fn}"))
        if cur.fetchone()[0]:
            rights.append(f"EXECUTE on {fn} (creates large objects)")
    return rights


def _quiet(cur) -> None:
    """Keep secrets-derived statements out of the server log when we may (superuser-only settings)."""
    for setting in ("log_statement", "log_min_duration_statement"):
        cur.execute("SAVEPOINT quiet")
        try:
            cur.execute(sql.SQL("SET LOCAL {} = {}").format(
                sql.Identifier(setting), sql.Literal("none" if setting == "log_statement" else -1)))
            cur.execute("RELEASE SAVEPOINT quiet")
        except pg_errors.InsufficientPrivilege:
            cur.execute("ROLLBACK TO SAVEPOINT quiet")


def _store_keys(conn: connection, key: bytes, agencies: list[str]) -> None:
    """Each agency's padded key (derived from the platform `key`); agencies that no longer use one lose it."""
    fp = key_fingerprint(key)
    with conn.cursor() as cur:
        _quiet(cur)
        cur.execute(f"SELECT DISTINCT fingerprint FROM {PRIVATE_SCHEMA}.agency_pseudonym_key")
        old = {r[0] for r in cur.fetchall()} - {fp}
        if old:
            log.warning("the pseudonymization key changed (fingerprint %s -> %s): every pseudonym changes",
                        ", ".join(sorted(old)), fp)
        cur.execute(f"DELETE FROM {PRIVATE_SCHEMA}.agency_pseudonym_key WHERE NOT (agency = ANY(%s))", (agencies,))
        for agency in agencies:
            inner, outer = hmac_pads(agency_key(key, agency))
            cur.execute(
                f"""INSERT INTO {PRIVATE_SCHEMA}.agency_pseudonym_key AS k (agency, inner_pad, outer_pad, fingerprint, set_at)
                    VALUES (%s, %s, %s, %s, now())
                    ON CONFLICT (agency) DO UPDATE SET inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad,
                      fingerprint = EXCLUDED.fingerprint,
                      set_at = CASE WHEN k.fingerprint = EXCLUDED.fingerprint THEN k.set_at ELSE now() END""",
                (agency, inner, outer, fp),
            )


def _ensure_group(cur) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (AGENCY_GROUP,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(AGENCY_GROUP)))
    cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(sql.Identifier(AGENCY_GROUP)),
                ("lienthong.access: group of the agency roles it manages",))


def _is_member(cur, role: str) -> bool:
    cur.execute("""SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                   JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = %s AND g.rolname = %s""", (role, AGENCY_GROUP))
    return cur.fetchone() is not None


def _ensure_role(cur, agency: Agency, path: Path) -> bool:
    role = sql.Identifier(agency.role)
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (agency.role,))
    row = cur.fetchone()
    if row is None:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(AGENCY_GROUP), role))
    elif row[0] or not _is_member(cur, agency.role):
        # Never take over a role this module did not create (e.g. `role: postgres` by mistake).
        raise AccessConfigError(path, f"role {agency.role!r} exists and is not an agency role "
                                f"managed by lienthong (not a member of {AGENCY_GROUP}); choose another name",
                                agency=agency.name)
    cur.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
                        "CONNECTION LIMIT {}").format(role, sql.Literal(agency.limits["connections"])))
    password = passed_env(agency.password_env)
    if password:
        verifier = encrypt_password(password, agency.role, cur.connection, "scram-sha-256")
        cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(verifier)))
    elif row is None:
        log.warning("agency %s: %s is not set; role %s created NOLOGIN", agency.name, agency.password_env, agency.role)
    cur.execute(sql.SQL("COMMENT ON ROLE {} IS %s").format(role), (f"lienthong agency {agency.name}: {agency.title}",))
    return bool(password)


def _published_columns(cur, dataset: str) -> set[str] | None:
    cur.execute("""SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
                (PUBLISHED_SCHEMA, dataset))
    cols = {r[0] for r in cur.fetchall()}
    return cols or None


def _apply_agency(conn: connection, agency: Agency, contracts: dict[str, Contract], path: Path) -> AgencyReport:
    rep = AgencyReport(agency.role, agency.schema)
    schema, role = sql.Identifier(agency.schema), sql.Identifier(agency.role)
    with conn.cursor() as cur:
        _quiet(cur)
        rep.password_set = _ensure_role(cur, agency, path)
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(conn.info.dbname), role))
        cur.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
            role, sql.Identifier(conn.info.dbname), schema))
        rep.limits = dict(agency.limits)
        for setting, value in {**agency.limits, **_ROLE_LOGGING}.items():
            if setting == "connections":
                continue
            # temp_file_limit is a superuser setting: a role cannot raise it for itself. The timeouts are
            # defaults a session could change with SET; PostgreSQL has no per-role ceiling for them.
            if not _try(cur, sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    role, sql.Identifier(conn.info.dbname), sql.Identifier(setting), sql.Literal(value))):
                rep.not_enforced.append(f"{setting} = {value} (the platform's role may not set it)")
        # Rebuilt from the configuration each time: what the file no longer grants disappears.
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        cur.execute(sql.SQL("COMMENT ON SCHEMA {} IS %s").format(schema), (f"{agency.title}. Purpose: {agency.purpose}",))
        for private in (PUBLISHED_SCHEMA, OPS_SCHEMA, PRIVATE_SCHEMA):
            cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC, {}").format(sql.Identifier(private), role))
            cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM PUBLIC, {}").format(sql.Identifier(private), role))
        cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(sql.SQL(PSEUDONYM_FN), role))
        for ds, grant in agency.grants.items():
            contract = contracts[ds]
            have = _published_columns(cur, ds)
            needed = set(grant.readable) | set(grant.rows) | {
                contract.field(c).custom["maskCommuneColumn"] for c in grant.readable
                if grant.columns[c] == "masked" and contract.field(c).custom.get("mask") == "address"}
            if have is None:
                rep.skipped[ds] = f"{PUBLISHED_SCHEMA}.{ds} does not exist (not published yet)"
            elif needed - have:
                rep.skipped[ds] = (f"{PUBLISHED_SCHEMA}.{ds} lacks {sorted(needed - have)} "
                                   "(published under an older contract version)")
            if ds in rep.skipped:
                log.warning("agency %s: dataset %s skipped: %s", agency.name, ds, rep.skipped[ds])
                continue
            view = sql.Identifier(agency.schema, ds)
            cur.execute(sql.SQL("CREATE VIEW {} WITH (security_barrier) AS {}").format(
                view, view_select(grant, contract, agency.name)))
            modes = ", ".join(f"{c}: {m}" for c, m in grant.columns.items() if m != "visible")
            cur.execute(sql.SQL("COMMENT ON VIEW {} IS %s").format(view),
                        (f"{contract.id} for agency {agency.name}; {modes or 'all columns visible'}"
                         + (f"; rows where {dict(grant.rows)}" if grant.rows else "")
                         + "".join(f"; {c} items where {dict(r)}" for c, r in grant.nested_rows.items()),))
            cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, role))
            rep.views.append(ds)
            if _published_columns(cur, feed.changes_table(ds)) is not None:
                _feed_views(cur, agency, grant, contract, role)
                rep.feeds.append(ds)
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
        if agency.uses_pseudonyms:
            # EXECUTE only: without USAGE on the private schema the role cannot name the function itself.
            cur.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(PSEUDONYM_FN), role))
    return rep


def _feed_views(cur, agency: Agency, grant: DatasetGrant, contract: Contract, role: sql.Identifier) -> None:
    """The agency's change feed of one dataset: view `<dataset>_change_log` (the kept change rows, masked and
    filtered as its view of the dataset), view `<dataset>_feed_window` (the first version the feed can be
    followed from, and the current one) and function `<dataset>_changes(since_version)`, the changes after
    `since_version` in order, refusing a version outside the window with an error that says what to do, and
    recording the read in the session log (`lienthong.sessions.FEED_FUNCTION`)."""
    from lienthong.sessions import FEED_FUNCTION

    ds = contract.name
    log_view = sql.Identifier(agency.schema, feed.change_log_view(ds))
    window = sql.Identifier(agency.schema, feed.window_view(ds))
    function = sql.Identifier(agency.schema, feed.agency_function(ds))
    # Ordered in the view: a reader's LIMIT without an ORDER BY of its own is then planned for the first rows
    # (an outer ORDER BY over a security-barrier view makes PostgreSQL plan the view for all its rows, i.e.
    # every change kept joined to its row version, for each page of the lookup service's feed).
    cur.execute(sql.SQL("CREATE VIEW {} WITH (security_barrier) AS {} ORDER BY _commit_version, _seq").format(
        log_view, view_select(grant, contract, agency.name, source=feed.changes_table(ds),
                              extra=tuple(feed.META_COLUMNS))))
    cur.execute(sql.SQL("CREATE VIEW {} AS SELECT min(version) AS first_version, max(version) AS current_version "
                        "FROM {}").format(window, sql.Identifier(PUBLISHED_SCHEMA, feed.feed_table(ds))))
    # SECURITY DEFINER with a pinned search_path: it records the read in the session log (which the agency's
    # role can neither read nor write) before it returns the rows its views give.
    cur.execute(sql.SQL("""CREATE FUNCTION {function}(since_version integer) RETURNS SETOF {log_view}
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            w record;
        BEGIN
            SELECT first_version, current_version INTO w FROM {window};
            IF since_version IS NULL OR since_version < w.first_version THEN
                RAISE EXCEPTION USING ERRCODE = 'data_exception', MESSAGE = format(
                    '%s: the change feed is kept from version %s on; version %s is older (or null): read %s again '
                    '(with current_version from %s in the same transaction) and follow the feed from there',
                    {name}, w.first_version, since_version, {snapshot_text}, {window_text});
            END IF;
            IF since_version > w.current_version THEN
                RAISE EXCEPTION USING ERRCODE = 'data_exception', MESSAGE = format(
                    '%s: version %s is newer than the current version %s', {name}, since_version,
                    w.current_version);
            END IF;
            IF to_regprocedure({record}) IS NOT NULL THEN
                PERFORM {record_call}({name}, since_version);
            END IF;
            RETURN QUERY SELECT * FROM {log_view} c WHERE c._commit_version > since_version
                ORDER BY c._commit_version, c._seq;
        END
        $body$""").format(function=function, log_view=log_view, window=window, name=sql.Literal(ds),
                          snapshot_text=sql.Literal(f"{agency.schema}.{ds}"),
                          window_text=sql.Literal(f"{agency.schema}.{feed.window_view(ds)}"),
                          record=sql.Literal(FEED_FUNCTION), record_call=sql.SQL(FEED_FUNCTION.split("(")[0])))
    cur.execute(sql.SQL("COMMENT ON FUNCTION {}(integer) IS %s").format(function),
                (f"{contract.id} for agency {agency.name}: the rows changed after a version, as {agency.schema}.{ds} "
                 "shows them (_change_type, _commit_version, _commit_timestamp, _seq)",))
    cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(integer) FROM PUBLIC").format(function))
    cur.execute(sql.SQL("GRANT SELECT ON {}, {} TO {}").format(log_view, window, role))
    cur.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}(integer) TO {}").format(function, role))


def _retire(conn: connection, agencies: dict[str, Agency]) -> list[str]:
    """Agencies no longer configured: drop their schema here, take their login away."""
    configured = {a.role for a in agencies.values()}
    retired = []
    with conn.cursor() as cur:
        cur.execute("""SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                       JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s ORDER BY 1""", (AGENCY_GROUP,))
        for (role,) in cur.fetchall():
            if role in configured:
                continue
            cur.execute("""SELECT n.nspname FROM pg_namespace n JOIN pg_roles r ON r.rolname = %s
                           WHERE n.nspname LIKE 'agency\\_%%' AND has_schema_privilege(r.oid, n.oid, 'USAGE')""", (role,))
            for (schema,) in cur.fetchall():
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(sql.SQL(PSEUDONYM_FN), sql.Identifier(role)))
            retired.append(role)
            log.warning("agency role %s is no longer configured: schema dropped, login removed", role)
    return retired
