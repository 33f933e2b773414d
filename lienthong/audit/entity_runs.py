"""The report's entity registry section: per reconciliation run, how its person links and its entities changed.

Owns the figures of that section, for the report's run and the runs before it (the window of the report's
trends), read from each run's ledger record (`reconcile_run.metrics`):

- `link_state`: the linking mode (full / change / unchanged, and why a run relinked everything), the left
  records relinked (and how many only because a citizen they could match changed), the links a change moved
  (new, changed, removed), the model id per link type;
- `entities`: the entity events per kind (created, continued, split, merged, retired) and the member rows
  the run changed; with the registry's `entity` table at the version the run committed (its ref in
  `metrics.entities.refs`, read through `lienthong.zones`), the active entities per kind after the run;
- `links.holder_citizen_idless`: the counts of the ID-less land-holder pass.

Only counts and opaque IDs (entity registry counts, model ids) are read: never an event's evidence, which
names person records by their keys. A run reconciled before the registry or the link state existed lacks
those metrics: its figures say "not recorded" (None), they are not guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lienthong import runs, zones
from lienthong.duck import session
from lienthong.entities import ENTITY_TABLE, EVENTS, KIND_PREFIX
from lienthong.settings import Settings

log = logging.getLogger(__name__)

KINDS = tuple(KIND_PREFIX)  # person, enterprise, parcel
IDLESS = ("idless_holders", "unique_name_accept", "unique_name_review", "idless_no_candidate")
LINK_CHANGES = ("new", "changed", "removed", "same")


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def entity_run(run_id: str, started_at: Any, status: str | None, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The section's figures of one run from its ledger record (`status` None: the run did not reconcile).
    Pure: the registry's active counts are added by `entity_runs`."""
    m = metrics or {}
    row: dict[str, Any] = {"run_id": run_id, "started_at": started_at, "reconcile_status": status}
    reconciled = status == "success"
    link_state = m.get("link_state") if reconciled and isinstance(m.get("link_state"), Mapping) else None
    ents = m.get("entities") if reconciled and isinstance(m.get("entities"), Mapping) else None
    row["link_state_recorded"] = link_state is not None
    row["entities_recorded"] = ents is not None

    counts: Mapping[str, Any] = (link_state or {}).get("counts") or {}
    mode = (link_state or {}).get("mode")
    row["mode"] = mode
    row["full_reason"] = counts.get("reason") if mode == "full" else None
    nothing = 0 if mode == "unchanged" else None  # an unchanged run relinked nothing and moved no link
    row["relinked"] = _int(counts.get("relinked", nothing))
    row["relinked_by_registry_change"] = _int(counts.get("relinked_by_registry_change", nothing))
    moved = counts.get("links_changed")
    row["links"] = {k: (_int(moved.get(k)) if isinstance(moved, Mapping) else nothing) for k in LINK_CHANGES}
    models = (link_state or {}).get("models")
    row["models"] = {str(k): str(v) for k, v in sorted(models.items())} if isinstance(models, Mapping) else {}

    events: Mapping[str, Any] = (ents or {}).get("events") or {}
    row["events"] = ({f"{kind}_{event}": _int((events.get(kind) or {}).get(event)) or 0
                      for kind in KINDS for event in EVENTS} if ents is not None else None)
    row["event_totals"] = ({event: sum(row["events"][f"{kind}_{event}"] for kind in KINDS) for event in EVENTS}
                           if ents is not None else None)
    row["members_changed"] = _int((ents or {}).get("members_changed"))
    row["entity_ref"] = ((ents or {}).get("refs") or {}).get(ENTITY_TABLE)
    row["active"] = None

    idless = ((m.get("links") or {}).get("holder_citizen_idless") if reconciled else None)
    row["idless"] = {k: _int(idless.get(k)) for k in IDLESS} if isinstance(idless, Mapping) else None
    return row


def active_entities(con: Any, ref: str) -> dict[str, int]:
    """Active entities per kind in the registry's entity table at version `ref`."""
    zones.register(con, "entity_at_run", ref)
    found = dict(con.execute("""SELECT kind, count(*) FILTER (WHERE status = 'active') FROM entity_at_run
                                GROUP BY kind""").fetchall())
    return {kind: int(found.get(kind, 0)) for kind in KINDS}


def entity_runs(conn: Any, trends: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """One row per run of the report's trend window (oldest first, as `trends`)."""
    from deltalake.exceptions import DeltaError
    from duckdb import Error as DuckDBError

    rows = []
    for t in trends:
        rec = runs.reconcile_run(conn, t["run_id"])
        rows.append(entity_run(t["run_id"], t["started_at"], rec.status if rec else None, rec.metrics if rec else None))
    previous: dict[str, str] = {}
    for r in rows:  # the link types whose model differs from the one the run before linked with
        r["models_changed"] = sorted(t for t, m in r["models"].items() if previous and previous.get(t) != m)
        previous = r["models"] or previous
    refs = [r for r in rows if r["entity_ref"]]
    if refs:
        with session(settings, purpose="audit") as con:
            for r in refs:
                try:
                    r["active"] = active_entities(con, r["entity_ref"])
                except (OSError, ValueError, DeltaError, DuckDBError) as exc:  # vacuumed or moved: say so
                    log.warning("entity registry of run %s not readable at %s: %s", r["run_id"], r["entity_ref"], exc)
    return rows
