"""One reconciliation run: staged zone -> links -> integrated zone + findings (the `integrate` DAG's last task).

Owns the order of the steps, where the integrated tables go (`<data>/integrated/<dataset>/`, a Delta table
each, one commit per reconciliation replacing its rows; the version is what the ledger names), the run's record in
`lienthong_ops.reconcile_run`, and the findings sync. Logs one line per step with counts and rates. The run's
trained link models are saved beside its outputs (`lienthong.reconcile.explain.save_models`); their paths are
returned as `model_paths`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lienthong import zones
from lienthong.duck import session, spill_root
from lienthong.settings import Settings, load_settings

log = logging.getLogger(__name__)



def integrated_table(integrated_dir: Path, dataset: str) -> Path:
    """Where an integrated dataset's Delta table lives; each reconciliation commits one version of it."""
    return Path(integrated_dir) / dataset


HASH_WINDOW_ROWS = 200_000


def _hash_window(h: Any, part: pa.Table) -> None:
    window = pc.take(part, pa.array(range(part.num_rows), pa.int64()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, window.schema) as writer:
        for batch in window.to_batches():
            writer.write_batch(batch)
    h.update(sink.getvalue().to_pybytes())


def _hash_batches(reader: pa.RecordBatchReader) -> tuple[str, int]:
    """(sha256, rows) of a reader's rows in order, in fixed windows of 200,000 rows, each copied by `take` into
    fresh buffers (a slice or `combine_chunks` keeps the source's offsets and validity buffers, whose bytes
    depend on how DuckDB or Parquet chunked the rows): the same content hashes the same however it was
    chunked or batched (a reconciliation compares it with the last one's to keep an unchanged table's
    version). At most a window and a batch are held."""
    h = hashlib.sha256()
    h.update(reader.schema.remove_metadata().serialize().to_pybytes())
    pending: list[pa.RecordBatch] = []
    held = rows = 0
    for batch in reader:
        pending.append(batch)
        held += batch.num_rows
        rows += batch.num_rows
        while held >= HASH_WINDOW_ROWS:
            table = pa.Table.from_batches(pending, schema=reader.schema)
            _hash_window(h, table.slice(0, HASH_WINDOW_ROWS))
            rest = table.slice(HASH_WINDOW_ROWS)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        _hash_window(h, pa.Table.from_batches(pending, schema=reader.schema))
    return h.hexdigest(), rows


def _hash(table: pa.Table) -> str:
    """`_hash_batches` of a whole table."""
    return _hash_batches(table.to_reader())[0]


def _cursor_reader(con: Any, sql: str) -> pa.RecordBatchReader:
    """The rows of `sql` in session `con`, a batch of 200,000 at a time, read on a cursor of its own (closed
    when the read ends), not on `con`: a statement on `con` while a read is pending (the memory limit a nested
    session sets on every open one, `duck.session`) would end the read early, without an error."""
    cursor = con.cursor()
    reader = cursor.execute(sql).to_arrow_reader(200_000)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            cursor.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


# The staged columns the steps that work on Arrow tables read (duplicates, the person shape, the ID-less and
# organisation passes); the SQL builders read the session's tables. None: every column the session has.
_ARROW_COLUMNS: dict[str, list[str] | None] = {
    "citizen": ["citizen_id", "legacy_id", "full_name", "birth_date", "birth_date_precision", "sex",
                "residence_address", "residence_commune_code", "residence_commune_code_2025", "household_id",
                "source_updated_at"],
    "enterprise": None,
    "legal_representative": None,
    "land_holder": None,
    "certificate": ["province_code", "holder_id", "parcel_id", "deleted"],
    "parcel": ["province_code", "parcel_id", "commune_code_original", "commune_code_2025", "deleted"],
}


def _load_staged(con: Any, staged: Mapping[str, pa.Table | str]) -> dict[str, int]:
    """Each staged input as table `<dataset>` of session `con`; returns the row counts.

    A zone reference (what a run reads) is read by DuckDB from the version's own files: its contract's columns
    in primary-key order (a merged table's files hold rows in commit order; the linkage's sampling and
    tie-breaks must see the same order whatever the history of merges), kept within the session's memory
    limit (spilled beyond it), never whole in Python. An Arrow table (tests, benchmarks) is taken as it is."""
    from lienthong.contracts import contract
    from lienthong.reconcile.integrate import load_staged_table

    rows = {}
    for name, source in staged.items():
        if isinstance(source, pa.Table):
            load_staged_table(con, name, source)
        else:
            c = contract(name)
            zones.register(con, f"{name}_in", source)
            columns = ", ".join(f'"{f}"' for f in c.field_names)
            order = ", ".join(f'"{k}"' for k in c.primary_key)
            con.execute(f"CREATE TABLE {name} AS SELECT {columns} FROM {name}_in ORDER BY {order}")
            con.execute(f"DROP VIEW {name}_in")
        rows[name] = int(con.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
    return rows


def _select(name: str, where: str = "true", columns: list[str] | None = None) -> str:
    """The SQL of the columns of staged table `name` the Arrow steps read (`columns`, else `_ARROW_COLUMNS`),
    of the rows `where` holds (SQL over the table, aliased `t`), in the session's order."""
    columns = columns if columns is not None else _ARROW_COLUMNS[name]
    select = "*" if columns is None else ", ".join(f't."{c}"' for c in columns)
    return f"SELECT {select} FROM {name} t WHERE {where}"


def _arrow(con: Any, name: str, where: str = "true", columns: list[str] | None = None) -> pa.Table:
    """`_select`'s rows as one Arrow table."""
    return con.execute(_select(name, where, columns)).fetch_arrow_table()


def _batches(con: Any, name: str, where: str = "true", columns: list[str] | None = None
             ) -> Callable[[], pa.RecordBatchReader]:
    """A function reading `_select`'s rows of `name` from session `con` a batch at a time (`_cursor_reader`),
    each call a new read: for the steps that go over a table the size of the country (citizens, enterprises,
    land holders) and keep a part of it."""
    return partial(_cursor_reader, con, _select(name, where, columns))


# The rows the ID-less holder pass reads (`idless.idless_holders`: person holders, not deleted, with no
# document number): a superset in SQL (no number, or one with no letter or digit: every number that trims to
# nothing), narrowed by the pass itself, so its inputs are those holders, their certificates and those
# certificates' parcels, not the whole land tables.
_IDLESS_HOLDERS = ("NOT coalesce(t.deleted, false) AND t.holder_type = 'CA_NHAN' AND "
                   "(t.document_number IS NULL OR NOT regexp_matches(t.document_number, '[0-9A-Za-z]'))")
_IDLESS_CERTIFICATES = f"""(t.province_code, t.holder_id) IN (
    SELECT (t.province_code, t.holder_id) FROM land_holder t WHERE {_IDLESS_HOLDERS})"""
_IDLESS_PARCELS = f"""(t.province_code, t.parcel_id) IN (
    SELECT (t.province_code, t.parcel_id) FROM certificate t WHERE {_IDLESS_CERTIFICATES})"""


@dataclass
class Integration:
    """A reconciliation's results, each a Parquet file DuckDB wrote into a scratch folder, so none is held in
    Python while the next is built: the integrated tables before their entity IDs, the findings and the
    clustering for the entity registry; with the metrics and the staged rows read."""

    files: dict[str, Path]
    findings_file: Path
    clusters: Path  # `entities.CLUSTER_SCHEMA` rows
    metrics: dict[str, Any]
    rows: dict[str, int]  # staged rows read, per input
    touched: dict[str, Path] = field(default_factory=dict)  # a change run's recomputed keys per output

    def table(self, name: str, settings: Settings) -> pa.Table:
        """Integrated table `name` as it was built (the masters without their entity IDs)."""
        with session(settings, purpose="integrated-read") as con:
            return con.execute(f"SELECT * FROM read_parquet({zones.sql_text(self.files[name])})").fetch_arrow_table()

    def cluster_table(self) -> pa.Table:
        """The clustering as one Arrow table (`entities.CLUSTER_SCHEMA`)."""
        from lienthong.entities import CLUSTER_SCHEMA

        return pq.read_table(self.clusters).select(CLUSTER_SCHEMA.names).cast(CLUSTER_SCHEMA)

    def findings(self) -> list:
        """The findings, as `lienthong.findings.Finding` objects (built from the file in slices)."""
        return list(_findings_from(self.findings_file))

    def with_entity_ids(self, settings: Settings, members: pa.Table | str, changed_members: pa.Table | None = None
                        ) -> Iterator[tuple[str, Callable[[], pa.RecordBatchReader], pa.Table | None]]:
        """(name, rows, keys) of every integrated table, one at a time, the masters with their `entity_id`
        from the registry's `members` (a table, or the ref of a member version, read by DuckDB). `rows` reads
        the table a batch at a time, in its order (each call a new read, within the loop's step), so no table
        is held whole. `keys`: on a change run (`touched`) given the registry's `changed_members`, the keys in
        which the table may differ from the last reconciliation's (`outputchange`): those recomputed, and a
        master's rows whose cluster has a member whose entity changed; else None."""
        with session(settings, purpose="entity-ids") as con:
            _cluster_entities(con, str(self.clusters), members)
            if changed_members is not None:
                con.register("changed_in", changed_members.select(["kind", "dataset", "record_key"]))
                con.execute(f"""CREATE OR REPLACE TABLE changed_cluster AS
                                SELECT DISTINCT c.kind, c.cluster_key
                                FROM read_parquet({zones.sql_text(self.clusters)}) c
                                SEMI JOIN changed_in m USING (kind, dataset, record_key)""")
                con.unregister("changed_in")
            for name, path in self.files.items():
                relation = f"read_parquet({zones.sql_text(path)})"
                keys = None
                if changed_members is not None and name in self.touched:
                    keys = _change_keys(con, name, relation, self.touched[name])
                if name in _master_cluster():
                    _require_entities(con, name, relation)
                    sql = _entity_id_sql(name, relation)
                else:
                    sql = f"SELECT * FROM {relation}"
                yield name, partial(_cursor_reader, con, sql), keys


def _findings_from(path: Path) -> Iterator[Any]:
    """The findings of a findings file (type, dataset, subject, evidence), as `lienthong.findings.Finding`
    objects, built a slice at a time as they are taken (a whole sync streams them to the warehouse)."""
    from lienthong.reconcile.integrate import as_findings

    for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
        yield from as_findings(list(zip(*(batch.column(i).to_pylist() for i in range(4)), strict=True)))


def findings_state_dir(settings: Settings) -> Path:
    """Where each reconciliation keeps the findings it synced (`<integrated>/_state/findings/`, one Parquet
    file per attempt): the next run syncs only its difference from the file the warehouse was last synced
    with."""
    return settings.integrated_dir / "_state" / "findings"


def _keep_findings(settings: Settings, run_id: str, findings_file: Path) -> Path:
    """A copy of the run's findings file in `findings_state_dir`, written aside and renamed into place; named
    per attempt (a rerun of a run must not overwrite the file its first attempt synced)."""
    folder = findings_state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(run_id.encode()).hexdigest()[:16]}-{uuid.uuid4().hex[:12]}.parquet"
    aside = target.with_suffix(".partial")
    shutil.copyfile(findings_file, aside)
    aside.replace(target)
    return target


def _findings_basis(path: Path) -> str:
    """What the warehouse records for a synced findings file: its path and a fingerprint of everything that
    turns its rows into warehouse rows (the file's columns, each type's severity and agency, each dataset's
    agency), so a difference is never applied across a change of those."""
    from lienthong.findings import TAXONOMY
    from lienthong.reconcile.integrate import AGENCY

    spec = {"columns": pq.read_schema(path).names, "agency_of_dataset": AGENCY,
            "types": {code: [t.severity, t.agency] for code, t in TAXONOMY.items()}}
    return f"{path}#{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]}"


@dataclass
class FindingsDelta:
    """What a run's findings differ by from the last synced set: the findings not in it as they are now,
    the ids no longer found, and how many the run found."""

    changed: list
    gone: list[str]
    found: int


def findings_delta(settings: Settings, previous: Path, current: Path) -> FindingsDelta | None:
    """The difference between two findings files, by their rows (type, dataset, subject and evidence as
    text), computed by DuckDB; only the rows that differ become Python objects. None when either file names
    one finding twice (which of the two a sync keeps is the full sync's rule to apply). A subject is compared
    as text: each rule writes its subject's keys in one order and one type, so equal text is an equal
    finding id."""
    from lienthong.reconcile.integrate import as_findings

    columns = "type, dataset, subject, evidence"
    with session(settings, purpose="findings-delta") as con:
        con.execute(f"CREATE TABLE new AS SELECT {columns} FROM read_parquet({zones.sql_text(current)})")
        con.execute(f"CREATE TABLE old AS SELECT {columns} FROM read_parquet({zones.sql_text(previous)})")
        for table in ("new", "old"):
            twice = con.execute(f"SELECT count(*) FROM (SELECT type, subject FROM {table} GROUP BY ALL "
                                "HAVING count(*) > 1)").fetchone()
            if twice and twice[0]:
                log.info("findings: a finding twice in the %s set; the whole set is synced", table)
                return None
        found = int((con.execute("SELECT count(*) FROM new").fetchone() or (0,))[0])
        added = as_findings(con.execute("SELECT * FROM new EXCEPT SELECT * FROM old").fetchall())
        removed = as_findings(con.execute("SELECT * FROM old EXCEPT SELECT * FROM new").fetchall())
    still = {f.finding_id for f in added}
    return FindingsDelta(changed=added, gone=sorted({f.finding_id for f in removed} - still), found=found)


def _inputs_read_at(url: str) -> datetime | None:
    """When the source data of the staged inputs were read, at the latest for certain (`runs.sources_read_at`
    over every input's source): the newest ingest start each source's staged data reflect, the earliest over
    the sources. Not the run's start nor the staging's: both come after the extract, and a claim of correction
    made between the extract and this run must wait for the next extract."""
    from lienthong import runs
    from lienthong.contracts import contract
    from lienthong.db import connect
    from lienthong.reconcile.sources import INPUT_DATASETS

    sources = {contract(name).custom.get("sourceSystem") for name in INPUT_DATASETS}
    with connect(url) as conn:
        return runs.sources_read_at(conn, sorted(s for s in sources if s), INPUT_DATASETS)


def _judge_claims(url: str, run_id: str, inputs_read_at: datetime | None) -> dict[str, int]:
    """The cases of a run that syncs nothing (its inputs are the last reconciliation's, so the warehouse's
    findings are what it would find): `cases.follow_run` over every type, in a transaction of its own."""
    from lienthong.cases import follow_run, run_case_counts
    from lienthong.db import connect
    from lienthong.findings import TAXONOMY, ensure_findings_schema

    with connect(url) as conn:
        ensure_findings_schema(conn)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_findings_sync'))")  # as a sync
            follow_run(cur, run_id, datetime.now(UTC), list(TAXONOMY), inputs_read_at)
        conn.commit()
        return run_case_counts(conn, run_id)


def _sync_run_findings(conn: Any, run_id: str, settings: Settings, kept: Path, relink: bool,
                       metrics: dict[str, Any], inputs_read_at: datetime | None = None) -> dict[str, int]:
    """Sync the run's findings (the file `kept`) in the caller's transaction: only the difference from the
    file the warehouse was last synced with (`findings.synced_basis`) when that file is there and was made
    under the same finding types; the whole set otherwise, and on a relink (`lienthong rebuild`). The cases
    follow in the same transaction, judging the claims made before `inputs_read_at`."""
    from lienthong.findings import sync_finding_changes, sync_findings, synced_basis

    basis = _findings_basis(kept)
    since = synced_basis(conn)
    previous = Path(since.rpartition("#")[0]) if since else None
    delta, reason = None, None
    if relink:
        reason = "relink"
    elif since is None or previous is None:
        reason = "no basis recorded by the last findings sync"
    elif since.rpartition("#")[2] != basis.rpartition("#")[2]:
        reason = "the finding types or the findings file's columns changed since the last sync"
    elif not previous.is_file():
        reason = f"the last sync's findings file is gone ({previous.name})"
    else:
        try:
            delta = findings_delta(settings, previous, kept)
            reason = None if delta is not None else "a finding twice in one set"
        except Exception as exc:  # the whole set is always a correct sync: fall back to it, and say why
            log.warning("findings: the difference from %s could not be computed (%s); syncing the whole set",
                        previous.name, exc)
            reason = f"the difference could not be computed: {exc}"
    if delta is not None and since is not None:
        changes = sync_finding_changes(conn, run_id, delta.changed, delta.gone, found=delta.found, since=since,
                                       basis=basis, inputs_read_at=inputs_read_at)
        metrics["findings_sync"] = {"mode": "change", "file": str(kept), "since": str(previous),
                                    "changed": len(delta.changed), "gone": len(delta.gone)}
    else:
        changes = sync_findings(conn, run_id, _findings_from(kept), commit=False, basis=basis,
                                inputs_read_at=inputs_read_at)
        metrics["findings_sync"] = {"mode": "full", "file": str(kept), "reason": reason}
    log.info("findings synced (%s): %s", metrics["findings_sync"]["mode"], changes)
    return changes


def _drop_other_findings_files(settings: Settings, kept: Path) -> None:
    """After a successful run: the files of earlier runs (and of attempts that did not finish) are not
    needed any more; the warehouse was last synced with `kept`."""
    for path in findings_state_dir(settings).iterdir():
        if path != kept:
            path.unlink(missing_ok=True)


def _master_cluster() -> dict[str, tuple[str, str]]:
    from lienthong.reconcile.integrate import MASTER_CLUSTER

    return MASTER_CLUSTER


@dataclass(frozen=True)
class GoldenPlan:
    """Where a reconciliation keeps its outputs and snapshot (`goldenstate.new_snapshot`), and the last
    successful one's basis (None: built whole)."""

    folder: Path
    basis: Any  # goldenstate.Basis | None


@contextmanager
def integration(staged: Mapping[str, pa.Table | str], settings: Settings,
                person_links: dict[str, pa.Table] | None = None,
                bases: dict[str, list[str]] | None = None, golden: GoldenPlan | None = None) -> Iterator[Integration]:
    """Staged tables (zone references, or Arrow tables) in; the integrated tables (as files in a scratch
    folder, removed when the `with` block ends), the findings, the clustering and the metrics out.

    `person_links` (link type -> `people.LINK_SCHEMA` table) are the person links of the link state
    (`linkstate.update`), taken out of the dict as they are used; without them the persons are linked here,
    with a model trained on these tables.
    `bases` (input dataset -> the staged refs the integrated state may reflect, `_bases`) lets a step that keeps
    state of its own bring it up to date from the change since those versions; None: every step works whole.
    `golden` (the reconciliation's snapshot folder and the last one's basis) keeps the outputs there and
    recomputes only what the change touches (`goldenstate`); None: built whole in the scratch folder."""
    s = settings
    root = spill_root(s)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="reconcile-", dir=root))
    try:
        yield _integrate(staged, s, person_links, scratch, bases, golden)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _integrate(staged: Mapping[str, pa.Table | str], settings: Settings, person_links: dict[str, pa.Table] | None,
               scratch: Path, bases: dict[str, list[str]] | None = None, golden: GoldenPlan | None = None) -> Integration:
    from lienthong.reconcile import (
        dedupe,
        dupstate,
        goldenstate,
        idless,
        idlessstate,
        integrate,
        people,
        sources,
    )
    from lienthong.reconcile.organisations import (
        ORGANISATION_ENTERPRISE_COLUMNS,
        ORGANISATION_HOLDER_COLUMNS,
        link_holder_organisations,
    )

    bands = people.LinkBands(accept=settings.match_accept, review=settings.match_review)
    metrics: dict[str, Any] = {"seconds": {}, "links": {}}
    t = time.monotonic()

    def step(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        metrics["seconds"][name] = round(now - t, 3)
        t = now

    with session(settings, purpose="integrate", on_disk=True) as con:
        rows = _load_staged(con, staged)
        step("load_staged")
        log.info("reconciling %s", rows)
        alive = "NOT coalesce(deleted, false)"
        # the citizens are read from the session a batch at a time by the steps that go over them, never whole;
        # so are the enterprises and land holders by their duplicate rules
        citizens = _batches(con, "citizen")
        # kept as state (`dupstate`): a run with `bases` recomputes only the groups the staged change touches
        dups, metrics["dedupe"] = dupstate.duplicates(staged, bases, settings.integrated_dir, settings=settings, whole={
            "citizen": lambda: dedupe.citizen_duplicates(citizens()),
            "enterprise": lambda: dedupe.enterprise_duplicates(
                _batches(con, "enterprise", columns=list(dedupe.DUPLICATE_ENTERPRISE_COLUMNS))()),
            "land_holder": lambda: dedupe.holder_duplicates(
                _batches(con, "land_holder", alive, columns=list(dedupe.DUPLICATE_HOLDER_COLUMNS))())})
        cdup, edup, hdup = dups["citizen"], dups["enterprise"], dups["land_holder"]
        del dups
        step("dedupe")
        log.info("duplicates: %d citizen, %d enterprise, %d land-holder records in clusters",
                 cdup.num_rows, edup.num_rows, hdup.num_rows)
        registry: pa.Table | None = None
        if person_links is None:
            person_holders = _arrow(con, "land_holder", f"{alive} AND holder_type = 'CA_NHAN'")
            reps = _arrow(con, "legal_representative")
            registry = sources.citizens_as_people(_arrow(con, "citizen"))
            step("prepare_registry")
            rep_result = people.link_people(sources.representatives_as_people(reps), registry, bands,
                                            settings=settings)
            step("link_representatives")
            log.info("representatives -> citizens: %s (%.0f records/s)", rep_result.counts,
                     reps.num_rows / max(metrics["seconds"]["link_representatives"], 1e-9))
            holder_result = people.link_people(sources.holders_as_people(person_holders), registry, bands,
                                               settings=settings)
            step("link_land_holders")
            log.info("land holders -> citizens: %s (%.0f records/s)", holder_result.counts,
                     person_holders.num_rows / max(metrics["seconds"]["link_land_holders"], 1e-9))
            rep_links, holder_links = rep_result.links, holder_result.links
            metrics["links"] = {"representative_citizen": rep_result.counts, "holder_citizen": holder_result.counts,
                                "model_seconds": {"representative_citizen": rep_result.seconds,
                                                  "holder_citizen": holder_result.seconds}}
            del reps, rep_result, holder_result, person_holders
        else:
            # taken out of the caller's dict (every caller passes one made for the call), so each table is
            # freed as soon as the session holds its copy, not kept to the end of the reconciliation
            rep_links, holder_links = person_links.pop("representative_citizen"), person_links.pop("holder_citizen")
            metrics["links"] = {"representative_citizen": people.link_counts(rep_links, rows["citizen"]),
                                "holder_citizen": people.link_counts(holder_links, rows["citizen"])}
        # ID-less person holders: the name unique in the province (or at the holder's address) where the model
        # ranks the same citizen first (`idless`). Those the registry does not single out go to review with
        # their candidates listed (finding `match_needs_review`). Kept as state (`idlessstate`): a run with
        # bases re-judges only the holders a change touches (their rows, the model's links, a citizen sharing
        # their key, a duplicate cluster) and carries the others over; without bases it is computed whole.
        citizen_ref = staged.get("citizen")
        idless_run = idlessstate.update(
            settings.integrated_dir, person_holders=_arrow(con, "land_holder", _IDLESS_HOLDERS),
            certificates=_arrow(con, "certificate", _IDLESS_CERTIFICATES),
            parcels=_arrow(con, "parcel", _IDLESS_PARCELS), citizens=citizens, model_links=holder_links,
            duplicates=cdup, citizen_ref=citizen_ref if isinstance(citizen_ref, str) else None,
            bases=bases.get("citizen", []) if bases is not None and isinstance(citizen_ref, str) else None,
            bands=bands, settings=settings, run_id=f"integrate:{scratch.name}")
        del registry
        idless_links, idless_review = idless_run.links, idless_run.review
        holder_links = idless.combine(idless_links, holder_links, settings=settings)
        metrics["links"]["holder_citizen_idless"] = idless.counts(idless_links, idless_run.left)
        metrics["idless_state"] = {"mode": idless_run.mode, "ref": idless_run.ref, "counts": idless_run.counts,
                                   "seconds": idless_run.seconds}
        del idless_run, idless_links
        step("link_idless_holders")
        org_links = link_holder_organisations(
            _arrow(con, "land_holder", f"{alive} AND holder_type = 'TO_CHUC'", columns=list(ORGANISATION_HOLDER_COLUMNS)),
            _arrow(con, "enterprise", columns=list(ORGANISATION_ENTERPRISE_COLUMNS)), edup)
        step("link_organisations")
        metrics["links"]["holder_enterprise"] = people.method_band_counts(org_links)

        integrate.load_links(con, integrate.Links(
            citizen_duplicates=cdup, enterprise_duplicates=edup, holder_duplicates=hdup,
            representative_links=rep_links, holder_person_links=holder_links, holder_organisation_links=org_links,
            idless_candidates=idless_review))
        del cdup, edup, hdup, rep_links, holder_links, org_links, idless_review
        # The outputs and findings: with a snapshot folder (`golden`), written there, and, when the last
        # reconciliation's snapshot is a basis, recomputed only for the keys the change touches (`goldenstate`)
        out_dir = golden.folder if golden is not None else scratch
        refs = {name: ref for name, ref in staged.items() if isinstance(ref, str)}
        reason = goldenstate.full_reason(golden.basis, refs) if golden is not None else "no snapshot kept"
        files = {name: out_dir / f"{name}.parquet" for name in integrate.OUTPUT_SQL}
        findings_file = out_dir / goldenstate.FINDINGS_FILE
        if golden is not None and golden.basis is not None and reason is None:
            state: dict[str, Any] = {"mode": "change", "change": goldenstate.prepare_change(con, refs, golden.basis)}
            state["outputs"] = goldenstate.build_outputs(con, out_dir, golden.basis)
            step("golden_records")
            state["findings"] = goldenstate.build_findings(con, golden.basis)
        else:
            state = {"mode": "full", "reason": reason}
            for name, sql in integrate.OUTPUT_SQL.items():
                # DuckDB writes the file itself, streaming (in the query's order: insertion order is preserved)
                began = time.monotonic()
                written = con.execute(f"COPY ({sql}) TO {zones.sql_text(files[name])} (FORMAT parquet)").fetchone()
                log.info("golden records: %s, %s rows in %.1f s", name, written[0] if written else "?",
                         time.monotonic() - began)
            step("golden_records")
            integrate.collect_findings(con)
        con.execute(f"COPY found TO {zones.sql_text(findings_file)} (FORMAT parquet)")
        con.execute("DROP TABLE found")
        if golden is not None:
            goldenstate.write_snapshot(con, golden.folder)
            state.update(snapshot=str(golden.folder), fingerprint=goldenstate.fingerprint())
        metrics["golden_state"] = state
        log.info("golden records and findings: %s", {k: v for k, v in state.items() if k != "change"})
        step("findings")
        clusters = out_dir / "clusters.parquet"
        if state["mode"] == "full":  # a change run's came with the outputs (`goldenstate.SPECS`)
            # the rows, then their sort (`integrate.CLUSTERS_SQL` says why not in one query)
            con.execute(f"CREATE TABLE cluster_rows AS {integrate.CLUSTER_ROWS_SQL}")
            con.execute(f"COPY (SELECT * FROM cluster_rows ORDER BY {integrate.CLUSTER_ORDER}) "
                        f"TO {zones.sql_text(clusters)} (FORMAT parquet)")
            con.execute("DROP TABLE cluster_rows")
        step("clusters")
    touched = ({name: goldenstate.touched_file(out_dir, name) for name in files} if state["mode"] == "change"
               else {})
    return Integration(files=files, findings_file=findings_file, clusters=clusters, metrics=metrics, rows=rows,
                       touched=touched)


def reconcile_tables(staged: Mapping[str, pa.Table | str], settings: Settings,
                     person_links: dict[str, pa.Table] | None = None) -> tuple[dict[str, pa.Table], list, dict]:
    """The integrated tables, findings and metrics (with the clustering under `clusters`) as Python objects:
    `integration` for callers that hold the whole result (tests, the rebuild check, a retraining)."""
    with integration(staged, settings, person_links) as result:
        tables = {name: result.table(name, settings) for name in result.files}
        return tables, result.findings(), {**result.metrics, "clusters": result.cluster_table()}


def _event_counts(events: pa.Table) -> dict[str, dict[str, int]]:
    """{kind: {event: count}} of a run's entity events."""
    out: dict[str, dict[str, int]] = {}
    for row in pa.TableGroupBy(events, ["kind", "event"]).aggregate([("entity_id", "count")]).to_pylist():
        out.setdefault(row["kind"], {})[row["event"]] = row["entity_id_count"]
    return out


def _read_staged(dataset: str, reference: str) -> pa.Table:
    """A staged table version in primary-key order (a merged table's files hold rows in commit order; the
    linkage's sampling and tie-breaks must see the same order whatever the history of merges)."""
    from lienthong import zones
    from lienthong.contracts import contract

    table = zones.read_table(reference)
    return table.sort_by([(k, "ascending") for k in contract(dataset).primary_key])


def _bases(last: Any, unfinished: list[Any], names: tuple[str, ...]) -> dict[str, list[str]] | None:
    """Per person input, the staged refs the link state may reflect: the last successful reconciliation's and
    those of every run started after it that did not finish (it may have written part of the state)."""
    if last is None:
        return None
    out: dict[str, list[str]] = {}
    for name in names:
        refs = []
        for rec in (last, *unfinished):
            ref = (((rec.metrics or {}).get("inputs") or {}).get(name) or {}).get("staged_path")
            if ref and ref not in refs:
                refs.append(ref)
        out[name] = refs
    return out


def _cluster_entities(con: Any, clusters: pa.Table | str, members: pa.Table | str) -> None:
    """Table `cluster_entity` of `con`: the registry's entity of every cluster (kind, cluster_key, entity_id);
    `clusters` an Arrow table or a Parquet file of them, `members` an Arrow table or the ref of a stored
    member version."""
    if isinstance(clusters, pa.Table):
        con.register("clusters_arrow", clusters.select(["kind", "cluster_key", "dataset", "record_key"]))
        source = "clusters_arrow"
    else:
        source = f"read_parquet({zones.sql_text(Path(clusters))})"
    if isinstance(members, pa.Table):
        con.register("members_in", members.select(["kind", "dataset", "record_key", "entity_id"]))
    else:
        zones.register(con, "members_in", members)
    con.execute(f"""CREATE OR REPLACE TABLE cluster_entity AS
                    SELECT DISTINCT c.kind, c.cluster_key, m.entity_id
                    FROM (SELECT kind, cluster_key, dataset, record_key FROM {source}) c
                    JOIN members_in m USING (kind, dataset, record_key)""")
    if isinstance(clusters, pa.Table):
        con.unregister("clusters_arrow")
    if isinstance(members, pa.Table):
        con.unregister("members_in")
    else:
        con.execute("DROP VIEW members_in")


def _change_keys(con: Any, name: str, relation: str, touched: Path) -> pa.Table:
    """The keys (`outputchange.KEY`) output `name` (rows of `relation`) may differ in from the last
    reconciliation's: the `touched` keys the golden-record state recomputed, and for a master the keys of its
    rows in a cluster of `changed_cluster` (a member's entity changed)."""
    from lienthong.reconcile import outputchange

    union = ""
    if name in _master_cluster():
        kind, cluster_sql = _master_cluster()[name]
        union = f"""UNION SELECT CAST(({outputchange.key_sql(name)}) AS VARCHAR) FROM {relation}
                    WHERE ({cluster_sql}) IN (SELECT cluster_key FROM changed_cluster WHERE kind = '{kind}')"""
    return con.execute(f"""SELECT k AS {outputchange.KEY} FROM (
                             SELECT k FROM read_parquet({zones.sql_text(touched)}) {union}) WHERE k IS NOT NULL
                           ORDER BY 1""").fetch_arrow_table()


def _entity_id_sql(name: str, relation: str) -> str:
    """The SQL of master `name` (rows of `relation`) with its `entity_id` from `cluster_entity`, in its order."""
    from lienthong.contracts import contract

    kind, key_sql = _master_cluster()[name]
    select = ", ".join("ce.entity_id" if c == "entity_id" else f'm."{c}"' for c in contract(name).field_names)
    return f"""
        SELECT {select}
        FROM (SELECT *, {key_sql} AS _cluster, row_number() OVER () AS _rn FROM {relation}) m
        LEFT JOIN cluster_entity ce ON ce.kind = '{kind}' AND ce.cluster_key = m._cluster
        ORDER BY m._rn"""


def _require_entities(con: Any, name: str, relation: str) -> None:
    """Refuse master `name` (rows of `relation`) when a row's cluster has no entity in `cluster_entity`."""
    kind, key_sql = _master_cluster()[name]
    row = con.execute(f"""SELECT count(*) FROM (SELECT {key_sql} AS _cluster FROM {relation}) m
                          ANTI JOIN cluster_entity ce ON ce.kind = '{kind}' AND ce.cluster_key = m._cluster""").fetchone()
    if row and row[0]:
        raise RuntimeError(f"{name}: {row[0]} rows have no entity in the registry")


def _with_entity_id(con: Any, name: str, relation: str) -> pa.Table:
    """Master `name` (rows of `relation` in `con`) with its `entity_id` from `cluster_entity`, in its order."""
    _require_entities(con, name, relation)
    return con.execute(_entity_id_sql(name, relation)).fetch_arrow_table()


def with_entity_ids(tables: dict[str, pa.Table], clusters: pa.Table, members: pa.Table,
                    settings: Settings) -> dict[str, pa.Table]:
    """The masters with their `entity_id` (the entity of their cluster in the registry's members), placed
    where their contracts put it."""
    out = dict(tables)
    with session(settings, purpose="entity-ids") as con:
        _cluster_entities(con, clusters, members)
        for name in _master_cluster():
            con.register("master", tables[name])
            out[name] = _with_entity_id(con, name, "master")
            con.unregister("master")
    return out


def _unchanged_output(settings: Settings, name: str, previous: dict[str, Any] | None, digest: str) -> str | None:
    """The ref of the last reconciliation's version of integrated table `name` when it holds `digest`'s
    content and is still the table's newest version (a killed run may have committed a newer one since:
    then the table is written again, so the version the ledger names is always the newest)."""
    if not previous or previous.get("content_hash") != digest or not previous.get("path"):
        return None
    path, version = zones.split_ref(previous["path"])
    table = integrated_table(settings.integrated_dir, name)
    if version is None or Path(path) != table or zones.version(table) != version:
        return None
    return str(previous["path"])


def _person_links(link_state_ref: str) -> dict[str, pa.Table]:
    """The person links of the link state, per link type, in the shape `people.link_people` returns."""
    from lienthong.reconcile.linkstate import LEFT_DATASETS
    from lienthong.reconcile.people import LINK_SCHEMA

    table = zones.read_table(link_state_ref)
    return {link_type: table.filter(pc.equal(table["dataset"], dataset)).select(LINK_SCHEMA.names).cast(LINK_SCHEMA)
            for dataset, link_type in LEFT_DATASETS.items()}


@dataclass
class LinkContext:
    """What a reconciliation links against, decided before anything is written: the staged inputs, the last
    successful run and the runs started after it that did not finish, the persisted link models, the bands,
    and the bases the link state may reflect (`_bases`; None: relink everything)."""

    inputs: dict[str, dict[str, Any]]
    last: Any
    unfinished: list[Any]
    persisted: dict[str, Any]  # link type -> (record, model) or None
    bands: Any
    state_models: dict[str, str] | None
    bases: dict[str, list[str]] | None
    unchanged: bool

    @property
    def input_metrics(self) -> dict[str, dict[str, Any]]:
        return {name: {"integrate_run_id": info["run_id"], "staged_path": info["staged_path"]}
                for name, info in self.inputs.items()}

    @property
    def link_inputs(self) -> dict[str, str]:
        """The staged refs the link state reads (`linkstate.LINK_INPUTS`)."""
        from lienthong.reconcile import linkstate

        return linkstate.link_inputs({n: info["staged_path"] for n, info in self.inputs.items()})

    @property
    def models(self) -> dict[str, Any]:
        return {t: (p[1] if p else None) for t, p in self.persisted.items()}

    def fingerprint(self) -> dict[str, Any]:
        """What a plan of this run's person links must have been made for (`linkwork`)."""
        return {"inputs": self.link_inputs, "bases": self.bases, "state_models": self.state_models,
                "models": {t: (m.model_id if m is not None else None) for t, m in self.models.items()},
                "bands": asdict(self.bands)}


def _link_context(run_id: str, s: Settings, relink: bool = False) -> LinkContext:
    from lienthong import runs
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, models
    from lienthong.reconcile.people import LinkBands
    from lienthong.reconcile.sources import INPUT_DATASETS
    from lienthong.runs.latest import latest_integration

    url = warehouse_url(s)
    inputs = {name: latest_integration(name, url) for name in INPUT_DATASETS}
    with connect(url) as conn:
        last = runs.latest_reconcile_run(conn)
        unfinished = runs.unfinished_reconcile_runs(conn, last.started_at if last else None)
        active_ids = {t: r.model_id for t in models.LINK_TYPES if (r := runs.active_link_model(conn, t)) is not None}
        persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
    held = {name: i.get("staged_path") for name, i in ((last.metrics or {}).get("inputs") or {}).items()} if last else {}
    linked_with = (((last.metrics or {}).get("link_state") or {}).get("models") or {}) if last else {}
    unchanged = (not relink and last is not None and held == {name: info["staged_path"] for name, info in inputs.items()}
                 and linked_with == active_ids)
    state_models = ((last.metrics or {}).get("link_state") or {}).get("models") if last else None
    return LinkContext(inputs, last, unfinished, persisted, LinkBands(accept=s.match_accept, review=s.match_review),
                       state_models, None if relink else _bases(last, unfinished, linkstate.PERSON_INPUTS), unchanged)


def _record_start(url: str, run_id: str, started: datetime, input_metrics: dict[str, Any]) -> None:
    """The start is recorded with the inputs: should this run die after writing part of the link state, the
    next run compares against these versions too (`_bases`)."""
    from lienthong import runs
    from lienthong.db import connect

    with connect(url) as conn:
        runs.record_reconcile_run(conn, runs.ReconcileRun(run_id, started_at=started, finished_at=None,
                                                          status="running", metrics={"inputs": input_metrics}))


def _save_trained(url: str, s: Settings, run_id: str, trained: dict[str, Any], inputs: dict[str, dict[str, Any]]) -> None:
    """Persist and activate the link models run `run_id` trained on the whole data (`models.save`)."""
    from lienthong.db import connect
    from lienthong.reconcile import linkstate, models

    with connect(url) as conn:
        for link_type, model in trained.items():
            models.save(conn, s.integrated_dir, link_type, model, run_id=run_id,
                        summary={"trained_on": {n: inputs[n]["staged_path"] for n in linkstate.PERSON_INPUTS}})


def plan_person_links(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """The first part of reconciliation `run_id`, for the integrate DAG's province tasks: the link state's
    registry and left records brought to the staged inputs, and the left records to relink written by
    province (`linkwork`). A run that relinks everything (the first, a base vacuumed, another model
    activated) is planned whole (`linkstate.prepare_full`; a link type with no model yet gets one trained
    on the whole data and persisted here). Nothing to plan (no province task runs; reconcile does it all) when
    nothing changed, or for a full relink when the linkage is in one partition (`LIENTHONG_LINKAGE_PARTITIONS=none`)."""
    from lienthong.db import warehouse_url
    from lienthong.reconcile import linkstate, linkwork

    s = settings or load_settings()
    ctx = _link_context(run_id, s)
    if ctx.unchanged:
        return {"mode": "unchanged", "partitions": []}
    url = warehouse_url(s)
    _record_start(url, run_id, datetime.now(UTC), ctx.input_metrics)
    # again, with this run recorded as started: the bases reconcile will find (it counts this run among
    # those that did not finish), so that the plan's fingerprint is the one reconcile computes
    ctx = _link_context(run_id, s)
    reason = linkstate.full_reason(s.integrated_dir, ctx.bases, ctx.models, ctx.state_models)
    if reason and s.linkage_partitions != "province":
        log.info("person links: reconcile relinks everything (%s) in one partition; no province to plan", reason)
        return {"mode": "full", "reason": reason, "partitions": []}
    if reason:
        # everything relinked by the province tasks, with the persisted models (a missing one trained here on
        # the whole data and persisted first, as reconcile would)
        log.info("person links: relinking everything by province (%s)", reason)
        full, trained = linkstate.prepare_full(s.integrated_dir, ctx.link_inputs, ctx.models, run_id=run_id,
                                               reason=reason, settings=s)
        if trained:
            _save_trained(url, s, run_id, trained, ctx.inputs)
            ctx = _link_context(run_id, s)  # the fingerprint reconcile computes names the models just persisted
        return linkwork.write_plan(s, run_id, ctx.fingerprint(), full, ctx.link_inputs) | {
            "reason": reason, "trained": sorted(trained)}
    prepared = linkstate.prepare(s.integrated_dir, ctx.link_inputs, ctx.bases, ctx.models, run_id=run_id,
                                 settings=s, bands=ctx.bands)
    if isinstance(prepared, linkstate.Update):
        return {"mode": prepared.mode, "partitions": []}
    return linkwork.write_plan(s, run_id, ctx.fingerprint(), prepared, ctx.link_inputs)


def reconcile(run_id: str, settings: Settings | None = None, *, relink: bool = False) -> dict[str, Any]:
    """Reconcile the newest staged run of every source; write the integrated zone; sync the findings.

    The person links come from the link state (`linkstate.update`): only the records a change touches are
    relinked, with the persisted models (`models.active`); a link type with no model yet gets one trained on
    the whole data and persisted. `relink` relinks everything with the persisted models (`lienthong
    rebuild`)."""
    from lienthong import entities, runs
    from lienthong.cases import run_case_counts
    from lienthong.db import connect, warehouse_url
    from lienthong.findings import ensure_findings_schema
    from lienthong.reconcile import goldenstate, idlessstate, linkstate, linkwork, models, outputchange
    from lienthong.reconcile.explain import save_models
    from lienthong.reconcile.sources import INPUT_DATASETS

    s = settings or load_settings()
    url = warehouse_url(s)
    started = datetime.now(UTC)
    # Asked before the inputs are picked: a lower bound for when the source data they hold were read, the only
    # time this run may judge an agency's claim of correction by (`lienthong.cases`).
    inputs_read_at = _inputs_read_at(url)
    ctx = _link_context(run_id, s, relink)
    inputs, last, unfinished = ctx.inputs, ctx.last, ctx.unfinished
    if ctx.unchanged:
        # The same staged versions and models as the last reconciliation: its outputs stand; nothing is written.
        # (A model activated since, by `lienthong link-models --activate` or a retraining, relinks everything.)
        log.info("reconcile: no staged dataset changed since reconciliation %s; nothing to do", last.run_id)
        # but the findings stand on source data read again since (an extract that found nothing new): the
        # claims of correction made before that read are judged against them
        cases = _judge_claims(url, run_id, inputs_read_at)
        return {"run_id": run_id, "unchanged": True, "since": last.run_id, "outputs": last.outputs or {},
                "findings": {}, "links": {}, "seconds": {}, "model_paths": last.model_paths or {},
                "cases": {**cases, "inputs_read_at": inputs_read_at.isoformat() if inputs_read_at else None}}
    input_metrics = ctx.input_metrics
    _record_start(url, run_id, started, input_metrics)
    bands = ctx.bands
    update = linkstate.update(
        s.integrated_dir, ctx.link_inputs, ctx.bases, ctx.models, run_id=run_id, settings=s, bands=bands,
        state_models=ctx.state_models, work=linkwork.planned(s, run_id, ctx.fingerprint()))
    if update.trained:
        _save_trained(url, s, run_id, update.trained, inputs)
    with connect(url) as conn:
        records = {t: runs.active_link_model(conn, t) for t in models.LINK_TYPES}
    outputs: dict[str, Any] = {}
    golden = GoldenPlan(goldenstate.new_snapshot(s.integrated_dir, run_id),
                        None if relink else goldenstate.basis_of(last))
    with integration({name: info["staged_path"] for name, info in inputs.items()}, s,
                     person_links=_person_links(update.refs[linkstate.LINKS]),
                     bases=None if relink else _bases(last, unfinished, INPUT_DATASETS), golden=golden) as result:
        metrics = result.metrics
        metrics["link_state"] = {"mode": update.mode, "refs": update.refs, "models": update.models,
                                 "counts": update.counts, "seconds": update.seconds}
        # the entity registry: stable IDs for the clustering (committed before the outputs that carry them; a
        # rerun of this run starts from the registry as it was before this run, so it assigns the same IDs)
        t0 = time.monotonic()
        # whatever a run that did not finish (this run's earlier attempt included) wrote into the registry is
        # undone first, so the assignment starts from the registry the last successful run left
        entities.rollback(entities.registry_dir(s), [u.run_id for u in unfinished] + [run_id])
        # the full members are not fetched: the entity IDs are read from the committed member version
        assignment, registry_refs = entities.update(entities.registry_dir(s), str(result.clusters), run_id,
                                                    settings=s, whole_tables=False)
        metrics["entities"] = {"refs": registry_refs, "events": _event_counts(assignment.events),
                               "members_changed": assignment.changed_members.num_rows,
                               "seconds": round(time.monotonic() - t0, 3)}
        log.info("entity registry: %s", metrics["entities"]["events"] or "no entity created, merged, split or retired")
        members, changed_members = registry_refs[entities.MEMBER_TABLE], assignment.changed_members
        del assignment
        previous = (last.outputs or {}) if last is not None else {}
        for name, read, keys in result.with_entity_ids(s, members, changed_members if result.touched else None):
            # read twice, a batch at a time: for its content hash, then, when it changed, into its commit
            digest, count = _hash_batches(read())
            kept = _unchanged_output(s, name, previous.get(name), digest)
            if kept is not None:
                # the same content as the version the last reconciliation named, still the table's newest:
                # no new version (nothing downstream moves); the ledger names that version again
                outputs[name] = {"path": kept, "rows": count, "content_hash": digest, "written": False}
                continue
            # One commit per dataset replacing its rows: readers pin the version (`<table>@v<N>`) the ledger names.
            commit = zones.create(integrated_table(s.integrated_dir, name), read(), run_id=run_id,
                                  metadata={"lienthong.mode": "reconcile"})
            path = zones.ref(integrated_table(s.integrated_dir, name), commit.version or 0)
            outputs[name] = {"path": path, "rows": count, "content_hash": digest, "written": True}
            before = (previous.get(name) or {}).get("path")
            if keys is not None and before:  # what readers comparing with the last version need read
                outputchange.record(integrated_table(s.integrated_dir, name), str(before), path, keys)
                outputs[name]["changed_keys"] = keys.num_rows
            zones.maintain(integrated_table(s.integrated_dir, name), retention_hours=s.zone_retention_hours,
                           run_id=run_id)
            outputchange.prune(integrated_table(s.integrated_dir, name))
        rows = result.rows
        del members, changed_members
        synced = _keep_findings(s, run_id, result.findings_file)
    for name in (linkstate.REGISTRY, linkstate.LEFT, linkstate.LINKS):
        zones.maintain(linkstate.table_path(s.integrated_dir, name), retention_hours=s.zone_retention_hours,
                       run_id=run_id)
    zones.maintain(idlessstate.table_path(s.integrated_dir), retention_hours=s.zone_retention_hours, run_id=run_id)
    from lienthong.reconcile import dupstate
    dupstate.maintain(s.integrated_dir, retention_hours=s.zone_retention_hours, run_id=run_id)
    metrics["inputs"] = {name: {**input_metrics[name], "rows": rows[name]} for name in inputs}
    model_paths = save_models(
        s.integrated_dir, run_id, {t: r for t, r in records.items() if r is not None},
        inputs={name: info["staged_path"] for name, info in inputs.items()},
        outputs={name: o["path"] for name, o in outputs.items()},
        bands=asdict(bands))
    with connect(url) as conn:
        ensure_findings_schema(conn)
        conn.commit()  # the DDL locks are not held through the sync
        # the findings' sync and the run's record: one transaction, committed together (or neither)
        changes = _sync_run_findings(conn, run_id, s, synced, relink, metrics, inputs_read_at)
        cases = run_case_counts(conn, run_id)
        metrics["cases"] = {**cases, "inputs_read_at": inputs_read_at.isoformat() if inputs_read_at else None}
        log.info("cases: %s (source data read at %s)", cases, inputs_read_at)
        runs.record_reconcile_run(conn, runs.ReconcileRun(
            run_id, started_at=started, finished_at=datetime.now(UTC), status="success",
            counts={name: o["rows"] for name, o in outputs.items()} | {"findings": changes, "cases": cases},
            metrics=metrics, outputs=outputs, model_paths=model_paths))
    _drop_other_findings_files(s, synced)
    goldenstate.drop_other_snapshots(s.integrated_dir, golden.folder)
    linkwork.drop_work(s.integrated_dir)  # this run's plan is spent, and any other's
    log.info("integrated zone written: %s; findings %s; link state %s (%s relinked)",
             {n: o["rows"] for n, o in outputs.items()}, changes, update.mode, update.counts.get("relinked"))
    return {"run_id": run_id, "outputs": outputs, "findings": changes, "links": metrics["links"],
            "seconds": metrics["seconds"], "model_paths": model_paths, "link_state": metrics["link_state"],
            "entities": metrics["entities"], "findings_sync": metrics["findings_sync"], "cases": metrics["cases"],
            "golden_state": metrics["golden_state"]}
