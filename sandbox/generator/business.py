"""Enterprises of the synthetic province and the business registry's records of them.

Owns: `build_enterprises` (the true enterprises: valid 10-digit tax codes with the province prefix and a
check digit computed here, names by legal form, founding dates, status, capital, head office, VSIC
activities, legal representatives drawn from living adult citizens and some outside persons) and
`enterprise_records` (the registry's rows in the spec's DoanhNghiep shape, with the business noises:
TCVN3 / VNI mojibake, NFD, date formats, invalid check digits, duplicates, and the representative noises).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import names, places
from .common import DAY, YEAR_DAYS, fmt_days, fmt_local, join, stream, to_day, zpad
from .config import GeneratorConfig
from .noise import NoiseLog, date_variant, mistype_id, mojibake, nfd, pick, swap_name_order, typo
from .people import People, Records

if TYPE_CHECKING:
    from .cross import Cross

MST_WEIGHTS = np.array([31, 29, 23, 19, 17, 13, 7, 5, 3])
# First two digits of new tax codes by home province (the tax office's province number, not the unit
# code: Hải Phòng issues 02...); other provinces fall back to their own code.
TAX_PREFIX = {"31": "02", "01": "01", "79": "03"}
LEGAL_FORMS = ("TNHH_1TV", "TNHH_2TV", "CO_PHAN", "TU_NHAN", "HOP_DANH")
LEGAL_FORM_P = np.array([0.45, 0.20, 0.26, 0.08, 0.01])
FORM_VI = ("CÔNG TY TNHH", "CÔNG TY TNHH", "CÔNG TY CỔ PHẦN", "DOANH NGHIỆP TƯ NHÂN", "CÔNG TY HỢP DANH")
FORM_EN = ("CO., LTD", "CO., LTD", "JOINT STOCK COMPANY", "PRIVATE ENTERPRISE", "PARTNERSHIP")
STATUSES = ("DANG_HOAT_DONG", "TAM_NGUNG", "GIAI_THE", "PHA_SAN", "DA_CHUYEN_DI")
STATUS_P = np.array([0.80, 0.07, 0.08, 0.01, 0.04])
# Title of the first and of further representatives, by legal form.
TITLE_FIRST = ("Giám đốc", "Chủ tịch Hội đồng thành viên", "Tổng giám đốc", "Chủ doanh nghiệp",
               "Thành viên hợp danh")
TITLE_OTHER = ("Phó Giám đốc", "Giám đốc", "Chủ tịch Hội đồng quản trị", "Giám đốc", "Thành viên hợp danh")
REFORM_DAY = to_day(dt.date(2025, 7, 1))  # records updated from here on carry 2025 commune codes
OUTSIDE_REP_SHARE = 0.05


def tax_prefix(province: str) -> str:
    """The first two digits of a province's tax codes (distinct for the 34 provinces of 2025)."""
    return TAX_PREFIX.get(province, province.zfill(2))


def mst_check(body9: np.ndarray) -> np.ndarray:
    """Check digit of 9-digit bodies (ints): 10 - (weighted sum mod 11); 10 means no valid digit."""
    digits = (body9[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    return 10 - (digits @ MST_WEIGHTS) % 11


def tax_codes(rng: np.random.Generator, prefix: str, n: int, taken: np.ndarray | None = None) -> np.ndarray:
    """n distinct valid 10-digit tax codes (as ints) starting with `prefix`; bodies whose remainder would
    give check "10" are redrawn, as are bodies whose digits 3-9 are all zero."""
    head = int(prefix) * 10**7
    taken_set = np.asarray(taken if taken is not None else [], dtype=np.int64)
    body = head + rng.integers(1, 10**7, n)
    for _ in range(200):
        check = mst_check(body)
        _, first = np.unique(body, return_index=True)
        bad = np.ones(n, dtype=bool)
        bad[first] = False
        bad |= check == 10
        codes = body * 10 + np.where(check == 10, 0, check)
        if len(taken_set):
            bad |= np.isin(codes, taken_set)
        k = int(bad.sum())
        if k == 0:
            return codes
        body[bad] = head + rng.integers(1, 10**7, k)
    raise RuntimeError("tax code space exhausted")


@dataclass
class Enterprises:
    """True enterprises, index = enterprise_id."""

    code: np.ndarray  # int tax code
    code_str: pa.Array
    form: np.ndarray  # index into LEGAL_FORMS
    name: pa.Array
    name_en: pa.Array
    founded: np.ndarray  # day
    status: pa.Array
    capital: np.ndarray
    office_old: np.ndarray  # index into places.home_old(province)
    address: pa.Array
    trade: np.ndarray
    activities: list[list[str]]  # VSIC codes, main first
    reps: list[np.ndarray]  # person_ids per enterprise
    updated: np.ndarray  # epoch seconds of the registry's last update

    @property
    def n(self) -> int:
        return len(self.code)


def _unique_names(parts: np.ndarray, base: pa.Array) -> pa.Array:
    """The registry refuses identical names: a repeated (form, trade, brand, suffix) gets ' 2', ' 3' ...
    appended in order of appearance."""
    order = np.argsort(parts, kind="stable")
    sorted_parts = parts[order]
    start = np.r_[True, sorted_parts[1:] != sorted_parts[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(parts)), 0))
    rank = np.empty(len(parts), dtype=np.int64)
    rank[order] = np.arange(len(parts)) - group_start
    suffix = pc.if_else(pa.array(rank > 0), join(" ", pc.cast(pa.array(rank + 1), pa.string())), "")
    return join(base, suffix)


SUFFIXES = (("", ""), ("HẢI PHÒNG", "HAI PHONG"), ("VIỆT NAM", "VIET NAM"), ("QUỐC TẾ", "INTERNATIONAL"),
            ("68", "68"), ("86", "86"), ("XANH", "GREEN"), ("MIỀN BẮC", "NORTHERN"), ("PLUS", "PLUS"),
            ("SỐ 1", "NO.1"), ("GROUP", "GROUP"), ("TÂN TIẾN", "TAN TIEN"))


def build_enterprises(cfg: GeneratorConfig, people: People, as_of_s: int, cross: Cross | None = None) -> Enterprises:
    """The province's true enterprises. With `cross` some representatives are citizens of other provinces:
    their index is `people.n` + their index in the country's person pool (see cross.Cross)."""
    rng = stream(cfg.seed, "enterprises")
    n = max(5, round(cfg.citizens * cfg.enterprise_ratio))
    as_of_day = as_of_s // DAY
    prefix = tax_prefix(cfg.province)
    code = tax_codes(rng, prefix, n)

    form = rng.choice(len(LEGAL_FORMS), size=n, p=LEGAL_FORM_P)
    trade = rng.integers(0, len(names.TRADES), n)
    brand = rng.integers(0, len(names.BRANDS), n)
    suf = np.where(rng.random(n) < 0.5, 0, rng.integers(1, len(SUFFIXES), n))
    t_vi = pa.array([t[0] for t in names.TRADES]).take(pa.array(trade))
    t_en = pa.array([t[1] for t in names.TRADES]).take(pa.array(trade))
    b_vi = pa.array([b[0] for b in names.BRANDS]).take(pa.array(brand))
    b_en = pa.array([b[1] for b in names.BRANDS]).take(pa.array(brand))
    s_vi = pa.array([s[0] for s in SUFFIXES]).take(pa.array(suf))
    s_en = pa.array([s[1] for s in SUFFIXES]).take(pa.array(suf))
    f_vi = pa.array(FORM_VI).take(pa.array(form))
    f_en = pa.array(FORM_EN).take(pa.array(form))
    has_suf = pa.array(suf > 0)
    vi_core = pc.if_else(has_suf, join(b_vi, s_vi, sep=" "), b_vi)
    en_core = pc.if_else(has_suf, join(b_en, s_en, sep=" "), b_en)
    parts = ((form.astype(np.int64) * 100 + trade) * 100 + brand) * 100 + suf
    # TNHH_1TV and TNHH_2TV share the words "CÔNG TY TNHH": uniqueness is over the written name.
    parts = np.where(form == 1, parts - 100 * 100 * 100, parts)
    name = _unique_names(parts, join(f_vi, t_vi, vi_core, sep=" "))
    name_en = join(en_core, t_en, f_en, sep=" ")
    name_en = pc.if_else(pa.array(rng.random(n) < 0.25), pa.nulls(n, pa.string()), name_en)

    years_ago = np.minimum(rng.exponential(7.0, n), 30.0)
    founded = as_of_day - 1 - np.floor(years_ago * YEAR_DAYS).astype(np.int64)
    status = pa.array(STATUSES).take(pa.array(rng.choice(len(STATUSES), size=n, p=STATUS_P)))
    capital = np.round(np.exp(rng.normal(np.log(2e9), 1.3, n)) / 1e7).astype(np.int64) * 10_000_000
    capital = np.maximum(capital, 100_000_000)

    home = places.home_old(cfg.province)
    w = stream(cfg.seed, "commune-weights").dirichlet(np.full(len(home), 2.0))
    office = rng.choice(len(home), size=n, p=w)
    street = pa.array(names.STREETS).take(pa.array(rng.integers(0, len(names.STREETS), n)))
    address = join("Số", zpad(rng.integers(1, 500, n), 1), street, sep=" ")

    # Activities: the trade's main VSIC code plus 0-4 distinct generic ones.
    n_extra = rng.choice(5, size=n, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    extra_order = np.argsort(rng.random((n, len(names.EXTRA_VSIC))), axis=1)
    main_pick = rng.integers(0, 1 << 30, n)
    activities: list[list[str]] = []
    for i in range(n):
        codes = names.TRADES[trade[i]][2]
        main = codes[main_pick[i] % len(codes)]
        extras = [names.EXTRA_VSIC[j] for j in extra_order[i, : n_extra[i]] if names.EXTRA_VSIC[j] != main]
        activities.append([main, *extras])

    # Representatives: living adult citizens, some outside persons; distinct within an enterprise.
    age = people.age_years(as_of_day)
    idx = np.arange(people.n)
    adult_alive = idx[(idx < people.n_citizens) & people.alive & (age >= 20)]
    outsiders = idx[idx >= people.n_citizens]
    n_reps = rng.choice([1, 2, 3], size=n, p=[0.80, 0.17, 0.03])
    total = int(n_reps.sum())
    from_out = rng.random(total) < OUTSIDE_REP_SHARE
    chosen = np.where(from_out, outsiders[rng.integers(0, len(outsiders), total)],
                      adult_alive[rng.integers(0, len(adult_alive), total)])
    if cross is not None:
        chosen = cross.representatives(chosen, from_out, people.n)
    bounds = np.cumsum(n_reps)[:-1]
    reps = np.split(chosen, bounds)
    for i, r in enumerate(reps):
        if len(np.unique(r)) < len(r):
            reps[i] = np.unique(r)  # a repeat draw becomes one representative fewer

    upd_lo = np.maximum(founded, as_of_day - 8 * 365) * DAY
    updated = upd_lo + (rng.random(n) * (as_of_s - upd_lo)).astype(np.int64)
    return Enterprises(code=code, code_str=zpad(code, 10), form=form, name=name, name_en=name_en,
                       founded=founded, status=status, capital=capital, office_old=office, address=address,
                       trade=trade, activities=activities, reps=reps, updated=updated)


def _apply_name_noise(cfg: GeneratorConfig, rng: np.random.Generator, log: NoiseLog, dataset: str,
                      scope: str, keys: list[tuple[int, int]], names_: list[str],
                      doc_type: list[str | None], doc_no: list[str | None], cmnd: list[str | None]) -> None:
    """Person-field noise shared by representatives and land holders, in place on the lists.
    keys[k] = (record index, sub-index) for the log."""
    m = len(names_)
    ones = np.ones(m, dtype=bool)
    missing = set(pick(rng, ones, cfg.rate("missing_id")).tolist())
    log.count_eligible(dataset, "missing_id", m)
    has_cmnd = np.array([c is not None for c in cmnd], dtype=bool)
    not_missing = np.array([k not in missing for k in range(m)], dtype=bool)
    old = set(pick(rng, has_cmnd & not_missing, cfg.rate("old_id")).tolist())
    log.count_eligible(dataset, "old_id", int((has_cmnd & not_missing).sum()))
    mistyped = set(pick(rng, not_missing, cfg.rate("mistyped_id")).tolist())
    log.count_eligible(dataset, "mistyped_id", int(not_missing.sum()))
    swapped = set(pick(rng, ones, cfg.rate("swapped_name_order")).tolist())
    typos = set(pick(rng, ones, cfg.rate("name_typo")).tolist())
    caps = set(pick(rng, ones, cfg.rate("capitals")).tolist())
    for noise in ("swapped_name_order", "name_typo", "capitals"):
        log.count_eligible(dataset, noise, m)
    for k in sorted(missing | old | mistyped | swapped | typos | caps):
        i, sub = keys[k]
        if k in missing:
            log.add(dataset, scope, i, sub, "SoGiayTo" if dataset == "representative" else "so_giay_to",
                    "missing_id", doc_no[k], None)
            doc_type[k], doc_no[k] = None, None
        if k in old:
            log.add(dataset, scope, i, sub, "SoGiayTo" if dataset == "representative" else "so_giay_to",
                    "old_id", doc_no[k], cmnd[k])
            doc_type[k], doc_no[k] = "CMND", cmnd[k]
        if k in mistyped:
            new = mistype_id(doc_no[k], rng)
            log.add(dataset, scope, i, sub, "SoGiayTo" if dataset == "representative" else "so_giay_to",
                    "mistyped_id", doc_no[k], new)
            doc_no[k] = new
        field_ = "HoTen" if dataset == "representative" else "ho_ten"
        if k in swapped:
            new = swap_name_order(names_[k])
            log.add(dataset, scope, i, sub, field_, "swapped_name_order", names_[k], new)
            names_[k] = new
        if k in typos:
            new = typo(names_[k], rng)
            log.add(dataset, scope, i, sub, field_, "name_typo", names_[k], new)
            names_[k] = new
        if k in caps:
            new = names_[k].upper()
            log.add(dataset, scope, i, sub, field_, "capitals", names_[k], new)
            names_[k] = new


def enterprise_records(cfg: GeneratorConfig, ent: Enterprises, people: People, as_of_s: int,
                       log: NoiseLog) -> Records:
    """The business registry: one record per enterprise plus duplicates, with business noise."""
    rng = stream(cfg.seed, "enterprise-records")
    n_ent = ent.n
    as_of_day = as_of_s // DAY

    dup = pick(rng, np.ones(n_ent, dtype=bool), cfg.rate("duplicate"))
    log.count_eligible("enterprise", "duplicate", n_ent)
    rec_ent = np.concatenate([np.arange(n_ent), dup])
    n = len(rec_ent)
    re_ = pa.array(rec_ent)
    code = np.concatenate([ent.code, tax_codes(rng, tax_prefix(cfg.province), len(dup), ent.code)])
    code_str = zpad(code, 10).to_pylist()
    for k, e in enumerate(dup):
        log.add("enterprise", "", n_ent + k, -1, "MaSoDN", "duplicate", ent.code_str[int(e)].as_py(),
                code_str[n_ent + k])
    updated = np.concatenate([ent.updated, (ent.updated[dup] + rng.integers(DAY, 400 * DAY, len(dup)))])
    updated = np.minimum(updated, as_of_s)

    hit = pick(rng, np.ones(n, dtype=bool), cfg.rate("invalid_tax_code"))
    log.count_eligible("enterprise", "invalid_tax_code", n)
    for i in hit:
        good = code_str[i]
        bad = good[:9] + str((int(good[9]) + int(rng.integers(1, 10))) % 10)
        log.add("enterprise", "", i, -1, "MaSoDN", "invalid_tax_code", good, bad)
        code_str[i] = bad

    founded = fmt_days(ent.founded[rec_ent], "%d/%m/%Y").to_pylist()
    hit = pick(rng, np.ones(n, dtype=bool), cfg.rate("date_format"))
    log.count_eligible("enterprise", "date_format", n)
    for i in hit:
        new = date_variant(founded[i], rng)
        log.add("enterprise", "", i, -1, "NgayThanhLap", "date_format", founded[i], new)
        founded[i] = new

    # Head office: records last updated before the 2025 reform keep the three-level pre-2025 codes.
    home = places.home_old(cfg.province)
    off = pa.array(ent.office_old[rec_ent])
    pre = pa.array(updated // DAY < REFORM_DAY)
    ma_xa = pc.if_else(pre, home.code.take(off), home.new_code.take(off))
    ma_huyen = pc.if_else(pre, home.district.take(off), pa.nulls(n, pa.string()))
    ma_tinh = pc.if_else(pre, home.province.take(off), home.new_province.take(off))

    # Representatives, flattened: one entry per (record, index).
    rep_lists = [ent.reps[e] for e in rec_ent]
    counts = np.array([len(r) for r in rep_lists])
    rep_person = np.concatenate(rep_lists) if n else np.zeros(0, dtype=np.int64)
    rep_rec = np.repeat(np.arange(n), counts)
    rep_sub = np.arange(len(rep_person)) - np.repeat(np.cumsum(counts) - counts, counts)

    status = ent.status.take(re_).to_pylist()
    active = np.array([s == "DANG_HOAT_DONG" for s in status], dtype=bool)
    hit = pick(rng, active, cfg.rate("deceased_representative"))
    log.count_eligible("representative", "deceased_representative", int(active.sum()))
    idx = np.arange(people.n_citizens)
    dead_adults = idx[~people.alive[: people.n_citizens] & (people.age_years(as_of_day)[: people.n_citizens] >= 30)]
    first_rep = np.cumsum(counts) - counts
    if len(dead_adults):
        for i in hit:
            j = first_rep[i]
            new_p = int(dead_adults[rng.integers(len(dead_adults))])
            log.add("representative", "", i, 0, "NguoiDaiDien", "deceased_representative",
                    people.id12[int(rep_person[j])].as_py(), people.id12[new_p].as_py())
            rep_person[j] = new_p

    rp = pa.array(rep_person)
    r_name = people.name.take(rp).to_pylist()
    r_type: list[str | None] = ["CCCD"] * len(rep_person)
    r_no = people.id12.take(rp).to_pylist()
    r_cmnd = people.cmnd.take(rp).to_pylist()
    r_dob = fmt_days(people.dob[rep_person], "%d/%m/%Y").to_pylist()
    form = ent.form[rec_ent]
    r_title = np.where(rep_sub == 0, np.array(TITLE_FIRST, dtype=object)[form[rep_rec]],
                       np.array(TITLE_OTHER, dtype=object)[form[rep_rec]]).tolist()
    keys = list(zip(rep_rec.tolist(), rep_sub.tolist(), strict=True))
    _apply_name_noise(cfg, rng, log, "representative", "", keys, r_name, r_type, r_no, r_cmnd)
    hit = pick(rng, np.ones(len(r_dob), dtype=bool), cfg.rate("date_format"))
    log.count_eligible("representative", "date_format", len(r_dob))
    for k in hit:
        new = date_variant(r_dob[k], rng)
        log.add("representative", "", rep_rec[k], rep_sub[k], "NgaySinh", "date_format", r_dob[k], new)
        r_dob[k] = new

    # Whole-record text noise: one of TCVN3 mojibake, VNI mojibake, NFD (exclusive).
    name = ent.name.take(re_).to_pylist()
    address = ent.address.take(re_).to_pylist()
    u = rng.random(n)
    r3, rv, rn = cfg.rate("tcvn3"), cfg.rate("vni"), cfg.rate("nfd")
    kind = np.where(u < r3, 1, np.where(u < r3 + rv, 2, np.where(u < r3 + rv + rn, 3, 0)))
    for noise in ("tcvn3", "vni", "nfd"):
        log.count_eligible("enterprise", noise, n)
    rep_start = np.cumsum(counts) - counts
    for i in np.flatnonzero(kind):
        noise = ("", "tcvn3", "vni", "nfd")[kind[i]]
        fn = nfd if noise == "nfd" else (lambda s, enc=noise: mojibake(s, enc))
        fields: list[tuple[str, list, int]] = [("TenDN", name, int(i)), ("TruSo.DiaChi", address, int(i))]
        for j in range(rep_start[i], rep_start[i] + counts[i]):
            fields += [(f"NguoiDaiDien[{rep_sub[j]}].HoTen", r_name, int(j)),
                       (f"NguoiDaiDien[{rep_sub[j]}].ChucDanh", r_title, int(j))]
        for field_, values, k in fields:
            new = fn(values[k])
            if new != values[k]:
                log.add("enterprise", "", int(i), -1, field_, noise, values[k], new)
                values[k] = new

    rep_struct = pa.StructArray.from_arrays(
        [pa.array(r_name, pa.string()), pa.array(r_type, pa.string()), pa.array(r_no, pa.string()),
         pa.array(r_dob, pa.string()), pa.array(r_title, pa.string())],
        names=["HoTen", "LoaiGiayTo", "SoGiayTo", "NgaySinh", "ChucDanh"])
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    acts = [ent.activities[e] for e in rec_ent]
    a_counts = np.array([len(a) for a in acts])
    a_flat = [c for a in acts for c in a]
    a_main = np.zeros(len(a_flat), dtype=bool)
    a_main[np.cumsum(a_counts) - a_counts] = True
    act_struct = pa.StructArray.from_arrays([pa.array(a_flat, pa.string()), pa.array(a_main)],
                                            names=["ma", "chinh"])
    a_offsets = pa.array(np.concatenate([[0], np.cumsum(a_counts)]).astype(np.int32))

    table = pa.table({
        "MaSoDN": pa.array(code_str, pa.string()),
        "TenDN": pa.array(name, pa.string()),
        "TenTiengAnh": ent.name_en.take(re_),
        "LoaiHinh": pa.array(LEGAL_FORMS).take(pa.array(form)),
        "NgayThanhLap": pa.array(founded, pa.string()),
        "TinhTrang": pa.array(status, pa.string()),
        "VonDieuLe": pa.array(ent.capital[rec_ent], pa.int64()),
        "TruSo": pa.StructArray.from_arrays([pa.array(address, pa.string()), ma_xa, ma_huyen, ma_tinh],
                                            names=["DiaChi", "MaXa", "MaHuyen", "MaTinh"]),
        "NganhNghe": pa.ListArray.from_arrays(a_offsets, act_struct),
        "NguoiDaiDien": pa.ListArray.from_arrays(offsets, rep_struct),
        "NgayCapNhat": fmt_local(updated, "dkkd"),
        "_updated": pa.array(updated, pa.int64()),  # sort key; dropped before writing
    })
    return Records(table, np.full(n, -1), rec_ent, sub=(rep_rec, rep_sub, rep_person))
