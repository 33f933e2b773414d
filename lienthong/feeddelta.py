"""The change feed of a published dataset as a Delta Lake table in the published zone, for readers of the
zone (Spark, delta-rs, DuckDB's `delta_scan`) rather than of the warehouse.

`published/<dataset>/_changes/`: the rows of `published.<dataset>__changes` (`lienthong.feed`), the
contract's columns plus `_change_type`, `_commit_version`, `_commit_timestamp` and `_seq`, partitioned by
`_commit_version`; one Delta commit per published version (a replace of that version's partition, so writing
it twice changes nothing). Read the changes after version N with a filter `_commit_version > N`, in
`(_commit_version, _seq)` order. Like the Parquet snapshots, it holds the published rows themselves, not an
agency's masked view.

Why not Delta's own change data feed (`delta.enableChangeDataFeed`, `load_cdf`) on a table of the dataset: a
version's rows would then be written by a MERGE, and delta-rs rewrites every data file a changed row is in (it
writes no deletion vectors): with a 1 % change spread over the whole dataset, that is every file, each
version. This table costs the change.

It follows the warehouse: `sync` runs after the publish transaction commits and writes every version the
warehouse's feed has and the table has not (so a publish killed between the two is made good by the next
one); it starts again, empty, when the warehouse's feed does (another contract version). Retention deletes
the partitions of versions the warehouse no longer keeps.
"""

from __future__ import annotations

import io
import logging
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from lienthong import feed, pubtables, zones
from lienthong.contracts import Contract

log = logging.getLogger(__name__)

TABLE = "_changes"
PARTITION = ["_commit_version"]


def table_path(ds_dir: Path) -> Path:
    return Path(ds_dir) / TABLE


def schema(contract: Contract) -> pa.Schema:
    return contract.arrow_schema().append(pa.field("_change_type", pa.string(), nullable=False)).append(
        pa.field("_commit_version", pa.int32(), nullable=False)).append(
        pa.field("_commit_timestamp", pa.timestamp("us", tz="UTC"), nullable=False)).append(
        pa.field("_seq", pa.int64(), nullable=False))


def _versions(path: Path) -> set[int]:
    """The versions the table holds, from its log (its partitions), not its rows."""
    if not zones.is_table(path):
        return set()
    return {int(p["_commit_version"]) for p in zones.open_table(path).partitions()}


def _rows(cur: Any, contract: Contract, schema_name: str, version: int) -> pa.Table:
    """One version's change rows from the warehouse, in the contract's Arrow types: one COPY out as CSV
    (`from_csv`). No Python object per row or value: psycopg2's row-by-row fetch and its JSON decoding were
    most of a small version's publish."""
    target = schema(contract)
    cols = ", ".join(f'"{n}"' for n in target.names)
    buffer = io.BytesIO()
    cur.execute(f'SELECT changes FROM "{schema_name}"."{feed.feed_table(contract.name)}" WHERE version = %s', (version,))
    (changes,) = cur.fetchone()
    generation = pubtables.current_generation(cur, schema_name, contract.name)
    rows = pubtables.base_rows(cur, schema_name, generation[0] if generation else None)
    with pubtables.keyed_joins(cur, changes, rows):
        cur.copy_expert(f"""COPY (SELECT {cols} FROM "{schema_name}"."{feed.changes_table(contract.name)}"
                                  WHERE _commit_version = {int(version)} ORDER BY _seq) TO STDOUT WITH (FORMAT csv)""",
                        buffer)
    return from_csv(buffer.getvalue(), contract)


def from_csv(data: bytes, contract: Contract) -> pa.Table:
    """Change rows as PostgreSQL's COPY writes them in CSV (the columns of `schema(contract)`, in order), in
    the contract's Arrow types: read as text by Arrow, cast in DuckDB (jsonb through JSON into lists of
    structs)."""
    import pyarrow.csv as pacsv

    from lienthong.duck import session

    target = schema(contract)
    if not data:
        return target.empty_table()
    text = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=target.names),
                          convert_options=pacsv.ConvertOptions(
                              column_types={n: pa.string() for n in target.names},
                              strings_can_be_null=True, quoted_strings_can_be_null=False))
    with session(purpose="feed-delta") as con:
        con.register("shape", target.empty_table())
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE shape)").fetchall())
        con.register("text", text)
        casts = ", ".join(
            f'CAST(CAST("{f.name}" AS JSON) AS {types[f.name]}) AS "{f.name}"' if pa.types.is_nested(f.type)
            else f'CAST("{f.name}" AS {types[f.name]}) AS "{f.name}"' for f in target)
        rows = con.execute(f"SELECT {casts} FROM text").fetch_arrow_table()
    return rows.cast(target)


def version_rows(contract: Contract, version: int, committed_at: datetime, closed_csv: bytes,
                 change: feed.Change) -> pa.Table:
    """A version's change rows as the publisher holds them after its commit: the closed row versions the
    database returned (`lienthong.pubtables.apply_change`) and the new images it sent, numbered as the feed
    numbers them (`feed.numbered`)."""
    closed = from_csv(closed_csv, contract)
    post = feed.numbered(change.post, contract.primary_key, change.gone.num_rows)
    n = post.num_rows
    post = post.append_column(pa.field("_commit_version", pa.int32()), pa.repeat(pa.scalar(version, pa.int32()), n))
    post = post.append_column(pa.field("_commit_timestamp", pa.timestamp("us", tz="UTC")),
                              pa.repeat(pa.scalar(committed_at, pa.timestamp("us", tz="UTC")), n))
    target = schema(contract)
    return pa.concat_tables([closed, post.select(target.names).cast(target)]).sort_by("_seq")


def sync(cur: Any, contract: Contract, schema_name: str, ds_dir: Path, run_id: str,
         known: dict[int, pa.Table] | None = None) -> list[int]:
    """Write the versions the warehouse's feed keeps and the Delta table lacks; start the table again when
    the warehouse's feed started after the table's newest version or with other columns. `known`: change
    rows of versions the caller holds already (the publisher, of the version it just committed), which are
    then not read back. Returns the versions written."""
    path = table_path(ds_dir)
    if not feed.is_kept(cur, contract.name, schema_name):
        return []
    cur.execute(f'SELECT version, changes FROM "{schema_name}"."{feed.feed_table(contract.name)}" ORDER BY version')
    kept = cur.fetchall()
    first = kept[0][0]
    have = _versions(path)
    names = schema(contract).names
    if zones.is_table(path) and (pa.schema(zones.open_table(path).schema().to_arrow()).names != names
                                 or (have and max(have) < first)):
        shutil.rmtree(path)  # the feed started again: so does its Delta table
        have = set()
    written = []
    for version, changes in kept[1:]:  # the first version is where the feed starts: no change rows
        if version in have or not changes:
            continue
        rows = (known or {}).get(version)
        if rows is None or rows.num_rows != changes:
            rows = _rows(cur, contract, schema_name, version)
        if not zones.is_table(path):
            zones.create(path, rows, run_id=run_id, partition_by=PARTITION,
                         metadata={"lienthong.published_version": str(version)})
        else:
            from deltalake import CommitProperties, write_deltalake

            write_deltalake(str(path), rows, mode="overwrite", predicate=f"_commit_version = {int(version)}",
                            partition_by=PARTITION, commit_properties=CommitProperties(custom_metadata={
                                "lienthong.run_id": run_id, "lienthong.published_version": str(version)}))
        written.append(version)
    if written:
        log.info("%s: change feed versions %s written to %s", contract.name, written, path)
    return written


def expire(ds_dir: Path, oldest_kept: int, *, run_id: str) -> None:
    """Drop the partitions of versions up to `oldest_kept` (the feed starts there), and the files no version
    of the table within the zones' retention (`LIENTHONG_ZONE_RETENTION_HOURS`) needs."""
    from lienthong.settings import load_settings

    path = table_path(ds_dir)
    if not zones.is_table(path) or not any(v <= oldest_kept for v in _versions(path)):
        return
    zones.open_table(path).delete(f"_commit_version <= {int(oldest_kept)}")
    zones.maintain(path, retention_hours=load_settings().zone_retention_hours, run_id=run_id)
