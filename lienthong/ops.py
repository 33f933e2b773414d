"""The warehouse schema `lienthong_ops`, home of the platform's own bookkeeping.

Its tables have owners of their own: the run ledger (`lienthong.runs`: watermarks, ingestion, staging,
quality, reconciliation, publication and audit-report runs, with the schema's version and migrations), the
findings (`lienthong.findings`) and the single window's access log (`lienthong.singlewindow.audit`). This
module only names the schema and keeps the name older callers use to make sure it exists.
"""

from __future__ import annotations

from lienthong.runs.schema import OPS_SCHEMA, ensure_ledger

__all__ = ["OPS_SCHEMA", "ensure_ops_schema"]


def ensure_ops_schema(conn) -> None:
    """Create the schema and bring the run ledger to this code's version (`lienthong.runs.ensure_ledger`);
    safe to call concurrently, in the caller's transaction."""
    ensure_ledger(conn)
