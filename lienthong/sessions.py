"""The session log of agency reads: which published versions each PostgreSQL session of an agency role could read.

Owns, in schema `lienthong_ops` (created idempotently by `install_session_log`, which `lienthong.access.apply_access`
calls in its transaction):

* `agency_role`: role -> agency, the agency's schema and the datasets it is granted (rewritten by every
  `install_session_log` from agencies.yaml);
* `agency_session`: one row per login of a member of the group `lienthong_agency`: when, role, agency, backend
  pid and start, client address, application_name, and the purpose and case id the client declared in the
  custom settings `lienthong.purpose` / `lienthong.case_id` (startup options
  `-c lienthong.purpose=... -c lienthong.case_id=...`; read at login, a later SET is not recorded);
* `session_version`: per session, the version each granted dataset's view served at login (`how = 'login'`:
  the newest `lienthong_ops.publication` row of each granted dataset whose agency view exists), and each version
  a publish switched in while the session was open (`how = 'switch'`, written by `record_switch` in the
  publish transaction), and the versions whose changes it read from an agency's change feed (`how = 'feed'`,
  `record_feed_read`, from the version its copy holds on);
* the login event trigger (PostgreSQL 17+, superuser to create) and its SECURITY DEFINER function. The function
  returns at once for roles outside `lienthong_agency` (and superusers) and reads nothing but the role catalog
  for them, so a missing or broken log table never blocks the platform's own role; for an agency role it fails
  CLOSED: no record, no login.

`bulk_reads_of` answers, for one person, which of those reads could show the person: the versions still kept
(retention drops old version tables; reads of those are counted in `BulkReads.unchecked`, never guessed), checked
under the current agencies.yaml grants (hidden columns and row filters), newest session first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg2 import sql
from psycopg2.extensions import connection
from psycopg2.extras import Json

from lienthong.contracts import Contract, Field
from lienthong.jsonfilter import item_conditions
from lienthong.runs import newest_publication_sql, publications, publications_since_sql
from lienthong.runs.schema import OPS_SCHEMA

if TYPE_CHECKING:  # lienthong.access imports this module (apply_access installs the log)
    from lienthong.access import Agency, DatasetGrant

log = logging.getLogger(__name__)

AGENCY_GROUP = "lienthong_agency"  # lienthong.access.AGENCY_GROUP, named here as access imports this module

PERSON = "person"
IDENTIFIES = "identifies"  # customProperty of a column or item member whose value is the ID of that entity
TRIGGER = "lienthong_agency_login"
FUNCTION = f"{OPS_SCHEMA}.record_agency_login()"
MIN_SERVER = 170000  # login event triggers
_SETTING_MAX = 200  # characters kept of a declared purpose / case id

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.agency_role (
  role text PRIMARY KEY,
  agency text NOT NULL UNIQUE,
  agency_schema text NOT NULL,
  datasets text[] NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {OPS_SCHEMA}.agency_role IS
  'lienthong.sessions: each agency role, its agency, schema and granted datasets (written when access is applied)';
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.agency_session (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL,
  backend_start timestamptz NOT NULL,
  role text NOT NULL,
  agency text NOT NULL,
  pid integer NOT NULL,
  client_addr inet,
  application_name text,
  purpose text,
  case_id text
);
CREATE INDEX IF NOT EXISTS agency_session_backend ON {OPS_SCHEMA}.agency_session (pid, backend_start);
CREATE INDEX IF NOT EXISTS agency_session_at ON {OPS_SCHEMA}.agency_session (at);
COMMENT ON TABLE {OPS_SCHEMA}.agency_session IS
  'lienthong.sessions: one row per login of an agency role (login event trigger), with its declared purpose';
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.session_version (
  session_id bigint NOT NULL REFERENCES {OPS_SCHEMA}.agency_session (id) ON DELETE CASCADE,
  dataset text NOT NULL,
  version integer NOT NULL,
  table_name text NOT NULL,
  how text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, dataset, version)
);
CREATE INDEX IF NOT EXISTS session_version_version ON {OPS_SCHEMA}.session_version (dataset, version);
ALTER TABLE {OPS_SCHEMA}.session_version DROP CONSTRAINT IF EXISTS session_version_how_check;
ALTER TABLE {OPS_SCHEMA}.session_version ADD CONSTRAINT session_version_how_check
  CHECK (how IN ('login', 'switch', 'feed'));
COMMENT ON TABLE {OPS_SCHEMA}.session_version IS
  'lienthong.sessions: the published versions an agency session could read (at login, and switched in while open)';
REVOKE ALL ON {OPS_SCHEMA}.agency_role, {OPS_SCHEMA}.agency_session, {OPS_SCHEMA}.session_version FROM PUBLIC;
"""

# Classification reads only the role catalog, so that nothing the platform's tables do can block a login that is
# not an agency's; an error there lets the login through with a warning in the server log (the server cannot
# read its own catalog). Everything after is the agency's login: any error refuses it, with the cause in the
# server log only (client_min_messages is pinned, so a client cannot ask for the detail).
FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION} RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET client_min_messages = warning
AS $fn$
DECLARE
  is_agency boolean;
  r record;
  sid bigint;
BEGIN
  BEGIN
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                   JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                   JOIN pg_catalog.pg_roles u ON u.oid = m.member
                   WHERE u.rolname = session_user AND g.rolname = '{AGENCY_GROUP}' AND NOT u.rolsuper)
      INTO is_agency;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'lienthong session log: cannot tell whether role % is an agency role (%): login not recorded',
      session_user, SQLERRM;
    RETURN;
  END;
  IF NOT is_agency THEN
    RETURN;
  END IF;
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION 'login of agency role % refused: it starts read-only (default_transaction_read_only in the '
      'startup options, or a standby), so the session log cannot record it', session_user
      USING ERRCODE = 'read_only_sql_transaction',
            HINT = 'set default_transaction_read_only after connecting; agency roles cannot write anyway';
  END IF;
  BEGIN
    SELECT agency, agency_schema, datasets INTO r FROM {OPS_SCHEMA}.agency_role WHERE role = session_user;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'role % is in {AGENCY_GROUP} but has no agency in {OPS_SCHEMA}.agency_role', session_user;
    END IF;
    INSERT INTO {OPS_SCHEMA}.agency_session (at, backend_start, role, agency, pid, client_addr, application_name,
                                             purpose, case_id)
    SELECT now(), coalesce(a.backend_start, now()), session_user, r.agency, pg_backend_pid(), inet_client_addr(),
           left(current_setting('application_name', true), {_SETTING_MAX}),
           left(nullif(current_setting('lienthong.purpose', true), ''), {_SETTING_MAX}),
           left(nullif(current_setting('lienthong.case_id', true), ''), {_SETTING_MAX})
    FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = pg_backend_pid()
    RETURNING id INTO sid;
    -- a new statement, so a new snapshot: a publish holding the session table's lock has committed by now
    INSERT INTO {OPS_SCHEMA}.session_version (session_id, dataset, version, table_name, how)
    SELECT sid, p.dataset, p.version, p.table_name, 'login'
    FROM unnest(r.datasets) AS d(dataset)
    CROSS JOIN LATERAL ({newest_publication_sql("d.dataset")}) AS p
    WHERE to_regclass(format('%I.%I', r.agency_schema, d.dataset)) IS NOT NULL;
  EXCEPTION WHEN OTHERS THEN
    RAISE LOG 'lienthong session log: login of agency role % not recorded: % (%)', session_user, SQLERRM, SQLSTATE;
    RAISE EXCEPTION 'login of agency role % refused: the session log could not record it', session_user
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'agency reads are recorded per session; see the server log';
  END;
END
$fn$;
REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC;
"""


# What an agency's `<dataset>_changes(since)` (lienthong.access) records before it returns rows: the versions
# whose changes it reads, and the version the copy it applies them to holds (`since`: the rows a delete or a
# pre-image removes are in it), as versions this session read (`how = 'feed'`). Only for the calling session and
# a dataset its agency is granted; nothing where the login was not recorded (no login trigger on this server).
FEED_FUNCTION = f"{OPS_SCHEMA}.record_feed_read(text, integer)"
FEED_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {OPS_SCHEMA}.record_feed_read(feed_dataset text, since_version integer) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  sid bigint;
BEGIN
  SELECT s.id INTO sid FROM {OPS_SCHEMA}.agency_session s
  JOIN pg_catalog.pg_stat_activity a ON a.pid = s.pid AND a.backend_start = s.backend_start
  JOIN {OPS_SCHEMA}.agency_role r ON r.role = s.role AND feed_dataset = ANY (r.datasets)
  WHERE s.pid = pg_backend_pid() AND s.role = session_user
  ORDER BY s.id DESC LIMIT 1;
  IF sid IS NULL THEN
    RETURN;
  END IF;
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION 'the change feed of % records each read in the session log: read it in a read-write '
      'transaction (an agency role can write nothing anyway)', feed_dataset
      USING ERRCODE = 'read_only_sql_transaction';
  END IF;
  INSERT INTO {OPS_SCHEMA}.session_version (session_id, dataset, version, table_name, how)
  SELECT sid, p.dataset, p.version, p.table_name, 'feed'
  FROM ({publications_since_sql("feed_dataset", "since_version")}) AS p
  ON CONFLICT DO NOTHING;
END
$fn$;
REVOKE ALL ON FUNCTION {FEED_FUNCTION} FROM PUBLIC;
"""


# --- installation (lienthong.access.apply_access) ---------------------------------------------------------------


def install_session_log(conn: connection, agencies: dict[str, Agency]) -> list[str]:
    """Create the session-log tables, the login function and trigger, and write each agency role's agency and
    granted datasets, in the caller's transaction. Returns what this server cannot do (PostgreSQL older than 17,
    a platform role that is no superuser and so cannot create event triggers), logged as warnings."""
    problems: list[str] = []
    with conn.cursor() as cur:
        cur.execute(DDL)
        cur.execute(FEED_FUNCTION_SQL)
        _write_roles(cur, agencies)
        cur.execute("SELECT current_setting('server_version_num')::int, rolsuper FROM pg_roles WHERE rolname = current_user")
        version, superuser = cur.fetchone()
        if version < MIN_SERVER:
            problems.append(f"agency sessions are not recorded: PostgreSQL {version // 10000} has no login event "
                            "trigger (17 or newer needed)")
        elif not superuser:
            problems.append("agency sessions are not recorded: the platform's role is no superuser and only a "
                            f"superuser may create the login event trigger {TRIGGER}")
        else:
            cur.execute(FUNCTION_SQL)
            _ensure_trigger(cur)
            cur.execute("SELECT current_setting('event_triggers')")
            if cur.fetchone()[0] != "on":
                problems.append("agency sessions are not recorded: event_triggers is off on this server")
        cur.execute("SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')")
        if not cur.fetchone()[0]:
            problems.append("versions switched in during an agency session are not recorded: the platform's role "
                            "cannot see other sessions' start times (grant it pg_read_all_stats)")
    for p in problems:
        log.warning("session log: %s", p)
    return problems


def _write_roles(cur: Any, agencies: dict[str, Agency]) -> None:
    cur.execute(f"DELETE FROM {OPS_SCHEMA}.agency_role")
    for a in agencies.values():
        cur.execute(f"""INSERT INTO {OPS_SCHEMA}.agency_role (role, agency, agency_schema, datasets)
                        VALUES (%s, %s, %s, %s)""", (a.role, a.name, a.schema, sorted(a.grants)))


def _ensure_trigger(cur: Any) -> None:
    cur.execute("SELECT evtenabled FROM pg_event_trigger WHERE evtname = %s", (TRIGGER,))
    row = cur.fetchone()
    if row is None:
        cur.execute(sql.SQL("CREATE EVENT TRIGGER {} ON login EXECUTE FUNCTION {}").format(
            sql.Identifier(TRIGGER), sql.SQL(FUNCTION)))
    elif row[0] != "O":
        cur.execute(sql.SQL("ALTER EVENT TRIGGER {} ENABLE").format(sql.Identifier(TRIGGER)))
    cur.execute(sql.SQL("COMMENT ON EVENT TRIGGER {} IS %s").format(sql.Identifier(TRIGGER)),
                ("lienthong.sessions: records each login of an agency role; refuses it when it cannot",))


# --- the publish hook -----------------------------------------------------------------------------------------


def record_switch(cur: Any, dataset: str, version: int, table_name: str) -> int:
    """In the publish transaction that switches `dataset` to `version`: a 'switch' row for every open session
    of an agency granted the dataset. Nothing (0) where the session log was never installed.

    Takes the session table in SHARE mode until the publish commits (milliseconds: the hook runs last), so a
    login either committed before (and is seen here) or reads the publication after this commit."""
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname IN ('agency_session', 'session_version', 'agency_role')",
                (OPS_SCHEMA,))
    if cur.fetchone()[0] < 3:
        return 0
    cur.execute(f"LOCK TABLE {OPS_SCHEMA}.agency_session IN SHARE MODE")
    cur.execute(f"""INSERT INTO {OPS_SCHEMA}.session_version (session_id, dataset, version, table_name, how)
                    SELECT s.id, %(d)s, %(v)s, %(t)s, 'switch'
                    FROM pg_stat_activity a
                    JOIN {OPS_SCHEMA}.agency_session s ON s.pid = a.pid AND s.backend_start = a.backend_start
                    JOIN {OPS_SCHEMA}.agency_role r ON r.role = s.role
                    WHERE a.datname = current_database() AND %(d)s = ANY (r.datasets)
                    ON CONFLICT DO NOTHING""", {"d": dataset, "v": version, "t": table_name})
    return int(cur.rowcount)


# --- reads of one person --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkRead:
    """A session of an agency role whose view served a version of a dataset containing the person."""

    at: datetime  # the session's login
    agency: str
    dataset: str
    version: int
    purpose: str | None  # declared by the client (lienthong.purpose), else None
    case_id: str | None
    session_id: int
    legal_basis: str | None = None  # the bases of the declared purpose, else of the grant's purposes
    embargo_until: datetime | None = None  # login + the largest embargo_days among those purposes


class BulkReads(list[BulkRead]):
    """`bulk_reads_of`'s answer, plus what could not be checked: `unchecked` reads (session, dataset, version)
    of versions whose table retention dropped, and of agencies no longer configured."""

    def __init__(self, reads: list[BulkRead], unchecked: int = 0, unchecked_versions: list[tuple[str, int]] | None = None):
        super().__init__(reads)
        self.unchecked = unchecked
        self.unchecked_versions = unchecked_versions or []


@dataclass(frozen=True)
class PersonColumns:
    """Where a dataset holds persons: top-level columns holding a person's ID, nested lists of person items
    (column -> the item members holding the ID)."""

    top: tuple[str, ...] = ()
    nested: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.top or self.nested)


def _entities(value: Any) -> set[str]:
    return set() if value is None else {value} if isinstance(value, str) else set(value)


def _identifies_person(f: Field) -> bool:
    return PERSON in _entities(f.custom.get(IDENTIFIES))


def person_columns(contract: Contract) -> PersonColumns:
    """From the contract: columns marked `identifies: person` (else, in a dataset whose `entity` is person, its
    single-column primary key), and nested lists whose `itemEntity` includes person with the item members marked
    `identifies: person`."""
    top = tuple(f.name for f in contract.fields if _identifies_person(f))
    if not top and PERSON in _entities(contract.custom.get("entity")) and len(contract.primary_key) == 1:
        top = tuple(contract.primary_key)
    nested = {f.name: tuple(c.name for c in f.children if _identifies_person(c)) for f in contract.fields
              if f.logical_type == "array" and f.item_type == "object" and PERSON in _entities(f.custom.get("itemEntity"))}
    return PersonColumns(top, {c: m for c, m in nested.items() if m})


def _values(values: tuple[Any, ...]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Literal, values))


def _row_filter(grant: DatasetGrant) -> list[sql.Composable]:
    return [sql.SQL("{} IN ({})").format(sql.Identifier(c), _values(v)) for c, v in grant.rows.items()]


def _ids(column: str, member: str) -> sql.Composable:
    """The `member` values of a jsonb list's items, as a jsonb array: the expression `index_person_lists`
    indexes (the same text, so the planner matches it)."""
    return sql.SQL("jsonb_path_query_array({}, {}::jsonpath)").format(
        sql.Identifier(column), sql.Literal(f"$[*].{json.dumps(member)}"))


def _contains(column: str, member: str, person: str) -> sql.Composable:
    """Indexable containment: the list has an item whose `member` is `person`."""
    return sql.SQL("{} @> {}").format(_ids(column, member), sql.Literal(Json([person])))


def index_person_lists(cur: Any, contract: Contract, table_name: str, schema: str = "published") -> list[str]:
    """In the publish transaction: a GIN index on the person IDs of each nested person list of a new version
    table (only the IDs, not the whole jsonb: half the size and build time), so that `bulk_reads_of` finds a
    person's rows without reading the table. Returns the index names."""
    names = []
    for i, (column, members) in enumerate(person_columns(contract).nested.items()):
        for j, member in enumerate(members):
            name = f"{table_name}_person{i}_{j}"
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (({}) jsonb_path_ops)").format(
                sql.Identifier(name), sql.Identifier(schema, table_name), _ids(column, member)))
            names.append(name)
    return names


def _item_passes(column: str, member: str, person: str, rows: dict[str, tuple[Any, ...]]) -> sql.Composable:
    """The person's item itself passes the nested row filter carried into this list."""
    conds = [sql.SQL("_i ->> {} = {}").format(sql.Literal(member), sql.Literal(person)), *item_conditions(rows, "_i")]
    return sql.SQL("EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({c}) = 'array' THEN {c} END) "
                   "AS _items(_i) WHERE {w})").format(c=sql.Identifier(column), w=sql.SQL(" AND ").join(conds))


def _match(person: str, where: PersonColumns, grant: DatasetGrant, have: set[str]) -> sql.Composable | None:
    """The rows of a version table that show `person` to the agency of `grant` (None: none can). A row filter
    column the (older) table lacks makes the agency's view impossible: None."""
    if any(c not in have for c in grant.rows):
        return None
    arms: list[sql.Composable] = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(person))
                                  for c in where.top if c in have]
    for col, members in where.nested.items():
        if col not in have or grant.columns.get(col, "hidden") == "hidden":
            continue
        for m in members:
            arm = _contains(col, m, person)
            if col in grant.nested_rows:
                arm = sql.SQL("({} AND {})").format(arm, _item_passes(col, m, person, grant.nested_rows[col]))
            arms.append(arm)
    if not arms:
        return None
    found = sql.SQL("({})").format(sql.SQL(" OR ").join(arms))
    return sql.SQL(" AND ").join([found, *_row_filter(grant)])


def _any_arm(person: str, where: PersonColumns, have: set[str]) -> sql.Composable:
    """Rows holding `person` anywhere (what the per-agency checks narrow): index-friendly, one OR arm per place."""
    arms: list[sql.Composable] = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(person))
                                  for c in where.top if c in have]
    arms += [_contains(col, m, person) for col, members in where.nested.items() if col in have for m in members]
    return sql.SQL(" OR ").join(arms)


def _tables(cur: Any, names: list[str]) -> dict[str, set[str]]:
    """The version views (version tables of the older layout) among `names` that still exist, with their
    columns."""
    cur.execute("""SELECT c.relname, array_agg(a.attname::text) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'published'
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'v') GROUP BY c.relname""", (names,))
    return {name: set(cols) for name, cols in cur.fetchall()}


def _agencies_showing(cur: Any, person: str, table: str, where: PersonColumns, have: set[str],
                      grants: dict[str, DatasetGrant]) -> set[str]:
    """The agencies (of `grants`: agency -> its grant of this dataset) whose view of `table` shows `person`."""
    checks = {a: m for a, g in grants.items() if (m := _match(person, where, g, have)) is not None}
    if not checks:
        return set()
    names = list(checks)
    cur.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(sql.SQL("coalesce(bool_or({}), false)").format(checks[a]) for a in names),
        sql.Identifier("published", table), _any_arm(person, where, have)))
    row = cur.fetchone()
    return {a for a, hit in zip(names, row, strict=True) if hit}


def _log_installed(cur: Any) -> bool:
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname IN ('agency_session', 'session_version')", (OPS_SCHEMA,))
    return int(cur.fetchone()[0]) == 2


def bulk_reads_of(conn: connection, citizen_id: str, agencies: dict[str, Agency],
                  contracts: dict[str, Contract]) -> BulkReads:
    """Every (session, dataset, version) where an agency role's session could read a version containing the
    person `citizen_id` as that agency sees it, newest session first.

    Containing the person: a row whose person-ID column is the ID (citizen_profile), or a row with a nested
    person list holding the ID that the agency's grant does not hide, in both cases passing the grant's row
    filter (and the nested row filter carried into the list). Checked against the version tables still kept and
    the CURRENT grants; reads of dropped versions or of agencies no longer in `agencies` are left out and counted
    in `unchecked` (also logged)."""
    with conn.cursor() as cur:
        if not _log_installed(cur):
            return BulkReads([])
        places = {n: w for n, c in contracts.items() if (w := person_columns(c))}
        versions = sorted({(p.dataset, p.version, p.table_name) for p in publications(conn) if p.dataset in places})
        kept = _tables(cur, [t for _, _, t in versions])
        hits: list[tuple[str, int, str]] = []  # (dataset, version, agency)
        for dataset, version, table in versions:
            if table not in kept:
                continue
            grants = {a.name: a.grants[dataset] for a in agencies.values() if dataset in a.grants}
            for agency in _agencies_showing(cur, citizen_id, table, places[dataset], kept[table], grants):
                hits.append((dataset, version, agency))
        gone = sorted((d, v) for d, v, t in versions if t not in kept)
        granted = sorted((a.name, d) for a in agencies.values() for d in a.grants if d in places)
        unchecked = _count_unchecked(cur, sorted(places), gone, granted)
        reads = _reads(cur, hits, agencies)
    if unchecked:
        log.info("bulk reads: %d read(s) of %d dropped version(s) or retired agencies could not be checked",
                 unchecked, len(gone))
    return BulkReads(reads, unchecked, gone)


def _count_unchecked(cur: Any, datasets: list[str], gone: list[tuple[str, int]],
                     granted: list[tuple[str, str]]) -> int:
    """Reads of person datasets that cannot be checked: of dropped versions, or by an agency that is no longer
    configured or no longer granted the dataset (its grant then is unknown)."""
    cur.execute(f"""SELECT count(*) FROM {OPS_SCHEMA}.session_version v JOIN {OPS_SCHEMA}.agency_session s
                      ON s.id = v.session_id
                    WHERE v.dataset = ANY(%s)
                      AND ((v.dataset, v.version) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
                           OR (s.agency, v.dataset) NOT IN (SELECT * FROM unnest(%s::text[], %s::text[])))""",
                (datasets, [d for d, _ in gone], [v for _, v in gone], [a for a, _ in granted], [d for _, d in granted]))
    return int(cur.fetchone()[0])


def _reads(cur: Any, hits: list[tuple[str, int, str]], agencies: dict[str, Agency]) -> list[BulkRead]:
    if not hits:
        return []
    cur.execute(f"""SELECT s.at, s.agency, v.dataset, v.version, s.purpose, s.case_id, s.id
                    FROM unnest(%s::text[], %s::int[], %s::text[]) AS h(dataset, version, agency)
                    JOIN {OPS_SCHEMA}.session_version v ON v.dataset = h.dataset AND v.version = h.version
                    JOIN {OPS_SCHEMA}.agency_session s ON s.id = v.session_id AND s.agency = h.agency
                    ORDER BY s.at DESC, s.id DESC, v.dataset, v.version""",
                ([h[0] for h in hits], [h[1] for h in hits], [h[2] for h in hits]))
    return [_with_basis(BulkRead(*row), agencies[row[1]]) for row in cur.fetchall()]


def _with_basis(read: BulkRead, agency: Agency) -> BulkRead:
    """The legal basis and embargo of the read, when agencies.yaml gives purposes: the declared purpose's if it is
    one of the agency's, else those of the purposes the dataset is granted for."""
    purposes: dict[str, Any] = getattr(agency, "purposes", None) or {}
    if not purposes:
        return read
    if read.purpose in purposes:
        chosen = [purposes[read.purpose]]
    else:
        grant = agency.grants.get(read.dataset)
        chosen = [purposes[p] for p in getattr(grant, "purposes", ()) if p in purposes]
    if not chosen:
        return read
    citations = list(dict.fromkeys(b.citation for p in chosen for b in p.bases))
    days = max(int(p.embargo_days) for p in chosen)
    return BulkRead(read.at, read.agency, read.dataset, read.version, read.purpose, read.case_id, read.session_id,
                    "; ".join(citations), read.at + timedelta(days=days))
