"""Land registry databases, one per province: parcels, land users (holders) and certificates.

Owns: `build_land` for one province: parcels surveyed mostly under that province's pre-2025 commune codes
(some under 2025 codes), numbered by map sheet and parcel within each commune code so the natural key
(ma_xa, so_to_ban_do, so_thua) is unique; holders who are citizens, outside persons or enterprises;
certificates with co-holders whose shares sum to 100, transfers (DA_CHUYEN_NHUONG then a new HIEU_LUC
certificate to another holder) and revocations; and the land noises (holder name and ID noise,
duplicate holders, invalid tax codes of organisations, share mismatches).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import names, places
from .business import Enterprises, _apply_name_noise
from .common import (
    DAY,
    YEAR_DAYS,
    dates,
    decimals,
    join,
    masked,
    stream,
    timestamps_utc,
    to_day,
    unique_draws,
    zpad,
)
from .config import GeneratorConfig
from .noise import NoiseLog, nfd, pick
from .people import People, Records

if TYPE_CHECKING:
    from .cross import Cross

USE_URBAN = (("ODT", 55), ("ODT+CLN", 7), ("TMD", 7), ("SKC", 3), ("CLN", 5), ("HNK", 4), ("LUC", 8),
             ("NTS", 3), ("DGT", 1), ("TMD+ODT", 2), ("SKC+TMD", 1), ("LUK", 2), ("BHK", 2))
USE_RURAL = (("ONT", 33), ("ONT+CLN", 9), ("LUC", 25), ("CLN", 10), ("HNK", 8), ("NTS", 7), ("LUK", 3),
             ("RSX", 2), ("SKC", 1), ("TMD", 1), ("ONT+HNK", 1))
# Median area in m² by the first code of the purpose; areas are log-normal around it.
MEDIAN_AREA = {"ODT": 80, "ONT": 250, "LUC": 1200, "LUK": 900, "CLN": 600, "HNK": 700, "BHK": 700,
               "NTS": 2500, "RSX": 8000, "TMD": 400, "SKC": 3000, "DGT": 300}
NEW_FORM_DAY = to_day(dt.date(2009, 12, 10))  # Decree 88/2009: the 8-digit serial form
FIRST_CERT_DAY = to_day(dt.date(1994, 1, 1))
SHARES2 = ((5000, 5000), (6000, 4000), (7000, 3000))
SHARES3 = ((3334, 3333, 3333), (4000, 3000, 3000))


def _pick_uses(rng: np.random.Generator, urban: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Land-use code per parcel and its median area."""
    out = np.empty(len(urban), dtype=object)
    for flag, table in ((True, USE_URBAN), (False, USE_RURAL)):
        sel = np.flatnonzero(urban == flag)
        vals = np.array([v for v, _ in table], dtype=object)
        p = np.array([w for _, w in table], dtype=float)
        out[sel] = vals[rng.choice(len(vals), size=len(sel), p=p / p.sum())]
    return pa.array(out, pa.string()), _median_vec(out)


def _median_vec(uses: np.ndarray) -> np.ndarray:
    vals, inv = np.unique(uses.astype(str), return_inverse=True)
    med = np.array([MEDIAN_AREA[v.split("+")[0]] for v in vals], dtype=float)
    return med[inv]


def _land_old_communes(province: str) -> places.CommuneSet:
    try:
        return places.old_in(province)
    except ValueError:
        return places.home_old(province)


def build_land(cfg: GeneratorConfig, province: str, people: People, ent: Enterprises, as_of_s: int,
               log: NoiseLog, cross: Cross | None = None) -> dict[str, Records]:
    """The three tables of one province's land database, before sorting. With `cross` (a province of a
    country) the parcels are surveyed under every pre-2025 commune now in the province, and some holders
    are citizens or enterprises of other provinces: the Records' person / enterprise indices then run on
    into the country's pools (see cross.Cross)."""
    rng = stream(cfg.seed, f"land-{province}")
    as_of_day = as_of_s // DAY
    scale = 1.0 if province == cfg.province else cfg.other_land_scale
    n = max(10, round(cfg.citizens * cfg.parcel_ratio * scale))

    # --- parcels ---
    old = places.home_old(province) if cross is not None else _land_old_communes(province)
    new = places.new_in(province)
    is_new = rng.random(n) < 0.15
    k_old = rng.choice(len(old), size=n, p=rng.dirichlet(np.full(len(old), 2.0)))
    k_new = rng.choice(len(new), size=n, p=rng.dirichlet(np.full(len(new), 2.0)))
    isn = pa.array(is_new)
    ko, kn = pa.array(k_old), pa.array(k_new)
    ma_xa = pc.if_else(isn, new.code.take(kn), old.code.take(ko))
    urban = np.where(is_new, new.urban[k_new], old.urban[k_old])
    code_int = pc.cast(ma_xa, pa.int64()).to_numpy()
    # Number parcels within each commune code (old and new codes that coincide share one numbering, so
    # the natural key stays unique): a random order, sheets of a commune-specific size.
    order = np.lexsort((rng.random(n), code_int))
    sc = code_int[order]
    start = np.r_[True, sc[1:] != sc[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    per_sheet = stream(cfg.seed, f"sheets-{province}").integers(30, 250, 100_000)[code_int]
    sheet = rank // per_sheet + 1
    parcel_no = rank % per_sheet + 1

    uses, median = _pick_uses(rng, urban)
    area10 = np.maximum(np.round(np.exp(rng.normal(np.log(median), 0.6)) * 10), 100).astype(np.int64)
    place = pc.if_else(pa.array(urban),
                       join("Số", zpad(rng.integers(1, 400, n), 1),
                            pa.array(names.STREETS).take(pa.array(rng.integers(0, len(names.STREETS), n))),
                            sep=" "),
                       join("Thôn", pa.array(names.VILLAGE_WORDS).take(
                           pa.array(rng.integers(0, len(names.VILLAGE_WORDS), n))), sep=" "))
    addr = pc.if_else(isn, join(place, new.name.take(kn), sep=", "),
                      join(place, old.name.take(ko), old.district_name.take(ko), sep=", "))
    addr = masked(addr, rng.random(n) < 0.05)
    parcel_id = rng.permutation(n).astype(np.int64) + 1
    parcel_cap = as_of_s - rng.integers(0, int(3 * 365 * DAY), n)
    thua_dat = pa.table({
        "id": pa.array(parcel_id, pa.int64()),
        "ma_xa": ma_xa,
        "so_to_ban_do": pa.array(sheet, pa.int32()),
        "so_thua": pa.array(parcel_no, pa.int32()),
        "dien_tich": decimals(area10, 12, 1),
        "muc_dich_su_dung": uses,
        "dia_chi": addr,
        "cap_nhat_luc": timestamps_utc(parcel_cap),
        "da_xoa": pa.array(rng.random(n) < 0.003),
    })

    # --- issuances (one certificate document each) ---
    has_cert = rng.random(n) < 0.92
    u = rng.random(n)
    transfer = has_cert & (u < 0.08)
    revoked = has_cert & ~transfer & (u > 0.98)
    reissue = revoked & (rng.random(n) < 0.5)
    p0 = np.flatnonzero(has_cert)
    p1t = np.flatnonzero(transfer)
    p1r = np.flatnonzero(reissue)
    iss_parcel = np.concatenate([p0, p1t, p1r])
    n0 = len(p0)
    m = len(iss_parcel)
    status0 = np.where(transfer[p0], "DA_CHUYEN_NHUONG", np.where(revoked[p0], "DA_THU_HOI", "HIEU_LUC"))
    iss_status = np.concatenate([status0, np.full(len(p1t) + len(p1r), "HIEU_LUC")]).astype(object)

    # Holder groups. Organisations mostly hold commercial and industrial land.
    commercial = np.isin(uses.to_numpy(zero_copy_only=False), ["TMD", "SKC", "SKC+TMD", "TMD+ODT"])
    is_org = rng.random(m) < np.where(commercial[iss_parcel], 0.5, 0.04)
    k = np.where(is_org, 1, rng.choice([1, 2, 3], size=m, p=[0.72, 0.25, 0.03]))
    age = people.age_years(as_of_day)
    idx = np.arange(people.n)
    adults = idx[(idx < people.n_citizens) & (age >= 20)]
    outsiders = idx[idx >= people.n_citizens]
    out_share = 0.03 if province == cfg.province else 0.65
    from_out = rng.random((m, 3)) < out_share
    draws = np.where(from_out, outsiders[rng.integers(0, len(outsiders), (m, 3))],
                     adults[rng.integers(0, len(adults), (m, 3))])
    sp = people.spouse[draws[:, 0]]
    draws[:, 1] = np.where((sp >= 0) & (rng.random(m) < 0.8), sp, draws[:, 1])
    draws[:, 1] = np.where(draws[:, 1] == draws[:, 0], -1, draws[:, 1])
    draws[:, 2] = np.where((draws[:, 2] == draws[:, 0]) | (draws[:, 2] == draws[:, 1]), -1, draws[:, 2])
    org = rng.integers(0, ent.n, m)
    # A reissued certificate goes to the same holders as the revoked one.
    src = np.concatenate([np.arange(n0), np.full(len(p1t), -1), np.searchsorted(p0, p1r)])
    reuse = src >= 0
    reuse[:n0] = False
    e_code, e_name, e_addr = ent.code_str, ent.name, ent.address
    if cross is not None:
        draws, org = cross.land_holders(draws, org, is_org, ~reuse, people.n, ent.n)
        people = cross.augmented_people(people)
        e_code, e_name, e_addr = cross.augmented_enterprises(e_code, e_name, e_addr)
    for arr in (is_org, k, org):
        arr[reuse] = arr[src[reuse]]
    draws[reuse] = draws[src[reuse]]
    # A co-holder drawn twice collapses: the group is as large as its distinct leading members.
    valid = 1 + (draws[:, 1] >= 0) + ((draws[:, 1] >= 0) & (draws[:, 2] >= 0))
    k = np.where(is_org, 1, np.minimum(k, valid))

    # Issue dates: the first certificate after the holder came of age; the next one later.
    dob0 = people.dob[draws[:, 0]]
    lo = np.where(is_org, FIRST_CERT_DAY, np.maximum(FIRST_CERT_DAY, dob0 + int(18 * YEAR_DAYS)))
    hi = as_of_day - 365
    lo = np.minimum(lo, hi - 30)
    day = lo + (rng.random(m) * (hi - lo)).astype(np.int64)
    first_day = np.zeros(n, dtype=np.int64)
    first_day[p0] = day[:n0]
    later = np.arange(m) >= n0
    base = first_day[iss_parcel] + 180
    day = np.where(later, base + (rng.random(m) * np.maximum(as_of_day - 1 - base, 1)).astype(np.int64), day)
    day = np.minimum(day, as_of_day - 1)

    new_form = day >= NEW_FORM_DAY
    serial = np.empty(m, dtype=np.int64)
    serial[new_form] = unique_draws(rng, 676 * 10**8, int(new_form.sum()))
    serial[~new_form] = unique_draws(rng, 676 * 10**6, int((~new_form).sum()))
    scale_ = np.where(new_form, 10**8, 10**6)
    letters = serial // scale_
    letter_pairs = pa.array([chr(65 + a // 26) + chr(65 + a % 26) for a in range(676)])
    num = serial % scale_
    serial_txt = pc.if_else(pa.array(new_form),
                            join(letter_pairs.take(pa.array(letters)), zpad(num, 8), sep=" "),
                            join(letter_pairs.take(pa.array(letters)), zpad(num, 6), sep=" "))
    book = join(pc.if_else(pa.array(new_form), "CS", "CH"), zpad(rng.integers(1, 100_000, m), 5))
    book = masked(book, rng.random(m) < 0.1)

    # Rows: one per (issuance, co-holder).
    reps_ = np.repeat(np.arange(m), k)
    pos = np.arange(len(reps_)) - np.repeat(np.cumsum(k) - k, k)
    s2 = np.array(SHARES2)[rng.choice(3, size=m, p=[0.8, 0.1, 0.1])]
    s3 = np.array(SHARES3)[rng.choice(2, size=m, p=[0.8, 0.2])]
    share = np.where(k[reps_] == 1, 10000, np.where(k[reps_] == 2, s2[reps_, np.minimum(pos, 1)],
                                                       s3[reps_, pos]))
    member = draws[reps_, pos]
    row_org = is_org[reps_]
    ent_key = np.where(row_org, 10**9 + org[reps_], member)

    # --- holders ---
    keys, inv = np.unique(ent_key, return_inverse=True)
    nh = len(keys)
    h_org = keys >= 10**9
    h_person = np.where(h_org, -1, keys)
    h_ent = np.where(h_org, keys - 10**9, -1)

    dup = pick(rng, np.ones(nh, dtype=bool), cfg.rate("duplicate"))
    log.count_eligible("land_holder", "duplicate", nh)
    # The duplicate holder row takes over the holder's most recent certificate row.
    row_holder = inv.copy()
    last_row = np.full(nh, -1)
    np.maximum.at(last_row, inv, np.arange(len(inv)))
    row_holder[last_row[dup]] = nh + np.arange(len(dup))
    h_all = np.concatenate([np.arange(nh), dup])
    nh2 = len(h_all)
    holder_id = rng.permutation(nh2).astype(np.int64) + 1
    hp, he, ho = h_person[h_all], h_ent[h_all], h_org[h_all]
    for j, h in enumerate(dup):
        log.add("land_holder", province, nh + j, -1, "id", "duplicate", str(holder_id[h]), str(holder_id[nh + j]))

    hp_safe = pa.array(np.maximum(hp, 0))
    he_safe = pa.array(np.maximum(he, 0))
    is_o = pa.array(ho)
    name = pc.if_else(is_o, e_name.take(he_safe), people.name.take(hp_safe)).to_pylist()
    doc_type: list[str | None] = np.where(ho, "MST", "CCCD").tolist()
    doc_no = pc.if_else(is_o, e_code.take(he_safe), people.id12.take(hp_safe)).to_pylist()
    cmnd = pc.if_else(is_o, pa.nulls(nh2, pa.string()), people.cmnd.take(hp_safe)).to_pylist()
    year = people.dob[np.maximum(hp, 0)].astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    nam_sinh = masked(pa.array(year, pa.int32()), ho | (rng.random(nh2) < 0.3))
    street = people.address.take(hp_safe)
    h_addr = pc.if_else(is_o, e_addr.take(he_safe),
                        join(street, people.res_commune_name.take(hp_safe), sep=", "))

    persons = np.flatnonzero(~ho)
    sub_names = [name[i] for i in persons]
    sub_type = [doc_type[i] for i in persons]
    sub_no = [doc_no[i] for i in persons]
    sub_cmnd = [cmnd[i] for i in persons]
    _apply_name_noise(cfg, rng, log, "land_holder", province, [(int(i), -1) for i in persons],
                      sub_names, sub_type, sub_no, sub_cmnd)
    for j, i in enumerate(persons):
        name[i], doc_type[i], doc_no[i] = sub_names[j], sub_type[j], sub_no[j]
    hit = pick(rng, ~ho, cfg.rate("nfd"))
    log.count_eligible("land_holder", "nfd", int((~ho).sum()))
    for i in hit:
        new_ = nfd(name[i])
        if new_ != name[i]:
            log.add("land_holder", province, i, -1, "ho_ten", "nfd", name[i], new_)
            name[i] = new_
    hit = pick(rng, ho, cfg.rate("invalid_tax_code"))
    log.count_eligible("land_holder", "invalid_tax_code", int(ho.sum()))
    for i in hit:
        good = doc_no[i]
        bad = good[:9] + str((int(good[9]) + int(rng.integers(1, 10))) % 10)
        log.add("land_holder", province, i, -1, "so_giay_to", "invalid_tax_code", good, bad)
        doc_no[i] = bad

    chu_su_dung = pa.table({
        "id": pa.array(holder_id, pa.int64()),
        "loai": pa.array(np.where(ho, "TO_CHUC", "CA_NHAN"), pa.string()),
        "ho_ten": pa.array(name, pa.string()),
        "loai_giay_to": pa.array(doc_type, pa.string()),
        "so_giay_to": pa.array(doc_no, pa.string()),
        "nam_sinh": nam_sinh,
        "dia_chi": h_addr,
        "cap_nhat_luc": timestamps_utc(as_of_s - rng.integers(0, int(3 * 365 * DAY), nh2)),
        "da_xoa": pa.array(rng.random(nh2) < 0.002),
    })

    # --- certificate rows ---
    nr = len(reps_)
    share = share.astype(np.int64)
    co_held = np.flatnonzero(k > 1)
    hit_iss = co_held[pick(rng, np.ones(len(co_held), dtype=bool), cfg.rate("share_mismatch"))]
    log.count_eligible("certificate", "share_mismatch", len(co_held))
    first_row = np.cumsum(k) - k
    for it in hit_iss:
        r = first_row[it]
        delta = int(rng.integers(1, 11)) * 100 * (1 if rng.random() < 0.5 else -1)
        new_share = min(max(share[r] + delta, 100), 9900)
        log.add("certificate", province, r, -1, "ty_le_so_huu", "share_mismatch",
                f"{share[r] / 100:.2f}", f"{new_share / 100:.2f}")
        share[r] = new_share
    iss_day = day[reps_]
    # A transferred certificate was last touched at the transfer; others after issue.
    touched = np.zeros(n, dtype=np.int64)
    touched[iss_parcel[later]] = day[later]
    row_par = iss_parcel[reps_]
    base_t = np.where(iss_status[reps_] != "HIEU_LUC", np.maximum(touched[row_par], iss_day), iss_day) * DAY
    cap = base_t + (rng.random(nr) * np.maximum(as_of_s - base_t, 1)).astype(np.int64)
    cap = np.minimum(cap, as_of_s)
    cert_id = rng.permutation(nr).astype(np.int64) + 1
    giay = pa.table({
        "id": pa.array(cert_id, pa.int64()),
        "so_phat_hanh": serial_txt.take(pa.array(reps_)),
        "so_vao_so": book.take(pa.array(reps_)),
        "thua_dat_id": pa.array(parcel_id[row_par], pa.int64()),
        "chu_su_dung_id": pa.array(holder_id[row_holder], pa.int64()),
        "ty_le_so_huu": decimals(share, 5, 2),
        "ngay_cap": dates(iss_day),
        "trang_thai": pa.array(iss_status[reps_], pa.string()),
        "cap_nhat_luc": timestamps_utc(cap),
        "da_xoa": pa.array(rng.random(nr) < 0.002),
    })
    row_person = np.where(row_org, -1, member)
    row_ent = np.where(row_org, org[reps_], -1)
    return {
        "thua_dat": Records(thua_dat, np.full(n, -1), np.full(n, -1)),
        "chu_su_dung": Records(chu_su_dung, hp, he),
        "giay_chung_nhan": Records(giay, row_person, row_ent),
    }
