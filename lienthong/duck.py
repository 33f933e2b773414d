"""DuckDB sessions: the one place that opens a DuckDB connection.

Owns the bounds every in-process DuckDB query runs under: the memory limit (DuckDB spills to disk beyond
it instead of taking 80 % of the machine), the number of threads (not every core of a shared worker), a
private spill folder per session under the data directory (`<data>/tmp/duckdb/<purpose>-<pid>-<random>`,
mode 0700, removed when the session ends, also after an error), and the session time zone (UTC). Staging,
reconciliation (Splink included), publication, the profiles and the audit report all open their
connections here; a unit test keeps any other module from calling `duckdb.connect`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lienthong.settings import Settings, load_settings

if TYPE_CHECKING:
    import duckdb

_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]*")


def spill_root(settings: Settings) -> Path:
    """The folder the sessions' spill folders are made in."""
    return settings.data_dir / "tmp" / "duckdb"


@contextmanager
def session(
    settings: Settings | None = None,
    *,
    purpose: str,
    preserve_insertion_order: bool = True,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection bounded by the settings (`duckdb_memory`, `duckdb_threads`), spilling
    to its own folder; closed, and the folder removed, when the `with` block ends.

    `purpose` names the spill folder (a short slug: `staging`, `link-people`), so a full disk points at the
    step that filled it. `preserve_insertion_order` stays DuckDB's default (true): callers that write or
    number rows rely on it; one that never does may turn it off to let large sorts and exports use less
    memory. Settings default to the environment's (`load_settings()`)."""
    import duckdb

    if not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"DuckDB session purpose {purpose!r}: lower-case letters, digits, '-' or '_'")
    s = settings or load_settings()
    root = spill_root(s)
    root.mkdir(parents=True, exist_ok=True)
    # mkdtemp: created 0700 and unique, so two sessions of one process never share (or delete) a folder.
    spill = Path(tempfile.mkdtemp(prefix=f"{purpose}-{os.getpid()}-", dir=root))
    try:
        con = duckdb.connect(":memory:", config={
            "memory_limit": s.duckdb_memory,
            "threads": s.duckdb_threads,
            "temp_directory": str(spill),
            "preserve_insertion_order": preserve_insertion_order,
        })
        try:
            # TimeZone belongs to the ICU extension, which is loaded on first use: set after connecting.
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)

