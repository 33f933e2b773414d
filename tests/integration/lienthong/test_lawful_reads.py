"""Lawful and transparent reads, over the real service (uvicorn subprocess) and a real warehouse with the agencies'
access and session log applied: a lookup needs a purpose its grant lists and a case id, and a refused one is
logged as refused; a citizen's usage history (citizen portal key only) lists exactly the reads of that person,
by lookup and by agency-role database session, with purpose, legal basis and case, nothing of other people, and
hides embargoed entries until their date."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from agency_fixtures import (
    AN,
    AN_PHAT,
    BINH,
    DATASETS,
    password_auth_for_agencies,
    published_database,
    secrets_in_env,
)
from psycopg2.extensions import connection
from singlewindow_service import Server, service_for

from lienthong import runs
from lienthong.access import PASSWORD_ENV_PREFIX, apply_access, load_agencies
from lienthong.contracts import load_contracts
from lienthong.db import connect
from lienthong.singlewindow import usage
from lienthong.singlewindow.principals import PORTAL

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
CITIZEN = "/v1/citizens/{}/profile"
ENTERPRISE = f"/v1/enterprises/{AN_PHAT['enterprise_code']}/profile"
AN_PARCEL = "/v1/parcels/11311/12/345"  # held by An, in province 31 (the land department's filter)


def record_fixture_publications(url: str) -> None:
    """The fixture tables as version 1 of each dataset in the publication ledger (what publish records)."""
    with connect(url) as conn:
        for ds in DATASETS:
            runs.record_publication(conn, runs.Publication(ds, 1, "fixture", "0" * 64, 1, "1.0.0", f"{ds}__v000001",
                                                           f"/nonexistent/{ds}/v000001"))


@pytest.fixture(scope="module")
def warehouse() -> Iterator[tuple[str, dict[str, str]]]:
    with secrets_in_env() as env:
        url = published_database("lawful_reads")
        record_fixture_publications(url)
        with password_auth_for_agencies(url):
            report = apply_access(url)
            assert not getattr(report, "session_log_problems", None), report
            yield url, env


@pytest.fixture(scope="module")
def server(warehouse, tmp_path_factory) -> Iterator[Server]:
    url, secret_env = warehouse
    with service_for(url, secret_env, [*AGENCIES, PORTAL], tmp_path_factory.mktemp("lawful")) as server:
        yield server


def log_since(url: str, after: int) -> list[dict]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("""SELECT agency, dataset, purpose, case_id, legal_basis, refusal, status_code, subjects
                       FROM lienthong_ops.access_log WHERE id > %s ORDER BY id""", (after,))
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def last_id(url: str) -> int:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM lienthong_ops.access_log")
        return cur.fetchone()[0]


# --- purpose on every read ------------------------------------------------------------------------------------

def test_a_read_without_purpose_or_case_or_with_a_purpose_outside_the_grant_is_refused_and_logged(warehouse, server):
    url, _ = warehouse
    before = last_id(url)
    path = CITIZEN.format(AN["citizen_id"])
    missing = server.get(path, "tax_department", purpose=None)
    assert missing.status_code == 400 and "X-Purpose" in missing.json()["detail"]
    assert "tax_registration" in missing.json()["detail"]  # it names the purposes the grant lists
    outside = server.get(path, "tax_department", purpose="one_stop_procedure")  # the desk's, not the tax office's
    assert outside.status_code == 403 and "one_stop_procedure" in outside.json()["detail"]
    no_case = server.get(path, "tax_department", case_id=None)
    assert no_case.status_code == 400 and "X-Case-Id" in no_case.json()["detail"]
    bad_case = server.get(path, "tax_department", case_id="HS 1; DROP")
    assert bad_case.status_code == 400 and "X-Case-Id" in bad_case.json()["detail"]
    ok = server.get(path, "tax_department", purpose="taxpayer_info_exchange", case_id="TAX-2026-7")
    assert ok.status_code == 200 and ok.json()["citizen_id"] == AN["citizen_id"]

    rows = log_since(url, before)
    assert [(r["status_code"], r["purpose"]) for r in rows] == [
        (400, None), (403, "one_stop_procedure"), (400, "tax_registration"), (400, "tax_registration"),
        (200, "taxpayer_info_exchange")]
    for r in rows[:4]:  # refused: the reason kept, no basis (no purpose was accepted), nobody's data shared
        assert r["refusal"] and r["legal_basis"] is None and r["subjects"] == []
    assert rows[0]["refusal"] == missing.json()["detail"] and rows[1]["refusal"] == outside.json()["detail"]
    answered = rows[4]
    assert answered["case_id"] == "TAX-2026-7" and answered["refusal"] is None
    assert answered["legal_basis"] == AGENCIES["tax_department"].purposes["taxpayer_info_exchange"].legal_basis
    assert answered["subjects"] == [AN["citizen_id"]]


def test_each_key_opens_only_its_own_kind_of_route(server):
    assert server.get(CITIZEN.format(AN["citizen_id"]), key=server.keys[PORTAL]).status_code == 403
    refused = server.get(f"/v1/citizens/{AN['citizen_id']}/usage", "single_window_desk")
    assert refused.status_code == 403 and "citizen portal" in refused.json()["detail"]


def test_an_answer_records_the_persons_it_held_as_the_grant_shows_them(warehouse, server):
    url, _ = warehouse
    before = last_id(url)
    assert server.get(ENTERPRISE, "single_window_desk").status_code == 200
    assert server.get(AN_PARCEL, "land_department").status_code == 200
    desk, land = log_since(url, before)
    assert desk["subjects"] == sorted(r["citizen_id"] for r in AN_PHAT["representatives"] if r["citizen_id"])
    assert land["subjects"] == [AN["citizen_id"]]  # the person holder; the enterprise holder is not a person
    # the land department is not granted the representatives: its look-up of the enterprise shares nobody
    assert AGENCIES["land_department"].grants["enterprise_profile"].columns["representatives"] == "hidden"
    before = last_id(url)
    assert server.get(ENTERPRISE, "land_department").status_code == 200
    assert log_since(url, before)[0]["subjects"] == []


# --- a citizen's data-usage history ---------------------------------------------------------------------------

def agency_session(url: str, agency: str, purpose: str | None = None, case_id: str | None = None) -> connection:
    import psycopg2

    opts = " ".join(f"-c lienthong.{k}={v}" for k, v in (("purpose", purpose), ("case_id", case_id)) if v)
    conn = psycopg2.connect(url, user=AGENCIES[agency].role,
                            password=os.environ[PASSWORD_ENV_PREFIX + agency.upper()], options=opts or None)
    conn.autocommit = True
    return conn


def usage_of(server: Server, citizen_id: str, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    r = server.get(f"/v1/citizens/{citizen_id}/usage" + (f"?{query}" if query else ""), key=server.keys[PORTAL])
    assert r.status_code == 200, r.text
    return r.json()


def test_the_usage_history_lists_exactly_the_reads_of_the_person(warehouse, server):
    url, _ = warehouse
    person = "031085001234"
    assert person == AN["citizen_id"]
    before = usage_of(server, person)
    # the reads made here: three lookups showing An, one of someone else, one refused, one agency session
    assert server.get(CITIZEN.format(person), "single_window_desk", purpose="applicant_identity_check",
                      case_id="MC-01").status_code == 200
    assert server.get(ENTERPRISE, "tax_department", purpose="taxpayer_info_exchange", case_id="T-02").status_code == 200
    assert server.get(AN_PARCEL, "land_department", case_id="LD-03").status_code == 200
    assert server.get(CITIZEN.format(BINH["citizen_id"]), "single_window_desk", case_id="MC-04").status_code == 200
    assert server.get(CITIZEN.format(person), "tax_department", purpose=None).status_code == 400
    session = agency_session(url, "tax_department", purpose="tax_registration", case_id="BULK-05")
    with session.cursor() as cur:
        cur.execute("SELECT count(*) FROM agency_tax_department.citizen_profile")
        assert cur.fetchone()[0] >= 1
    session.close()

    after = usage_of(server, person)
    new = after["usages"][:after["total"] - before["total"]]
    lookups = [(u["receiver"], u["dataset"], u["purpose"], u["caseId"]) for u in new if u["action"] == "lookup"]
    assert lookups == [("land_department", "parcel_register", "land_registration_holder_verification", "LD-03"),
                       ("tax_department", "enterprise_profile", "taxpayer_info_exchange", "T-02"),
                       ("single_window_desk", "citizen_profile", "applicant_identity_check", "MC-01")]
    bulk = [(u["receiver"], u["dataset"], u["version"], u["purpose"], u["caseId"]) for u in new
            if u["action"] == "bulk_read"]
    tax = AGENCIES["tax_department"]
    # the session could read every dataset the tax office is granted that holds An as it sees it
    assert bulk == sorted([("tax_department", ds, 1, "tax_registration", "BULK-05") for ds in tax.grants],
                          key=lambda b: b[1])
    for u in new:
        assert u["legalBasis"] and "91/2025/QH15, Art. 19(1)(c)" in u["legalBasis"]
        assert u["receiverName"] == AGENCIES[u["receiver"]].title
    times = [u["logTime"] for u in after["usages"]]
    assert times == sorted(times, reverse=True)  # newest first
    # nothing of anyone else: Bình's history has the lookup of Bình and no read of An
    binh = usage_of(server, BINH["citizen_id"])
    assert ("single_window_desk", "MC-04") in {(u["receiver"], u["caseId"]) for u in binh["usages"]}
    assert not {"MC-01", "T-02", "LD-03"} & {u["caseId"] for u in binh["usages"]}
    # paging: offset/limit over the same order
    page = usage_of(server, person, offset=1, limit=2)
    assert page["usages"] == after["usages"][1:3] and page["total"] == after["total"]
    # the portal's own reads are logged, and show in nobody's history
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("""SELECT count(*), min(legal_basis) FROM lienthong_ops.access_log
                       WHERE agency = %s AND dataset = %s AND lookup_key = %s""", (PORTAL, usage.DATASET, person))
        count, basis = cur.fetchone()
    assert count >= 3 and basis == usage.RIGHT_TO_KNOW


def test_reads_for_an_investigation_stay_hidden_until_the_embargo_ends(warehouse, server):
    url, _ = warehouse
    person = AN["citizen_id"]
    audit = AGENCIES["auditors"]
    assert audit.purposes["inspection_evidence_review"].embargo_days == 180
    before = usage_of(server, person)
    agency_session(url, "auditors", purpose="inspection_evidence_review", case_id="INSP-9").close()
    hidden = usage_of(server, person)
    assert hidden["total"] == before["total"] and "INSP-9" not in {u["caseId"] for u in hidden["usages"]}
    # 181 days later (the session's login moved back): shown, with the investigation's basis
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE lienthong_ops.agency_session SET at = at - interval '181 days' WHERE case_id = 'INSP-9'")
        assert cur.rowcount == 1
    shown = usage_of(server, person)
    entries = [u for u in shown["usages"] if u["caseId"] == "INSP-9"]
    assert entries and all(u["purpose"] == "inspection_evidence_review" and u["receiver"] == "auditors"
                           for u in entries)
    assert shown["total"] > before["total"]


def test_an_embargoed_lookup_is_hidden_until_its_date(warehouse):
    """The lookup side of the embargo, on the same access log the service writes: find_usage at two dates."""
    url, _ = warehouse
    from lienthong.singlewindow.audit import AccessLog, AccessRecord

    log = AccessLog(url, 1)
    try:
        log.write(AccessRecord("auditors", "inspection_evidence_review", "reconciliation_findings", "x", 1, 200, 1.0,
                               secrets.token_hex(16), case_id="INSP-LOOKUP", legal_basis="b", subjects=(BINH["citizen_id"],),
                               embargo_until=datetime.now(UTC) + timedelta(days=180)))
    finally:
        log.close()
    contracts = load_contracts()
    with connect(url) as conn:
        today = usage.find_usage(conn, BINH["citizen_id"], AGENCIES, contracts, limit=usage.MAX_LIMIT)
        later = usage.find_usage(conn, BINH["citizen_id"], AGENCIES, contracts, limit=usage.MAX_LIMIT,
                                 now=datetime.now(UTC) + timedelta(days=181))
    def lookups(history: dict) -> list[str | None]:
        assert history["total"] == len(history["usages"])  # one page holds it all here
        return [u["caseId"] for u in history["usages"] if u["action"] == "lookup"]

    assert "INSP-LOOKUP" not in lookups(today)
    assert sorted(lookups(later), key=str) == sorted([*lookups(today), "INSP-LOOKUP"], key=str)


def test_the_audit_report_counts_reads_per_caller_and_purpose_with_refusals(warehouse, server):
    from lienthong.audit.collect import _reads

    url, _ = warehouse
    path = CITIZEN.format(AN["citizen_id"])
    with connect(url) as conn:
        before = {(r["agency"], r["dataset"], r["purpose"]): r for r in _reads(conn)}
    assert server.get(path, "land_department", purpose="cadastral_record_update", case_id="LD-A").status_code == 200
    assert server.get(path, "land_department", purpose="cadastral_record_update", case_id="LD-B").status_code == 200
    assert server.get(path, "land_department", purpose="tax_registration").status_code == 403
    with connect(url) as conn:
        after = {(r["agency"], r["dataset"], r["purpose"]): r for r in _reads(conn)}

    def grew(key, column):
        return after[key][column] - (before[key][column] if key in before else 0)

    key = ("land_department", "citizen_profile", "cadastral_record_update")
    assert grew(key, "answered") == 2 and grew(key, "refused") == 0
    assert after[key]["legal_basis"] == AGENCIES["land_department"].purposes["cadastral_record_update"].legal_basis
    assert grew(("land_department", "citizen_profile", "tax_registration"), "refused") == 1
