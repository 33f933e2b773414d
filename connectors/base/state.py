"""The one watermark store: per source (and scope, e.g. a province), in the warehouse PostgreSQL.

Incremental state is declared by the connector (which field is the cursor, its initial value); this store
only keeps the value and advances it after the batch it covers has landed (`advance` is called after the
landing commit, so a failed run leaves the watermark where it was).
"""

from __future__ import annotations

import logging

from lienthong.db import connect
from lienthong.ops import OPS_SCHEMA, ensure_ops_schema

log = logging.getLogger(__name__)


class WatermarkStore:
    def __init__(self, url: str | None = None):
        self.url = url

    def get(self, source: str, scope: str = "") -> str | None:
        with connect(self.url) as conn:
            ensure_ops_schema(conn)
            with conn.cursor() as cur:
                cur.execute(f"SELECT value FROM {OPS_SCHEMA}.watermark WHERE source = %s AND scope = %s", (source, scope))
                row = cur.fetchone()
        return row[0] if row else None

    def advance(self, source: str, value: str, run_id: str, scope: str = "") -> None:
        self.advance_many(source, {scope: value}, run_id)

    def advance_many(self, source: str, marks: dict[str, str], run_id: str) -> None:
        """Advance several scopes in ONE transaction: they all move or none does (e.g. a province's three
        tables, extracted from one snapshot)."""
        if not marks:
            return
        with connect(self.url) as conn:
            ensure_ops_schema(conn)
            with conn.cursor() as cur:
                cur.executemany(
                    f"""INSERT INTO {OPS_SCHEMA}.watermark (source, scope, value, run_id, updated_at)
                        VALUES (%s, %s, %s, %s, now())
                        ON CONFLICT (source, scope) DO UPDATE
                        SET value = EXCLUDED.value, run_id = EXCLUDED.run_id, updated_at = now()""",
                    [(source, scope, value, run_id) for scope, value in marks.items()],
                )
        for scope, value in marks.items():
            log.info("watermark %s/%s advanced to %s by run %s", source, scope or "-", value, run_id)
