"""The quality gate with a real warehouse: a poisoned batch (6 % invalid personal IDs where the contract
allows 1 %) stops publication, and the published view keeps returning the previous version."""

from __future__ import annotations

import psycopg2
import pytest

from connectors.base.landing import RawLanding
from lienthong.contracts import contract
from lienthong.db import ensure_database, warehouse_url
from lienthong.publish import QualityGateFailed, publish
from lienthong.quality import validate
from lienthong.staging import StagePlan, stage_json_source

pytestmark = pytest.mark.integration


def citizen(i: int, id_: str | None = None) -> dict:
    year = 1950 + i % 60
    sex = "NAM" if i % 2 else "NU"
    digit = (0 if year < 2000 else 2) + (0 if sex == "NAM" else 1)
    return {
        "soDinhDanh": id_ or f"031{digit}{year % 100:02d}{i:06d}", "soCmndCu": None, "hoVaTen": f"Nguyễn Văn {i}",
        "ngaySinh": f"{year}-05-14", "gioiTinh": sex, "danToc": "Kinh", "tonGiao": "Không", "quocTich": "VN",
        "noiThuongTru": {"diaChiChiTiet": "12 Lạch Tray", "maXa": "11602", "maTinh": "31"},
        "queQuan": {"maXa": "11602", "maHuyen": None, "maTinh": "31"}, "soHoKhau": "HK-1", "quanHeChuHo": "CHU_HO",
        "trangThai": "CON_SONG", "ngayMat": None, "capNhatLuc": f"2026-11-{10 + i % 10:02d}T08:00:00+07:00",
    }


def run(tmp_path, url, run_id, items):
    landing = RawLanding(tmp_path / "raw", "population_registry", "citizens", run_id)
    landing.write_page(items, key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()
    c = contract("citizen")
    staged = stage_json_source(c, StagePlan.from_contract(c).raw_files(tmp_path / "raw"), run_id=run_id,
                               staged_dir=tmp_path / "staged", quarantine_dir=tmp_path / "quarantine")
    verdict = validate(c, staged.staged_path, run_id=run_id, rows_in=staged.rows_in,
                       quarantine_by_rule=staged.quarantine_by_rule, warehouse_url=url)
    return staged, verdict


def view_rows(url) -> tuple[int, str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM published.citizen_profile")
        (n,) = cur.fetchone()
        cur.execute("SELECT obj_description('published.citizen_profile'::regclass)")
        (comment,) = cur.fetchone()
    return n, comment


def test_poisoned_batch_stops_publication_and_the_previous_version_stays(tmp_path):
    url = ensure_database(warehouse_url(), "gate_test_" + tmp_path.name.replace("-", "_")[-20:].lower())
    profile = contract("citizen_profile")

    staged1, verdict1 = run(tmp_path, url, "good", [citizen(i) for i in range(300)])
    assert verdict1.gate_passed and staged1.rows_quarantined == 0
    first = publish(profile, {"citizen": staged1.staged_path}, run_id="good", gate_passed=True,
                    published_dir=tmp_path / "published", lineage={}, quality={}, url=url)
    assert first.version == 1 and view_rows(url)[0] == 300

    poison = [citizen(1000 + i, id_=f"0312{i:07d}") for i in range(20)]  # 11 digits: 20 of 320 = 6 %
    staged2, verdict2 = run(tmp_path, url, "poisoned", [citizen(i) for i in range(300)] + poison)
    assert staged2.rows_quarantined == 20
    assert not verdict2.gate_passed
    failed = {o.rule: o for o in verdict2.failed_critical}
    assert "citizen_id:invalidValues:pattern" in failed
    assert failed["citizen_id:invalidValues:pattern"].unexpected_count == 20
    with pytest.raises(QualityGateFailed, match="previously published version stays"):
        publish(profile, {"citizen": staged2.staged_path}, run_id="poisoned", gate_passed=verdict2.gate_passed,
                published_dir=tmp_path / "published", lineage={}, quality={"failed_critical": list(failed)}, url=url)
    n, comment = view_rows(url)
    assert n == 300 and "v000001" in comment
    assert (tmp_path / "published" / "citizen_profile" / "CURRENT").read_text().strip() == "v000001"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT gate_passed FROM lienthong_ops.quality_run WHERE run_id = 'poisoned' AND dataset = 'citizen'")
        assert cur.fetchone() == (False,)
