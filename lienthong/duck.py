"""DuckDB sessions: the one place that opens a DuckDB connection.

Owns the bounds every in-process DuckDB query runs under: the memory limit (DuckDB spills to disk beyond
it instead of taking 80 % of the machine), the number of threads (not every core of a shared worker), a
private spill folder per session under the data directory (`<data>/tmp/duckdb/<purpose>-<pid>-<random>`,
mode 0700, removed when the session ends, also after an error), and the session time zone (UTC). The memory
limit bounds the process, not each session: a session opened while the same thread holds others open (a step
that opens its own inside a reconciliation's) shares the limit with them equally, each outer one lowered while
it is open (DuckDB moves what no longer fits to the outer session's spill folder) and given its share back
when it closes. Sessions of other threads are not touched (a connection must not be used from two threads at
once); each thread's sessions together stay within the limit. Staging,
reconciliation (Splink included), publication, the profiles and the audit report all open their
connections here; a unit test keeps any other module from calling `duckdb.connect`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lienthong.settings import Settings, load_settings

if TYPE_CHECKING:
    import duckdb

_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_UNITS = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_open = threading.local()  # `sessions`: the connections this thread holds open, outermost first


def memory_bytes(limit: str) -> int:
    """A DuckDB size (`2GB`, `512MiB`, as the settings accept it) in bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B)", limit.strip(), re.IGNORECASE)
    if m is None:
        raise ValueError(f"{limit!r}: a size such as 2GB or 512MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _share(cons: list[duckdb.DuckDBPyConnection], budget: int) -> None:
    """Give each of a thread's open sessions an equal share of the memory limit."""
    share = max(budget // max(len(cons), 1), 16 * 1024**2)
    for con in cons:
        con.execute(f"SET memory_limit = '{share // 1024}KiB'")


def spill_root(settings: Settings) -> Path:
    """The folder the sessions' spill folders are made in."""
    return settings.data_dir / "tmp" / "duckdb"


@contextmanager
def session(
    settings: Settings | None = None,
    *,
    purpose: str,
    preserve_insertion_order: bool = True,
    database: str | Path = ":memory:",
    on_disk: bool = False,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection (or one on the database file `database`) bounded by the settings
    (`duckdb_memory`, `duckdb_threads`), spilling to its own folder; closed, and the folder removed, when the
    `with` block ends.

    `purpose` names the spill folder (a short slug: `staging`, `link-people`), so a full disk points at the
    step that filled it. `preserve_insertion_order` stays DuckDB's default (true): callers that write or
    number rows rely on it; one that never does may turn it off to let large sorts and exports use less
    memory. Settings default to the environment's (`load_settings()`).

    `on_disk` keeps the session's tables in a database file of its own in the spill folder (removed with it)
    instead of in memory: for a step that builds many large tables, whose blocks DuckDB then evicts from
    its buffer pool as it needs room (written once, at a checkpoint) rather than holding them up to the limit
    and spilling them one by one. The reconciliation's integration session and the entity assignment's are on
    disk (docs/benchmarks.md, "The reconcile task's sessions on disk, the citizens in batches")."""
    import duckdb

    if not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"DuckDB session purpose {purpose!r}: lower-case letters, digits, '-' or '_'")
    s = settings or load_settings()
    root = spill_root(s)
    root.mkdir(parents=True, exist_ok=True)
    # mkdtemp: created 0700 and unique, so two sessions of one process never share (or delete) a folder.
    spill = Path(tempfile.mkdtemp(prefix=f"{purpose}-{os.getpid()}-", dir=root))
    if on_disk:
        database = spill / "session.duckdb"
    try:
        con = duckdb.connect(str(database), config={
            "memory_limit": s.duckdb_memory,
            "threads": s.duckdb_threads,
            "temp_directory": str(spill),
            "preserve_insertion_order": preserve_insertion_order,
        })
        held: list[duckdb.DuckDBPyConnection] = _open.__dict__.setdefault("sessions", [])
        budget = memory_bytes(s.duckdb_memory)
        held.append(con)
        try:
            if len(held) > 1:
                _share(held, budget)
            # TimeZone belongs to the ICU extension, which is loaded on first use: set after connecting.
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()
            held.remove(con)
            if held:
                _share(held, budget)
    finally:
        shutil.rmtree(spill, ignore_errors=True)

