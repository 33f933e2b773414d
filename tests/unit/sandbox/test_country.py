"""The synthetic country: real 2025 province codes, the cross-province facts at their configured rates, the
one-ID-in-two-provinces pairs in the truth, national rows, determinism; and the province generator's output
unchanged.

Small: three provinces of 300 citizens (about 1.5 s a country). Rates are checked like the noise rates in
test_generator.py: each fact is an independent draw per eligible unit, so k of n has mean n*p and standard
deviation sqrt(n*p*(1-p)); we allow 4 standard deviations + 2. The rate test raises the rates (0.3, and
0.03 for the shared IDs) so that 900 citizens give dozens to hundreds of each fact.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from stdnum.vn import mst

from lienthong import adminunits
from sandbox.business_api import EnterpriseStore
from sandbox.generate import main as cli_main
from sandbox.generator import (
    COUNTRY_DEFAULTS,
    CountryConfig,
    GeneratorConfig,
    country_provinces,
    generate,
)
from sandbox.generator.config import split_citizens
from sandbox.generator.places import old_to_new_province
from sandbox.population_api import CitizenStore

THREE = {"31": 300, "79": 300, "01": 300}
HIGH = {"moved_province": 0.3, "land_other_province": 0.3, "org_land_other_province": 0.3,
        "representative_other_province": 0.3, "id_two_provinces": 0.03}
SOURCE = ("population/citizens.parquet", "business/enterprises.parquet")
LAND = (("thua_dat", "parcel"), ("chu_su_dung", "land_holder"), ("giay_chung_nhan", "certificate"))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(folder: Path, rel: str) -> list[dict]:
    return pq.read_table(folder / rel).to_pylist()


def _within(k: int, n: int, p: float) -> bool:
    tol = 4 * math.sqrt(n * p * (1 - p)) + 2
    return n * p - tol <= k <= n * p + tol


@pytest.fixture(scope="module")
def country(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("country")
    generate(CountryConfig(citizens_per_province=THREE), folder)
    return folder


@pytest.fixture(scope="module")
def busy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("busy")
    generate(CountryConfig(citizens_per_province=THREE, seed=5, rates=HIGH), folder)
    return folder


class _Truth:
    def __init__(self, folder: Path) -> None:
        self.cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.persons = {p["person_id"]: p for p in _rows(folder, "truth/persons.parquet")}
        self.enterprises = {e["enterprise_id"]: e for e in _rows(folder, "truth/enterprises.parquet")}
        self.links = _rows(folder, "truth/links.parquet")


@pytest.fixture(scope="module")
def truth(country) -> _Truth:
    return _Truth(country)


@pytest.fixture(scope="module")
def busy_truth(busy) -> _Truth:
    return _Truth(busy)


# --- provinces and layout -----------------------------------------------------------------------------

def test_country_provinces_are_real_2025_codes_pilot_first():
    codes = {c.province_code for c in adminunits.new_communes().values()}
    assert len(codes) == 34
    assert country_provinces(3) == ("31", "79", "01")
    assert set(country_provinces(34)) == codes
    with pytest.raises(ValueError, match="2025 province codes"):
        CountryConfig(provinces=("31", "30"))  # 30 Hải Dương is a pre-2025 code: merged into 31
    with pytest.raises(ValueError, match="two distinct"):
        CountryConfig(provinces=("31", "31"))
    with pytest.raises(ValueError, match="unknown country rates"):
        CountryConfig(rates={"teleport": 0.1})


def test_a_total_is_split_by_population_and_sums_exactly():
    split = split_citizens(900, ("31", "79", "01"))
    assert sum(split.values()) == 900
    assert split["79"] > split["01"] > split["31"] >= 10  # HCMC ~14M, Hà Nội ~8.7M, Hải Phòng ~4.7M
    everyone = split_citizens(1000, country_provinces(34))
    assert sum(everyone.values()) == 1000 and min(everyone.values()) >= 10
    with pytest.raises(ValueError, match="at least"):
        split_citizens(20, ("31", "79", "01"))


def test_the_layout_is_the_province_layout_with_one_land_database_per_province(country, truth, tmp_path):
    assert truth.cfg["provinces"] == ["31", "79", "01"]
    assert truth.cfg["citizens_per_province"] == THREE
    assert sorted(p.name for p in (country / "land").iterdir()) == ["01", "31", "79"]
    # Source files have exactly the province generator's schemas: the same servers serve them.
    generate(GeneratorConfig(citizens=30, land_provinces=("31",)), tmp_path)
    for rel in (*SOURCE, *(f"land/31/{t}.parquet" for t, _ in LAND)):
        assert pq.read_schema(country / rel).equals(pq.read_schema(tmp_path / rel)), rel
        rows = pq.read_table(country / rel, columns=["_row"])["_row"].to_pylist()
        assert rows == list(range(len(rows)))
    for rel, extra in (("truth/persons.parquet", ["home_province", "id_province", "moved", "shares_id_with"]),
                       ("truth/enterprises.parquet", ["province"]),
                       ("truth/links.parquet", ["record_province", "entity_province", "cross_province", "shared_id"]),
                       ("truth/noise.parquet", [])):
        assert pq.read_schema(country / rel).names == pq.read_schema(tmp_path / rel).names + extra
    # Citizens live in the country's provinces; each province has its residents and its enterprises.
    homes = Counter(p["home_province"] for p in truth.persons.values() if p["in_registry"])
    assert homes == Counter(THREE)
    assert set(Counter(e["province"] for e in truth.enterprises.values())) == set(THREE)
    assert not list(country.glob(".country-*"))  # the temporary runs are gone


def test_the_sandbox_servers_read_a_country(country, busy):
    citizens = CitizenStore(country / "population/citizens.parquet")
    assert len(citizens) == pq.read_metadata(country / "population/citizens.parquet").num_rows
    firms = EnterpriseStore(country / "business/enterprises.parquet")
    assert firms.table.num_rows == pq.read_metadata(country / "business/enterprises.parquet").num_rows
    # A shared ID is one key with two records: a batchGet finds both.
    store = CitizenStore(busy / "population/citizens.parquet")
    ids = Counter(store.table["soDinhDanh"].to_pylist())
    shared = next(k for k, v in ids.items() if v == 2)
    assert len(store.rows_for_ids(shared)) == 2


def test_national_registries_are_in_walk_order_and_cover_every_province(country):
    rows = _rows(country, "population/citizens.parquet")
    keys = [(r["capNhatLuc"], r["soDinhDanh"]) for r in rows]
    assert keys == sorted(keys)
    moved_code = {n["record_key"] for n in _rows(country, "truth/noise.parquet") if n["noise"] == "old_commune_code"}
    provinces = Counter(r["noiThuongTru"]["maTinh"] for r in rows if r["soDinhDanh"] not in moved_code)
    assert set(provinces) == set(THREE)
    firms = _rows(country, "business/enterprises.parquet")
    assert {r["MaSoDN"][:2] for r in firms} == {"02", "03", "01"}  # the tax offices of 31, 79 and 01


def test_land_parcels_lie_in_their_province(country, truth):
    old, new = adminunits.old_communes(), adminunits.new_communes()
    to_new = old_to_new_province()
    for code in THREE:
        for r in _rows(country, f"land/{code}/thua_dat.parquet"):
            c = r["ma_xa"]
            assert (c in new and new[c].province_code == code) or (c in old and to_new[old[c].province_code] == code)


# --- truth --------------------------------------------------------------------------------------------

def test_links_cover_every_record_with_its_national_row(country, truth):
    cit = _rows(country, "population/citizens.parquet")
    firms = _rows(country, "business/enterprises.parquet")
    for dataset, rows, key in (("citizen", cit, "soDinhDanh"), ("enterprise", firms, "MaSoDN")):
        links = [lk for lk in truth.links if lk["dataset"] == dataset]
        assert sorted(lk["source_row"] for lk in links) == list(range(len(rows)))
        assert all(rows[lk["source_row"]][key] == lk["record_key"] for lk in links)
    reps = sorted((lk["source_row"], lk["record_key"]) for lk in truth.links if lk["dataset"] == "representative")
    assert reps == sorted((r["_row"], f"{r['MaSoDN']}#{i}") for r in firms for i in range(len(r["NguoiDaiDien"])))
    for code in THREE:
        for table, dataset in LAND:
            n = pq.read_metadata(country / f"land/{code}/{table}.parquet").num_rows
            rows = sorted(lk["source_row"] for lk in truth.links
                          if lk["dataset"] == dataset and lk["record_province"] == code)
            assert rows == list(range(n))
    for n in _rows(country, "truth/noise.parquet"):
        if n["dataset"] == "citizen":
            assert cit[n["source_row"]]["soDinhDanh"] == n["record_key"]
        elif n["dataset"] == "enterprise":
            assert firms[n["source_row"]]["MaSoDN"] == n["record_key"]
    assert len({(lk["dataset"], lk["record_key"], lk["record_province"]) for lk in truth.links}) == len(truth.links)


def test_cross_province_flags_agree_with_the_truth(truth):
    for lk in truth.links:
        if lk["person_id"] is not None:
            entity = truth.persons[lk["person_id"]]["home_province"]
        elif lk["enterprise_id"] is not None:
            entity = truth.enterprises[lk["enterprise_id"]]["province"]
        else:
            entity = None
        assert lk["entity_province"] == entity
        assert lk["cross_province"] == (entity is not None and entity != lk["record_province"])
        if lk["dataset"] in ("citizen", "enterprise"):
            assert not lk["cross_province"]
    assert sum(lk["cross_province"] for lk in truth.links if lk["dataset"] == "land_holder") > 0


def test_ids_are_unique_in_the_country_but_for_the_pairs_and_agree_with_birth_and_sex(truth):
    by_id = defaultdict(list)
    for p in truth.persons.values():
        by_id[p["so_dinh_danh"]].append(p)
        year, sex = p["ngay_sinh"].year, p["gioi_tinh"]
        century = (year // 100 - 19) * 2
        allowed = {century, century + 1} if sex == "KHAC" else {century + (sex == "NU")}
        assert int(p["so_dinh_danh"][3]) in allowed and p["so_dinh_danh"][4:6] == f"{year % 100:02d}"
    assert all(len(v) == 1 or all(p["shares_id_with"] is not None for p in v) for v in by_id.values())
    cards = Counter(p["so_cmnd_cu"] for p in truth.persons.values() if p["so_cmnd_cu"])
    assert max(cards.values()) == 1
    firms = list(truth.enterprises.values())
    assert all(mst.is_valid(e["ma_so_dn"]) for e in firms)
    assert len({e["ma_so_dn"] for e in firms}) == len({e["ten_dn"] for e in firms}) == len(firms)


def test_the_id_says_where_a_citizen_was_registered_and_moved_says_it_is_not_home(busy_truth):
    to_new = old_to_new_province()
    citizens = [p for p in busy_truth.persons.values() if p["in_registry"]]
    for p in citizens:
        if p["shares_id_with"] is None:
            assert to_new[p["so_dinh_danh"][1:3]] == p["id_province"]
        assert p["moved"] == (p["home_province"] != p["id_province"])
    assert {p["id_province"] for p in citizens if p["moved"]} - set(THREE)  # from all over the country


# --- the cross-province facts at their rates -------------------------------------------------------------

def test_each_cross_province_fact_is_drawn_at_its_configured_rate(busy_truth):
    counts = busy_truth.cfg["country_counts"]
    assert set(counts) == set(COUNTRY_DEFAULTS)
    for name, c in counts.items():
        assert c["eligible"] > 0, name
        assert _within(c["applied"], c["eligible"], HIGH[name]), f"{name}: {c} at {HIGH[name]}"
    assert busy_truth.cfg["country_rates"] == {k: HIGH[k] for k in sorted(HIGH)}


def test_the_truth_shows_the_facts_at_their_rates(busy, busy_truth):
    persons, links = busy_truth.persons, busy_truth.links
    citizens = [p for p in persons.values() if p["in_registry"]]
    assert _within(sum(p["moved"] for p in citizens), len(citizens), HIGH["moved_province"])
    reps = [lk for lk in links if lk["dataset"] == "representative" and persons[lk["person_id"]]["in_registry"]]
    # (The deceased_representative noise swaps a few for a deceased local: within the tolerance.)
    assert _within(sum(lk["cross_province"] for lk in reps), len(reps), HIGH["representative_other_province"])
    docs: dict[tuple, list] = defaultdict(list)
    by_key = {(lk["record_province"], lk["record_key"]): lk for lk in links if lk["dataset"] == "certificate"}
    for code in THREE:
        for r in _rows(busy, f"land/{code}/giay_chung_nhan.parquet"):
            docs[(code, r["so_phat_hanh"], r["thua_dat_id"])].append(by_key[(code, f"{code}:{r['id']}")])
    held = [v for v in docs.values() if v[0]["person_id"] is not None]
    away = [v for v in held if any(lk["cross_province"] and persons[lk["person_id"]]["in_registry"] for lk in v)]
    assert _within(len(away), len(held), HIGH["land_other_province"])
    for v in away:  # the holders of one certificate come from one other province
        assert len({persons[lk["person_id"]]["home_province"] for lk in v}) == 1
    org = [v for v in docs.values() if v[0]["enterprise_id"] is not None]
    assert _within(sum(v[0]["cross_province"] for v in org), len(org), HIGH["org_land_other_province"])


def test_default_rates_hold_in_a_default_country(truth):
    for name, c in truth.cfg["country_counts"].items():
        assert _within(c["applied"], c["eligible"], COUNTRY_DEFAULTS[name]), f"{name}: {c}"


def test_one_id_registered_in_two_provinces_is_in_the_truth(busy, busy_truth):
    persons = busy_truth.persons
    shared = [p for p in persons.values() if p["shares_id_with"] is not None]
    pairs = {tuple(sorted((p["person_id"], p["shares_id_with"]))) for p in shared}
    assert len(shared) == 2 * len(pairs) == 2 * busy_truth.cfg["country_counts"]["id_two_provinces"]["applied"]
    assert len(pairs) >= 10
    for a, b in pairs:
        pa_, pb = persons[a], persons[b]
        assert pa_["shares_id_with"] == b and pb["shares_id_with"] == a
        assert pa_["so_dinh_danh"] == pb["so_dinh_danh"]
        assert pa_["home_province"] != pb["home_province"] and pa_["in_registry"] and pb["in_registry"]
        assert pa_["ngay_sinh"].year == pb["ngay_sinh"].year
    # In the national registry exactly these IDs appear on two records, one in each province.
    ids = Counter(r["soDinhDanh"] for r in _rows(busy, "population/citizens.parquet"))
    assert {k for k, v in ids.items() if v > 1} == {persons[a]["so_dinh_danh"] for a, _ in pairs}
    assert all(v <= 2 for v in ids.values())
    # The receiving citizen's record carries the noise; links flag every record of both persons.
    noise = [n for n in _rows(busy, "truth/noise.parquet") if n["noise"] == "id_two_provinces"]
    assert len(noise) == len(pairs) and all(n["noisy"] != n["original"] for n in noise)
    flagged = {lk["person_id"] for lk in busy_truth.links if lk["shared_id"]}
    assert flagged == {p["person_id"] for p in shared}
    citizen_links = [lk for lk in busy_truth.links if lk["dataset"] == "citizen" and lk["shared_id"]]
    assert Counter(lk["record_province"] for lk in citizen_links).keys() <= set(THREE)


# --- determinism and the province generator ---------------------------------------------------------

def test_same_config_gives_byte_identical_files_and_another_seed_others(country, tmp_path):
    generate(CountryConfig(citizens_per_province=THREE), tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(country)
    generate(CountryConfig(citizens_per_province=THREE, seed=1), tmp_path / "other")
    a, b = _digest(country), _digest(tmp_path / "other")
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a if k.endswith(".parquet"))


def _content(folder: Path) -> str:
    """A digest of what the files hold (schema and rows), independent of the Parquet encoder's bytes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        h.update(str(p.relative_to(folder)).encode())
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            h.update(str(t.schema).encode())
            h.update(json.dumps(t.to_pylist(), default=str, ensure_ascii=False, sort_keys=True).encode())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()


def test_the_province_generator_output_is_unchanged(tmp_path):
    # Pinned before the country was added: a province's files must not change with it. If the province
    # generator is changed on purpose, update the digest in the same change.
    generate(GeneratorConfig(citizens=300, seed=11), tmp_path)
    assert _content(tmp_path) == "fccdf765a23cc3d5923dcf18974142cb0ba22cea5e68d0f9e336f4824fad3fd5"


def test_cli_generates_a_country(tmp_path, capsys):
    assert cli_main(["--country", "31,01", "--per-province", "40", "--seed", "3", "--out", str(tmp_path),
                     "--country-rate", "moved_province=0.5", "--noise", "nfd=0.2"]) == 0
    printed = capsys.readouterr().out
    assert "moved_province" in printed and "land/01/thua_dat.parquet" in printed
    cfg = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert cfg["provinces"] == ["31", "01"] and cfg["citizens_per_province"] == {"31": 40, "01": 40}
    assert cfg["country_rates"]["moved_province"] == 0.5 and cfg["noise"]["nfd"] == 0.2
    with pytest.raises(SystemExit):
        cli_main(["--country", "3", "--province", "31", "--out", str(tmp_path / "x")])
