"""Which staged records may differ between two staged versions: how every state kept under
`integrated/_state/` finds the change it must follow (duplicates, the link state, golden records).

Two versions of one staged table with only staging's commits between them (`_STAGING_MODES`, compaction): a
row written at or before the older version (`_staged_version`, which staging sets on every row a commit
writes and a MERGE copy keeps) is that version's row unchanged, so the rows
written since are the new and changed ones (a constant filter: DuckDB reads the other columns of those rows
only); the gone ones are the keys of the older version the newer lacks, looked for only when the row counts
say some are (rows before - rows now + keys new since). Otherwise (two tables, a zone moved, a restore or
another writer between the versions, a version without `_staged_version`) every row is compared on
`_merge_key` and `_record_hash`, both ways.
The result may hold a key whose row was written again unchanged: callers compare what they read of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lienthong import zones

# What writes a staged table and keeps `_staged_version` true: staging's own commits (every row they write
# carries the commit's version), validation's and the expectations' (a column set, rows moved to quarantine:
# deletes), and compaction (the same rows). Anything else between two versions (a restore to an older
# version, a foreign write) may bring back rows whose `_staged_version` is older than the change.
_STAGING_MODES = frozenset({"change", "rebuild", "rebuild-partial", "create", "expectation", "validation"})


def _only_staging_wrote(path: str, after: int, upto: int) -> bool:
    """Whether every commit of the table at `path` in versions (after, upto] is one of `_STAGING_MODES`', a
    compaction or a vacuum (a commit the history no longer shows counts as unknown)."""
    if upto <= after:
        return True
    table = zones.open_table(path)
    newest = table.version()
    seen = set()
    for commit in table.history(max(newest - after, 1)):
        version = int(commit.get("version", -1))
        if not after < version <= upto:
            continue
        seen.add(version)
        neutral = commit.get("lienthong.maintenance") == "compact" or str(commit.get("operation", "")).startswith("VACUUM")
        if not neutral and commit.get("lienthong.mode") not in _STAGING_MODES:
            return False
    return seen == set(range(after + 1, upto + 1))


def changed_keys(con: Any, new: str, old: str, *, new_view: str, old_view: str, target: str) -> str:
    """Fill table `target` of session `con` (one column, `_merge_key`, distinct) with the keys whose staged
    row may differ between staged refs `old` and `new`, registered in `con` as views `old_view` and
    `new_view`; returns how they were found (`staged_version`, `staged_version+deleted`, `record_hash`)."""
    (n_path, n_version), (b_path, b_version) = zones.split_ref(new), zones.split_ref(old)
    columns = ({r[0] for r in con.execute(f"DESCRIBE {new_view}").fetchall()}
               & {r[0] for r in con.execute(f"DESCRIBE {old_view}").fetchall()})
    same_table = (Path(n_path).resolve() == Path(b_path).resolve() and n_version is not None
                  and b_version is not None and b_version <= n_version and "_staged_version" in columns
                  and _only_staging_wrote(n_path, b_version, n_version))
    if not same_table:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {target} AS
                        SELECT DISTINCT coalesce(n._merge_key, b._merge_key) AS _merge_key
                        FROM (SELECT _merge_key, _record_hash FROM {new_view}) n
                        FULL JOIN (SELECT _merge_key, _record_hash FROM {old_view}) b
                          ON n._merge_key = b._merge_key AND n._record_hash = b._record_hash
                        WHERE n._merge_key IS NULL OR b._merge_key IS NULL""")
        return "record_hash"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {target} AS SELECT DISTINCT _merge_key FROM {new_view}
                    WHERE _staged_version IS NULL OR _staged_version > {int(b_version or 0)}""")
    row = con.execute(f"""SELECT (SELECT count(*) FROM {old_view}), (SELECT count(*) FROM {new_view}),
                                 (SELECT count(*) FROM {target} ANTI JOIN
                                    (SELECT _merge_key FROM {old_view}) USING (_merge_key))""").fetchone()
    if row and int(row[0]) - int(row[1]) + int(row[2]) > 0:
        con.execute(f"""INSERT INTO {target} SELECT _merge_key FROM (SELECT _merge_key FROM {old_view})
                        ANTI JOIN (SELECT _merge_key FROM {new_view}) USING (_merge_key)""")
        return "staged_version+deleted"
    return "staged_version"


def differing_keys(con: Any, new: str, bases: list[str], *, new_view: str, base_views: list[str],
                   target: str) -> None:
    """Fill table `target` of `con` (`_merge_key`) with exactly the keys whose row (`_merge_key`,
    `_record_hash`) in staged ref `new` (view `new_view`) differs from, or is missing in, at least one of the
    `bases` (views `base_views`): `changed_keys` per base gives the candidates, and only their rows are
    compared, so a key written again unchanged is not named."""
    parts = []
    for i, (base, view) in enumerate(zip(bases, base_views, strict=True)):
        keys = f"{target}_c{i}"
        changed_keys(con, new, base, new_view=new_view, old_view=view, target=keys)
        n = f"(SELECT _merge_key, _record_hash FROM {new_view} SEMI JOIN {keys} USING (_merge_key))"
        b = f"(SELECT _merge_key, _record_hash FROM {view} SEMI JOIN {keys} USING (_merge_key))"
        parts.append(f"SELECT _merge_key FROM ({n} EXCEPT {b}) UNION SELECT _merge_key FROM ({b} EXCEPT {n})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS "
                + (" UNION ".join(parts) if parts else f"SELECT _merge_key FROM {new_view} WHERE false"))
    for i in range(len(bases)):
        con.execute(f"DROP TABLE {target}_c{i}")
