"""One ingestion run of the business registry: walk from the watermark, land every record version in raw.

Owns only the wiring: the client from the `business_registry` connection and the settings, the shared
`run_ingestion` (landing, watermark advanced only after the landing commit, run bookkeeping) with the
business registry's declared incremental state, and the run summary.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.base.ingest import run_ingestion
from connectors.base.schema import SourceSchema
from connectors.base.state import IngestStore
from connectors.business.client import ENTITY, INCREMENTAL, MAX_LIMIT, SOURCE, BusinessRegistryClient
from lienthong.contracts import contract
from lienthong.private_files import writes_data_dir
from lienthong.settings import Settings

log = logging.getLogger(__name__)


@writes_data_dir
def ingest(run_id: str, settings: Settings, *, store: IngestStore, scope: str = "", client: BusinessRegistryClient | None = None) -> dict[str, Any]:
    """Land the enterprises changed since the watermark, with watermark and run records in `store`; returns a
    JSON-able summary (rows, pages, watermark_from/to, landing path, requests made, walk statistics). `scope`
    and `client` are for tests and for running against another server than the configured connection."""
    client = client or BusinessRegistryClient.from_connection(
        settings.business_conn_id,
        timeout=settings.http_timeout,
        attempts=settings.retry_attempts,
        max_wait=settings.retry_max_wait,
    )
    # the registry pages at most 500 records; the platform-wide page size may be larger
    page_size = max(2, min(settings.page_size, MAX_LIMIT))
    result = run_ingestion(
        store=store,
        source=SOURCE,
        entity=ENTITY,
        run_id=run_id,
        raw_dir=settings.raw_dir,
        incremental=INCREMENTAL,
        pages=lambda since: client.iter_enterprise_pages(since, page_size),
        scope=scope,
        schema=SourceSchema.from_contract(contract("enterprise"), contract("legal_representative")),
    )
    out = result.as_dict()
    out["requests"] = client.http.requests_made
    out["walk"] = client.last_walk.as_dict()
    return out
