"""One ingestion run of the population registry: walk from the watermark, land every page in raw.

Owns only the wiring: the client from the `population_registry` connection and the settings, and the
shared `run_ingestion` (landing, checks against the citizen contract, watermark advanced only after the
landing commit, run bookkeeping) with the registry's declared incremental state.
"""

from __future__ import annotations

from typing import Any

from connectors.base.ingest import run_ingestion
from connectors.base.schema import SourceSchema
from connectors.base.state import IngestStore
from connectors.population.client import ENTITY, INCREMENTAL, SOURCE, PopulationRegistryClient
from lienthong.contracts import contract
from lienthong.private_files import writes_data_dir
from lienthong.settings import Settings


@writes_data_dir
def ingest(run_id: str, settings: Settings, *, store: IngestStore, scope: str = "", client: PopulationRegistryClient | None = None) -> dict[str, Any]:
    """Land the citizens changed since the watermark, with watermark and run records in `store`; returns a
    JSON-able summary (rows, pages, watermark_from/to, landing path, records flagged, new fields, requests
    made)."""
    client = client or PopulationRegistryClient.from_connection(
        settings.population_conn_id,
        timeout=settings.http_timeout,
        attempts=settings.retry_attempts,
        max_wait=settings.retry_max_wait,
    )
    result = run_ingestion(
        store=store,
        source=SOURCE,
        entity=ENTITY,
        run_id=run_id,
        raw_dir=settings.raw_dir,
        incremental=INCREMENTAL,
        pages=lambda since: client.iter_citizen_pages(since, settings.page_size),
        scope=scope,
        schema=SourceSchema.from_contract(contract("citizen")),
    )
    out = result.as_dict()
    out["requests"] = client.http.requests_made
    return out
