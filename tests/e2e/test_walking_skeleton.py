"""End to end: the three DAGs run through Airflow against the sandbox, twice.

Checks against the sandbox ground truth: every citizen record served ends in staged or quarantine; the
published view returns exactly the staged rows; a second run with no source change publishes nothing new
and duplicates nothing.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest

from lienthong import zones

from .conftest import airflow_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CITIZENS = 1500


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from devstack.demo import collect_summary, run_chain

    with airflow_world(tmp_path_factory.mktemp("e2e"), citizens=CITIZENS) as world:
        runner, settings, url, endpoints, root = world.runner, world.settings, world.url, world.endpoints, world.root
        first = run_chain(runner, "first")
        after_first = collect_summary(settings, url)
        second = run_chain(runner, "second")
        after_second = collect_summary(settings, url)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT citizen_id FROM published.citizen_profile")
            view_ids = [r[0] for r in cur.fetchall()]
        yield {
            "first": first, "second": second, "after_first": after_first, "after_second": after_second,
            "data": world.data, "settings": settings, "view_ids": view_ids, "logs": root / "logs",
            "secrets": [endpoints.client_secret, endpoints.api_key]
            + [_password(d) for d in endpoints.land_dsns.values() if _password(d)],
            "airflow_home": root / "airflow",
        }


def _password(dsn: str) -> str | None:
    from psycopg2.extensions import parse_dsn

    return parse_dsn(dsn).get("password")


def _logs(chain) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(Path(chain["logs"]).glob("*.log")))


def test_all_dag_runs_succeed(chain):
    assert set(chain["first"].values()) == {"success"}, _logs(chain)
    assert set(chain["second"].values()) == {"success"}, _logs(chain)


def test_every_served_citizen_record_is_in_staged_or_quarantine(chain):
    served = pq.read_table(chain["data"] / "population" / "citizens.parquet", columns=["soDinhDanh"]).column(0).to_pylist()
    (staging,) = [s for s in chain["after_first"]["staging"] if s["dataset"] == "citizen"]
    assert staging["rows_in"] == len(served)
    assert staging["rows_staged"] + staging["rows_quarantined"] == len(served)
    assert staging["conservation_ok"]


def test_staged_and_quarantined_keys_are_exactly_the_served_keys(chain):
    settings = chain["settings"]
    served = sorted(k for k in pq.read_table(chain["data"] / "population" / "citizens.parquet", columns=["soDinhDanh"]).column(0).to_pylist() if k)
    staged = zones.read_table(settings.staged_dir / "citizen").column("citizen_id").to_pylist()
    quarantined = [k for k in zones.read_table(settings.quarantine_dir / "citizen").column("record_key").to_pylist() if k]
    assert sorted(staged + quarantined) == served


def test_published_view_returns_the_staged_rows(chain):
    settings = chain["settings"]
    staged = zones.read_table(settings.staged_dir / "citizen").column("citizen_id").to_pylist()
    assert sorted(chain["view_ids"]) == sorted(staged)
    assert len(chain["view_ids"]) == len(set(chain["view_ids"]))


def test_second_run_without_source_change_publishes_nothing_new_and_duplicates_nothing(chain):
    pubs1 = chain["after_first"]["publications"]
    pubs2 = chain["after_second"]["publications"]
    from lienthong.assets import PUBLISHED_DATASETS

    # The store-backed reconciliation_findings included: it describes the findings' state, not which run last
    # saw them. quality_summary has a test of its own below.
    stable = set(PUBLISHED_DATASETS) - {"quality_summary"}
    assert {p["dataset"] for p in pubs1} == set(PUBLISHED_DATASETS)
    assert {(p["dataset"], p["version"]) for p in pubs1 if p["dataset"] in stable} == {(d, 1) for d in stable}
    assert {(p["dataset"], p["version"]) for p in pubs2 if p["dataset"] in stable} == {(d, 1) for d in stable}, \
        "an unchanged source must not publish a new version"
    (s1,) = [s for s in chain["after_first"]["staging"] if s["dataset"] == "citizen"]
    (s2,) = [s for s in chain["after_second"]["staging"] if s["dataset"] == "citizen"]
    # The second run staged only what it landed again (the inclusive watermark's boundary records): all of it
    # already held, nothing staged or quarantined anew (or, with nothing landed, no staging run at all).
    assert s2 == s1 or (s2["rows_staged"], s2["rows_quarantined"]) == (0, 0)
    assert s2["conservation_ok"]
    settings = chain["settings"]
    assert zones.read_table(settings.staged_dir / "citizen").num_rows == s1["rows_staged"] == len(chain["view_ids"])


def test_second_run_without_source_change_publishes_no_new_quality_summary(chain):
    # quality_summary is the current outcome per dataset and rule (no run ids, no evaluation times): it changes
    # only when a stored outcome does.
    pubs1 = [(p["dataset"], p["version"]) for p in chain["after_first"]["publications"]]
    pubs2 = [(p["dataset"], p["version"]) for p in chain["after_second"]["publications"]]
    assert ("quality_summary", 1) in pubs1
    assert [p for p in pubs2 if p[0] == "quality_summary"] == [("quality_summary", 1)], \
        "an unchanged source must not publish a new version"


def test_published_parquet_version_has_a_manifest_matching_the_view(chain):
    import json

    settings = chain["settings"]
    folder = settings.published_dir / "citizen_profile"
    assert (folder / "CURRENT").read_text().strip() == "v000001"
    manifest = json.loads((folder / "v000001" / "_manifest.json").read_text())
    assert manifest["row_count"] == len(chain["view_ids"])
    assert manifest["lineage"]["citizen"]["ingest_runs"], "the manifest must name the raw extracts it came from"
    part = folder / "v000001" / manifest["files"][0]["path"]
    assert pq.read_table(part).num_rows == manifest["row_count"]


def test_quarantine_is_exactly_the_records_the_sandbox_malformed(chain):
    """Ground truth: the generator's `malformed_dob` records (and only they) are unusable in the registry."""
    noise = pq.read_table(chain["data"] / "truth" / "noise.parquet").to_pylist()
    malformed = {r["record_key"] for r in noise if r["dataset"] == "citizen" and r["noise"] == "malformed_dob"}
    assert malformed, "the fixture's seed must produce some malformed records"
    settings = chain["settings"]
    rows = zones.read_table(settings.quarantine_dir / "citizen").to_pylist()
    assert {r["record_key"] for r in rows} == malformed
    for r in rows:
        assert any("unparseable" in reason and "birth_date (ngaySinh)" in reason and r["record_key"] in reason for reason in r["reasons"])
        assert r["payload"].startswith("{") and r["record_key"] in r["payload"]


def test_no_secret_appears_in_logs_raw_files_or_reports(chain):
    """Client secret, API key and database passwords must not leak into anything the platform writes."""
    secrets = [s for s in chain["secrets"] if s and len(s) >= 8]
    assert len(secrets) >= 2
    places = [chain["logs"], chain["settings"].data_dir, Path(chain["airflow_home"]) / "logs"]
    scanned = 0
    for place in places:
        for path in Path(place).rglob("*"):
            if not path.is_file() or "warehouse-pg" in path.parts or path.suffix in (".db",):
                continue
            data = path.read_bytes()
            scanned += 1
            for secret in secrets:
                assert secret.encode() not in data, f"a secret leaked into {path}"
    assert scanned > 10
