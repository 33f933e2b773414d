"""Quality results land in the warehouse (the embedded PostgreSQL of lienthong.db) and in Data Docs without
personal data: raw citizens are landed and staged for real, then validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.base.landing import RawLanding
from lienthong.contracts import contract
from lienthong.db import connect
from lienthong.runs.schema import OPS_SCHEMA
from lienthong.staging import stage_json_source

pytestmark = pytest.mark.integration


def citizen(id_: str, dob: str = "2003-05-14", sex: str = "NAM") -> dict:
    return {
        "soDinhDanh": id_, "soCmndCu": None, "hoVaTen": "Nguyễn Văn An", "ngaySinh": dob, "gioiTinh": sex,
        "danToc": "Kinh", "tonGiao": "Không", "quocTich": "VN",
        "noiThuongTru": {"diaChiChiTiet": "12 Lạch Tray", "maXa": "11311", "maTinh": "31"},
        "queQuan": {"maXa": "11320", "maHuyen": "303", "maTinh": "31"}, "soHoKhau": "HK-31-000123",
        "quanHeChuHo": "CHU_HO", "trangThai": "CON_SONG", "ngayMat": None, "capNhatLuc": "2026-11-20T08:15:02+07:00",
    }


# 20 good records, one whose ID contradicts its birth year (a warning rule) and one with an invalid sex
# (a critical rule: standardization quarantines it, the gate counts it).
ITEMS = [citizen(f"0312030{i:05d}") for i in range(20)] + [citizen("031190000777"), citizen("031203000888", sex="M")]
IDS = [item["soDinhDanh"] for item in ITEMS]


@pytest.fixture
def staged(tmp_path: Path) -> dict:
    landing = RawLanding(tmp_path / "raw", "population_registry", "citizens", "iq1")
    landing.write_page(ITEMS, key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()
    result = stage_json_source(
        contract("citizen"), sorted((tmp_path / "raw").rglob("*.parquet")), run_id="iq1",
        staged_dir=tmp_path / "staged", quarantine_dir=tmp_path / "quarantine",
    )
    assert (result.rows_staged, result.rows_quarantined) == (21, 1)
    return result.as_dict()


def stored_results(run_id: str) -> dict[str, tuple]:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            f"""SELECT rule, severity, success, element_count, unexpected_count, details
                FROM {OPS_SCHEMA}.quality_result WHERE run_id = %s AND dataset = 'citizen'""",
            (run_id,),
        )
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_results_land_in_quality_result_and_data_docs_hold_no_citizen_id(staged, tmp_path):
    from lienthong.quality import validate

    run_id = "quality_store__docs"
    result = validate(
        contract("citizen"), staged["staged_path"], run_id=run_id, rows_in=staged["rows_in"],
        quarantine_by_rule=staged["quarantine_by_rule"], reports_dir=tmp_path / "reports",
    )
    rows = stored_results(run_id)
    assert len(rows) == len(result.outcomes)
    severity, success, element_count, unexpected, details = rows["personal_id_matches_birth"]
    assert (severity, success, element_count, unexpected) == ("warning", False, 22, 1)
    severity, success, element_count, unexpected, details = rows["sex:invalidValues:validValues"]
    # 1 of 22 records (quarantined by standardization) is over the 1 % tolerance
    assert (severity, success, unexpected, details["unexpected_quarantined"]) == ("critical", False, 1, 1)
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT gate_passed, failed_critical FROM {OPS_SCHEMA}.quality_run WHERE run_id = %s AND dataset = 'citizen'", (run_id,))
        assert cur.fetchone() == (False, 1)

    index = Path(result.data_docs_path)
    assert index.name == "index.html" and index.is_file()
    html = [p.read_text(encoding="utf-8") for p in index.parent.rglob("*.html")]
    assert len(html) >= 3  # index, suite, this run's validation
    for citizen_id in IDS:
        assert not any(citizen_id in page for page in html), citizen_id


def test_pipeline_validate_returns_a_json_verdict_recorded_in_the_warehouse(staged):
    from lienthong.pipeline import validate

    run_id = "quality_store__pipeline"
    verdict = validate("citizen", run_id, staged)
    assert json.loads(json.dumps(verdict)) == verdict
    assert verdict["gate_passed"] is False and verdict["failed_critical"] == ["sex:invalidValues:validValues"]
    assert verdict["rules"]["personal_id_matches_birth"]["unexpected_staged"] == 1
    assert verdict["failed_rows"] == {}  # the critical failure was already quarantined by standardization
    assert Path(verdict["data_docs_path"]).is_file()
    assert set(stored_results(run_id)) == set(verdict["rules"])
