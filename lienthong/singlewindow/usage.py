"""A citizen's data-usage history: who used the person's data, when, why and on what legal basis.

Owns the answer of `GET /v1/citizens/{id}/usage` (the citizen portal's key only), in the shape of the Estonian
Data Tracker's `findUsage` (time, action, receiver, newest first, offset/limit), from two sources:

* `lookup`: every answered lookup (status 200) whose answer held the person's data: the access log's `subjects`
  (`lienthong.subjects`: the person looked up, an enterprise's representatives, a parcel's holders, as far as
  the agency's grant showed them), with the purpose, its legal basis and the case id the agency declared;
* `bulk_read`: every PostgreSQL session of an agency role whose views served a published version containing the
  person (`lienthong.sessions.bulk_reads_of`: bulk sharing made visible per person), with the version and the
  session's login time; reads of versions that retention dropped cannot be checked and are counted in
  `unchecked`, never listed as if they held the person.

An entry whose `embargo_until` (a purpose's `embargo_days`, e.g. an inspection) lies in the future is left out
and not counted, until that date. The portal's own reads are in the access log (dataset `usage_history`) but
hold no subject, so they never show in anyone's history. Legal basis of the history itself: the data subject's
right to know about the processing of their data (Law 91/2025/QH15, Art. 4(1)(a)).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lienthong.access import Agency
from lienthong.contracts import Contract
from lienthong.runs.schema import OPS_SCHEMA

DATASET = "usage_history"
PURPOSE = "data_subject_access"
RIGHT_TO_KNOW = "91/2025/QH15, Art. 4(1)(a)"  # agencies.yaml `pdp_right_to_know`; checked by a unit test
MAX_LIMIT = 200


@dataclass(frozen=True)
class Usage:
    """One entry of the history."""

    at: datetime
    action: str  # 'lookup' or 'bulk_read'
    agency: str
    dataset: str
    version: int | None
    purpose: str | None
    legal_basis: str | None
    case_id: str | None

    def as_json(self, agencies: dict[str, Agency]) -> dict[str, Any]:
        agency = agencies.get(self.agency)
        return {"logTime": self.at.astimezone(UTC).isoformat(), "action": self.action, "receiver": self.agency,
                "receiverName": agency.title if agency else self.agency, "dataset": self.dataset,
                "version": self.version, "purpose": self.purpose, "legalBasis": self.legal_basis,
                "caseId": self.case_id}


_LOOKUPS = f"""
SELECT at, agency, dataset, purpose, legal_basis, case_id FROM {OPS_SCHEMA}.access_log
WHERE subjects @> ARRAY[%(person)s]::text[] AND status_code = 200
  AND (embargo_until IS NULL OR embargo_until <= %(now)s)
ORDER BY at DESC, id DESC LIMIT %(upto)s"""
_COUNT = f"""
SELECT count(*) FROM {OPS_SCHEMA}.access_log
WHERE subjects @> ARRAY[%(person)s]::text[] AND status_code = 200
  AND (embargo_until IS NULL OR embargo_until <= %(now)s)"""


def find_usage(conn: Any, citizen_id: str, agencies: dict[str, Agency], contracts: dict[str, Contract], *,
               offset: int = 0, limit: int = 50, now: datetime | None = None) -> dict[str, Any]:
    """The person's history, newest first: `total` entries, `usages` from `offset`, at most `limit`;
    `unchecked` reads of versions no longer kept. `conn` is a psycopg2 connection of the platform."""
    from lienthong.sessions import bulk_reads_of

    now = now or datetime.now(UTC)
    params = {"person": citizen_id, "now": now, "upto": offset + limit}
    with conn.cursor() as cur:
        cur.execute(_COUNT, params)
        lookups_total = int(cur.fetchone()[0])
        cur.execute(_LOOKUPS, params)
        entries = [Usage(at, "lookup", agency, dataset, None, purpose, basis, case_id)
                   for at, agency, dataset, purpose, basis, case_id in cur.fetchall()]
    bulk = bulk_reads_of(conn, citizen_id, agencies, contracts)
    shown = [b for b in bulk if b.embargo_until is None or b.embargo_until <= now]
    entries += [Usage(b.at, "bulk_read", b.agency, b.dataset, b.version, b.purpose, b.legal_basis, b.case_id)
                for b in shown]
    entries.sort(key=lambda u: u.at, reverse=True)
    return {"personId": citizen_id, "offset": offset, "limit": limit, "total": lookups_total + len(shown),
            "unchecked": bulk.unchecked,
            "usages": [u.as_json(agencies) for u in entries[offset:offset + limit]]}
