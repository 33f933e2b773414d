"""The people of the synthetic province and the population registry's records of them.

Owns: `build_people` (the true persons: households, names, birth dates, sex, deaths, 12-digit personal IDs
and old 9-digit ID cards, residences and hometowns; plus "outside" persons from other provinces who are not
in this registry) and `citizen_records` (the registry's rows in the spec's Citizen shape, with the
citizen noises: partial dates, NFD names, pre-2025 residence codes, duplicate records).
Everything is vectorised over numpy / Arrow arrays; only the noised few percent go through Python.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import names, places
from .common import DAY, YEAR_DAYS, dates, fmt_days, fmt_local, join, masked, stream, zpad
from .config import GeneratorConfig
from .noise import NoiseLog, nfd, pick

if TYPE_CHECKING:
    from .cross import Cross

HOUSEHOLD_SIZES = np.array([1, 2, 3, 4, 5, 6, 7])
HOUSEHOLD_P = np.array([0.12, 0.20, 0.22, 0.25, 0.12, 0.06, 0.03])
# Roles of members after the head (and spouse); names of quanHeChuHo values.
_OTHER_ROLES = ("CON", "CHA_ME", "CHAU", "ANH_CHI_EM", "KHAC")
_OTHER_P = np.array([0.80, 0.07, 0.08, 0.03, 0.02])
LOCAL_ID_SHARE = 0.85  # residents whose birth was registered in the home province


@dataclass
class People:
    """True persons, index = person_id. Citizens (in the registry) come first, then outside persons."""

    n_citizens: int
    sex: np.ndarray  # 0 male, 1 female (sex at birth registration: the ID's digit 4)
    gender: pa.Array  # NAM | NU | KHAC as registered
    name: pa.Array  # "Family Middle Given"
    dob: np.ndarray  # days since 1970-01-01
    alive: np.ndarray
    death: np.ndarray  # day of death, -1 if alive
    id12: pa.Array
    id_int: np.ndarray
    cmnd: pa.Array  # old 9-digit ID or null
    id_prefix: np.ndarray  # int, pre-2025 province code of birth registration
    household: np.ndarray  # household index, -1 for outside persons
    role: pa.Array  # quanHeChuHo, null for outside persons
    spouse: np.ndarray  # person index of the spouse in the same household, -1 if none
    address: pa.Array  # street part of the residence
    res_old: pa.Array  # residence: pre-2025 commune code
    res_old_province: pa.Array
    res_new: pa.Array  # residence: 2025 commune code
    res_commune_name: pa.Array
    home_xa: pa.Array  # queQuan
    home_huyen: pa.Array
    home_tinh: pa.Array

    @property
    def n(self) -> int:
        return len(self.sex)

    def age_years(self, as_of_day: int) -> np.ndarray:
        return (as_of_day - self.dob) / YEAR_DAYS

    def take(self, idx: np.ndarray) -> People:
        """The persons at `idx` (distinct) as a People of their own, all counted as citizens; `spouse`
        points inside the selection (-1 when the spouse is not in it)."""
        idx = np.asarray(idx, dtype=np.int64)
        cols = {f.name: (v[idx] if isinstance(v, np.ndarray) else v.take(pa.array(idx)))
                for f in fields(self) if not isinstance(v := getattr(self, f.name), int)}
        where = np.full(self.n, -1, dtype=np.int64)
        where[idx] = np.arange(len(idx))
        cols["spouse"] = np.where(self.spouse[idx] >= 0, where[np.maximum(self.spouse[idx], 0)], -1)
        return People(n_citizens=len(idx), **cols)

    def extend(self, other: People) -> People:
        """These persons followed by `other`'s (whose `spouse` indices are shifted); `n_citizens` stays
        this People's, so code that tells citizens from outside persons by index sees only these."""
        cols: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, int):
                continue
            if f.name == "spouse":
                b = np.where(b >= 0, b + self.n, -1)
            cols[f.name] = np.concatenate([a, b]) if isinstance(a, np.ndarray) else pa.concat_arrays([a, b])
        return replace(self, **cols)


def _given_weights(n: int) -> np.ndarray:
    # A few names are common, most are rare: a Zipf-like curve over the list order.
    w = 1.0 / (np.arange(n) + 4.0) ** 0.9
    return w / w.sum()


def _names(rng: np.random.Generator, sex: np.ndarray, family: pa.Array) -> pa.Array:
    n = len(sex)
    male_mid, p_mm = names.weights(names.MALE_MIDDLE)
    female_mid, p_fm = names.weights(names.FEMALE_MIDDLE)
    mm = male_mid.take(pa.array(rng.choice(len(p_mm), size=n, p=p_mm)))
    fm = female_mid.take(pa.array(rng.choice(len(p_fm), size=n, p=p_fm)))
    mg_vals, fg_vals = pa.array(names.MALE_GIVEN), pa.array(names.FEMALE_GIVEN)
    mg = mg_vals.take(pa.array(rng.choice(len(mg_vals), size=n, p=_given_weights(len(mg_vals)))))
    fg = fg_vals.take(pa.array(rng.choice(len(fg_vals), size=n, p=_given_weights(len(fg_vals)))))
    female = pa.array(sex == 1)
    return join(family, pc.if_else(female, fm, mm), pc.if_else(female, fg, mg), sep=" ")


def _unique_ids(rng: np.random.Generator, heads: np.ndarray, digits: int,
                taken: np.ndarray | None = None) -> np.ndarray:
    """heads * 10**digits + random suffix, all distinct and not in `taken`; only collisions redraw."""
    scale = 10**digits
    ids = heads * scale + rng.integers(0, scale, size=len(heads))
    forbidden = np.asarray(taken if taken is not None else [], dtype=np.int64)
    for _ in range(200):
        _, first = np.unique(ids, return_index=True)
        bad = np.ones(len(ids), dtype=bool)
        bad[first] = False
        if len(forbidden):
            bad |= np.isin(ids, forbidden)
        k = int(bad.sum())
        if k == 0:
            return ids
        ids[bad] = heads[bad] * scale + rng.integers(0, scale, size=k)
    raise RuntimeError("ID space exhausted")


def id_heads(prefix: np.ndarray, sex: np.ndarray, dob: np.ndarray) -> np.ndarray:
    """The first six digits of a personal ID as an int: province (3), century+sex (1), year (2)."""
    year = (dob.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970)
    century = (year // 100 - 19) * 2 + sex
    return prefix * 1000 + century * 100 + year % 100


def new_personal_ids(rng: np.random.Generator, heads: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Fresh 12-digit IDs (as ints) for the given heads, distinct from `taken`."""
    return _unique_ids(rng, heads, 6, taken)


def new_card_numbers(rng: np.random.Generator, heads: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Fresh 9-digit old ID card numbers (as ints) for the given two-digit heads, distinct from `taken`."""
    return _unique_ids(rng, heads, 7, taken)


def build_people(cfg: GeneratorConfig, as_of_day: int, cross: Cross | None = None) -> People:
    """The true persons of the province. With `cross` (a province of a country) the citizens' birth
    provinces follow the country's `moved_province` rate and their IDs (and old ID cards) are drawn again
    from a stream of their own; every other draw is the province generator's."""
    rng = stream(cfg.seed, "people")
    n_cit = cfg.citizens
    n_out = max(5, round(cfg.citizens * cfg.outside_ratio))

    # Households: sizes until the population is reached; the last one is cut to fit.
    sizes = rng.choice(HOUSEHOLD_SIZES, size=n_cit, p=HOUSEHOLD_P)
    ends = np.cumsum(sizes)
    n_hh = int(np.searchsorted(ends, n_cit) + 1)
    sizes = sizes[:n_hh].copy()
    sizes[-1] -= int(ends[n_hh - 1] - n_cit)
    hh = np.repeat(np.arange(n_hh), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(n_cit) - starts[hh]
    head = starts[hh]

    head_age = np.clip(rng.normal(50, 14, n_hh), 20, 92)
    head_sex = (rng.random(n_hh) < 0.28).astype(np.int64)
    has_spouse = (sizes >= 2) & (rng.random(n_hh) < 0.85)

    # Role per member: 0 head, 1 spouse, 2.. _OTHER_ROLES.
    other = rng.choice(len(_OTHER_ROLES), size=n_cit, p=_OTHER_P) + 2
    role_code = np.where(pos == 0, 0, np.where((pos == 1) & has_spouse[hh], 1, other))
    ha = head_age[hh]
    # Grandchildren need an old enough head; otherwise the member is a child.
    role_code = np.where((role_code == 4) & (ha < 45), 2, role_code)
    u = rng.random(n_cit)
    age = np.select(
        [role_code == 0, role_code == 1, role_code == 2, role_code == 3, role_code == 4, role_code == 5],
        [ha, ha + rng.normal(-1.5, 4, n_cit), u * np.minimum(np.maximum(ha - 20, 1), 45),
         ha + 20 + u * 15, u * np.maximum(ha - 42, 0), ha + (u - 0.5) * 20],
        default=u * 80,
    )
    age = np.clip(np.floor(age), 0, 95).astype(np.int64)
    sex = rng.integers(0, 2, n_cit)
    sex = np.where(role_code == 0, head_sex[hh], np.where(role_code == 1, 1 - head_sex[hh], sex))
    dob = as_of_day - np.floor(age * YEAR_DAYS).astype(np.int64) - rng.integers(0, 365, n_cit)

    role_names = np.array(["CHU_HO", "SPOUSE", "CON", "CHA_ME", "CHAU", "ANH_CHI_EM", "KHAC"], dtype=object)
    role_txt = role_names[role_code]
    role_txt = np.where(role_txt == "SPOUSE", np.where(sex == 1, "VO", "CHONG"), role_txt)
    role_txt = np.where(role_txt == "CHA_ME", np.where(sex == 1, "ME", "CHA"), role_txt)

    spouse = np.full(n_cit, -1, dtype=np.int64)
    sp_idx = np.flatnonzero(role_code == 1)
    spouse[sp_idx] = head[sp_idx]
    spouse[head[sp_idx]] = sp_idx

    # Family names: children and grandchildren take the father's (the male of head and spouse).
    fam_vals, fam_p = names.weights(names.FAMILY_NAMES)
    fam = rng.choice(len(fam_p), size=n_cit, p=fam_p)
    spouse_of_head = np.full(n_hh, -1)
    spouse_of_head[hh[sp_idx]] = sp_idx
    father = np.where((head_sex == 0) | (spouse_of_head < 0), starts, spouse_of_head)
    fam = np.where(np.isin(role_code, (2, 4, 5)), fam[father[hh]], fam)
    fam = np.where((role_code == 3) & (sex == 0) & (head_sex[hh] == 0), fam[head], fam)

    # Outside persons: adults from other provinces, no household here.
    out_age = np.floor(np.clip(rng.normal(42, 13, n_out), 18, 85)).astype(np.int64)
    out_sex = rng.integers(0, 2, n_out)
    out_dob = as_of_day - np.floor(out_age * YEAR_DAYS).astype(np.int64) - rng.integers(0, 365, n_out)
    out_fam = rng.choice(len(fam_p), size=n_out, p=fam_p)

    sex_all = np.concatenate([sex, out_sex])
    dob_all = np.concatenate([dob, out_dob])
    age_all = np.concatenate([age, out_age])
    n = n_cit + n_out
    name = _names(rng, sex_all, fam_vals.take(pa.array(np.concatenate([fam, out_fam]))))
    gender = np.where(sex_all == 1, "NU", "NAM").astype(object)
    gender[rng.random(n) < 0.0005] = "KHAC"

    # Deaths: likelier with age; only registry citizens can be recorded as dead here.
    p_dead = 0.004 + 0.35 * (age_all / 95.0) ** 5
    dead = (rng.random(n) < p_dead) & (np.arange(n) < n_cit)
    span = np.minimum(as_of_day - dob_all, 3650)
    death = np.where(dead, as_of_day - 1 - np.floor(rng.random(n) * np.maximum(span - 1, 0)).astype(np.int64), -1)

    # Personal IDs: the birth-registration province is mostly the home one for citizens, never for
    # outsiders (who are weighted towards Hà Nội so the Hà Nội land records hold many of them).
    codes = np.array([int(c) for c in places.old_province_codes()])
    home_old_code = _home_old_province(cfg.province)
    others = codes[codes != home_old_code]
    prefix = np.where(rng.random(n) < LOCAL_ID_SHARE, home_old_code, rng.choice(others, size=n))
    out_pref = np.where(rng.random(n) < 0.5, 1 if home_old_code != 1 else 79, rng.choice(others, size=n))
    prefix = np.where(np.arange(n) >= n_cit, out_pref, prefix)
    id_int = _unique_ids(rng, id_heads(prefix, sex_all, dob_all), 6)
    id12 = zpad(id_int, 12)

    # Old 9-digit ID cards: issued to those who were adults before CCCD (2016-2021); some kept the number.
    year = dob_all.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    has_cmnd = (year <= 2004) & (rng.random(n) < 0.7)
    cmnd_head = np.where(prefix == home_old_code, 3, rng.integers(1, 39, n))  # Hải Phòng cards start "03"
    cmnd_int = _unique_ids(rng, cmnd_head, 7)
    cmnd = masked(zpad(cmnd_int, 9), ~has_cmnd)

    # Residences: a household lives in one old commune (uneven populations); outsiders in their own
    # birth province.
    home = places.home_old(cfg.province)
    w = rng.dirichlet(np.full(len(home), 2.0))
    hh_commune = rng.choice(len(home), size=n_hh, p=w)
    cit_commune = hh_commune[hh]
    street = pa.array(names.STREETS).take(pa.array(rng.integers(0, len(names.STREETS), n_hh)))
    village = pa.array(names.VILLAGE_WORDS).take(pa.array(rng.integers(0, len(names.VILLAGE_WORDS), n_hh)))
    urban = home.urban[hh_commune]
    hh_addr = pc.if_else(pa.array(urban), join("Số", zpad(rng.integers(1, 300, n_hh), 1), street, sep=" "),
                         join("Thôn", village, sep=" "))
    address_cit = hh_addr.take(pa.array(hh))

    # Outsiders' residence: an old commune of their ID province (no 2025 code needed for them).
    out_prefix = prefix[n_cit:]
    out_codes = []
    for code in sorted(set(out_prefix.tolist())):
        sel = np.flatnonzero(out_prefix == code)
        cs = places.old_in(f"{code:02d}")
        k = rng.integers(0, len(cs), len(sel))
        out_codes.append((sel, cs.code.take(pa.array(k)), cs.province.take(pa.array(k)),
                          cs.new_code.take(pa.array(k)), cs.name.take(pa.array(k))))
    order = np.concatenate([o[0] for o in out_codes])
    inv = np.argsort(order, kind="stable")
    o_code = pa.concat_arrays([o[1] for o in out_codes]).take(pa.array(inv))
    o_prov = pa.concat_arrays([o[2] for o in out_codes]).take(pa.array(inv))
    o_new = pa.concat_arrays([o[3] for o in out_codes]).take(pa.array(inv))
    o_name = pa.concat_arrays([o[4] for o in out_codes]).take(pa.array(inv))
    o_addr = join("Số", zpad(rng.integers(1, 300, n_out), 1),
                  pa.array(names.STREETS).take(pa.array(rng.integers(0, len(names.STREETS), n_out))), sep=" ")

    cc = pa.array(cit_commune)
    res_old = pa.concat_arrays([home.code.take(cc), o_code])
    res_old_prov = pa.concat_arrays([home.province.take(cc), o_prov])
    res_new = pa.concat_arrays([home.new_code.take(cc), o_new])
    res_name = pa.concat_arrays([home.name.take(cc), o_name])
    address = pa.concat_arrays([address_cit, o_addr])

    local = None
    if cross is not None:
        # A country: stay-at-homes carry a pre-2025 province of their residence, movers another one.
        res_prov = home.province.take(cc).to_numpy(zero_copy_only=False)
        cit_prefix, moved = cross.birth_prefixes(res_prov)
        prefix = np.concatenate([cit_prefix, prefix[n_cit:]])
        local = np.concatenate([~moved, np.zeros(n_out, dtype=bool)])
        crng = cross.rng("ids")
        id_int = _unique_ids(crng, id_heads(prefix, sex_all, dob_all), 6)
        id12 = zpad(id_int, 12)
        cmnd_int = _unique_ids(crng, prefix % 100, 7)  # old cards: two digits of the registering province
        cmnd = masked(zpad(cmnd_int, 9), ~has_cmnd)

    # Hometown (queQuan): locals mostly from their residence's old commune, others from their ID
    # province; a fifth written with 2025 codes (no district).
    hx, hhuy, ht = _hometowns(rng, cfg, prefix, home_old_code, cit_commune, home, n_cit, local)

    return People(
        n_citizens=n_cit, sex=sex_all, gender=pa.array(gender, pa.string()), name=name, dob=dob_all,
        alive=~dead, death=death, id12=id12, id_int=id_int, cmnd=cmnd, id_prefix=prefix,
        household=np.concatenate([hh, np.full(n_out, -1)]),
        role=pa.array(np.concatenate([role_txt, np.full(n_out, None)]), pa.string()),
        spouse=np.concatenate([spouse, np.full(n_out, -1)]), address=address, res_old=res_old,
        res_old_province=res_old_prov, res_new=res_new, res_commune_name=res_name,
        home_xa=hx, home_huyen=hhuy, home_tinh=ht,
    )


def _home_old_province(province: str) -> int:
    """The pre-2025 province code that has the most communes now in `province` with the same code
    (Hải Phòng '31' -> 31); the ID prefix of people born there."""
    home = places.home_old(province)
    codes = home.province.to_numpy(zero_copy_only=False)
    if province in set(codes.tolist()):
        return int(province)
    vals, counts = np.unique(codes, return_counts=True)
    return int(vals[np.argmax(counts)])


def _hometowns(rng: np.random.Generator, cfg: GeneratorConfig, prefix: np.ndarray, home_old_code: int,
               cit_commune: np.ndarray, home: places.CommuneSet, n_cit: int,
               local: np.ndarray | None = None) -> tuple[pa.Array, ...]:
    """queQuan per person; `local` marks who was born where they live (default: ID prefix = home's)."""
    n = len(prefix)
    if local is None:
        local = prefix == home_old_code
    same = (np.arange(n) < n_cit) & local & (rng.random(n) < 0.75)
    xa = np.empty(n, dtype=object)
    huyen = np.empty(n, dtype=object)
    tinh = np.empty(n, dtype=object)
    newxa = np.empty(n, dtype=object)
    newtinh = np.empty(n, dtype=object)
    idx = np.flatnonzero(same)
    cc = pa.array(np.asarray(cit_commune)[idx])
    xa[idx] = home.code.take(cc).to_numpy(zero_copy_only=False)
    huyen[idx] = home.district.take(cc).to_numpy(zero_copy_only=False)
    tinh[idx] = home.province.take(cc).to_numpy(zero_copy_only=False)
    newxa[idx] = home.new_code.take(cc).to_numpy(zero_copy_only=False)
    newtinh[idx] = home.new_province.take(cc).to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~same)
    for code in sorted(set(prefix[rest].tolist())):
        sel = rest[prefix[rest] == code]
        cs = places.old_in(f"{code:02d}")
        k = pa.array(rng.integers(0, len(cs), len(sel)))
        xa[sel] = cs.code.take(k).to_numpy(zero_copy_only=False)
        huyen[sel] = cs.district.take(k).to_numpy(zero_copy_only=False)
        tinh[sel] = cs.province.take(k).to_numpy(zero_copy_only=False)
        newxa[sel] = cs.new_code.take(k).to_numpy(zero_copy_only=False)
        newtinh[sel] = cs.new_province.take(k).to_numpy(zero_copy_only=False)
    as_new = (rng.random(n) < 0.2) & np.not_equal(newxa, None)  # type: ignore[call-overload]
    xa = np.where(as_new, newxa, xa)
    huyen = np.where(as_new, None, huyen)  # type: ignore[call-overload]
    tinh = np.where(as_new, newtinh, tinh)
    return pa.array(xa, pa.string()), pa.array(huyen, pa.string()), pa.array(tinh, pa.string())


def replace_at(arr: pa.Array, idx: np.ndarray, values: list) -> pa.Array:
    """arr with arr[idx[k]] = values[k]; idx need not be sorted."""
    if len(idx) == 0:
        return arr
    order = np.argsort(idx, kind="stable")
    mask = np.zeros(len(arr), dtype=bool)
    mask[idx] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array([values[k] for k in order], arr.type))


@dataclass
class Records:
    """One source's rows before sorting: `table` (no _row yet), and per row the true entity."""

    table: pa.Table
    person: np.ndarray  # person_id per record, -1 if none
    enterprise: np.ndarray  # enterprise_id per record, -1 if none
    # Nested items (representatives): (record index, index inside the record, person_id) per item.
    sub: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def citizen_records(cfg: GeneratorConfig, people: People, as_of_s: int, log: NoiseLog,
                    taken_ids: np.ndarray | None = None) -> Records:
    """The population registry: one record per citizen, plus duplicate records, with citizen noise.
    A duplicate record's new ID avoids `taken_ids` (default: this province's persons' IDs)."""
    rng = stream(cfg.seed, "citizens")
    n_cit = people.n_citizens
    as_of_day = as_of_s // DAY

    dup = pick(rng, np.ones(n_cit, dtype=bool), cfg.rate("duplicate"))
    log.count_eligible("citizen", "duplicate", n_cit)
    rec_person = np.concatenate([np.arange(n_cit), dup])
    n = len(rec_person)
    rp = pa.array(rec_person)
    dup_ids = new_personal_ids(rng, (people.id_int[dup] // 10**6), people.id_int if taken_ids is None else taken_ids)
    id_str = pa.concat_arrays([people.id12.slice(0, n_cit), zpad(dup_ids, 12)])
    for k, p in enumerate(dup):
        log.add("citizen", "", n_cit + k, -1, "soDinhDanh", "duplicate", people.id12[int(p)].as_py(),
                id_str[n_cit + k].as_py())

    ethnic = names.draw(rng, names.ETHNIC_GROUPS, n_cit).take(rp)
    religion = names.draw(rng, names.RELIGIONS, n_cit).take(rp)
    cmnd = pc.if_else(pa.array(np.arange(n) < n_cit), people.cmnd.take(rp), pa.nulls(n, pa.string()))
    name = people.name.take(rp)
    dob = fmt_days(people.dob[rec_person])

    # Partial birth dates: the registry knew only the year and month (or only the year).
    hit = pick(rng, np.ones(n, dtype=bool), cfg.rate("partial_date"))
    log.count_eligible("citizen", "partial_date", n)
    orig = dob.take(pa.array(hit)).to_pylist()
    year_only = rng.random(len(hit)) < 0.3
    new = [d[:5] + "00-00" if y else d[:8] + "00" for d, y in zip(orig, year_only, strict=True)]
    for i, o, v in zip(hit, orig, new, strict=True):
        log.add("citizen", "", i, -1, "ngaySinh", "partial_date", o, v)
    dob = replace_at(dob, hit, new)

    # A legacy feed wrote some birth dates as dd/mm/yyyy: the spec's ISO form is broken, staging must
    # quarantine these records (drawn from their own stream so the other noise draws are unchanged).
    mrng = stream(cfg.seed, "citizens.malformed_dob")
    hit = pick(mrng, np.ones(n, dtype=bool), cfg.rate("malformed_dob"))
    log.count_eligible("citizen", "malformed_dob", n)
    orig = dob.take(pa.array(hit)).to_pylist()
    new = [f"{o[8:10]}/{o[5:7]}/{o[0:4]}" for o in orig]
    for i, o, v in zip(hit, orig, new, strict=True):
        log.add("citizen", "", i, -1, "ngaySinh", "malformed_dob", o, v)
    dob = replace_at(dob, hit, new)

    hit = pick(rng, np.ones(n, dtype=bool), cfg.rate("nfd"))
    log.count_eligible("citizen", "nfd", n)
    orig = name.take(pa.array(hit)).to_pylist()
    new = [nfd(o) for o in orig]
    keep = [k for k in range(len(hit)) if new[k] != orig[k]]  # an all-ASCII name has no NFD form
    for k in keep:
        log.add("citizen", "", hit[k], -1, "hoVaTen", "nfd", orig[k], new[k])
    name = replace_at(name, hit[keep], [new[k] for k in keep])

    ma_xa = people.res_new.take(rp)
    ma_tinh = pa.array([cfg.province] * n, pa.string())
    hit = pick(rng, np.ones(n, dtype=bool), cfg.rate("old_commune_code"))
    log.count_eligible("citizen", "old_commune_code", n)
    hp = pa.array(rec_person[hit])
    old_xa, old_tinh = people.res_old.take(hp).to_pylist(), people.res_old_province.take(hp).to_pylist()
    orig = ma_xa.take(pa.array(hit)).to_pylist()
    for i, o, v in zip(hit, orig, old_xa, strict=True):
        log.add("citizen", "", i, -1, "noiThuongTru.maXa", "old_commune_code", o, v)
    ma_xa = replace_at(ma_xa, hit, old_xa)
    ma_tinh = replace_at(ma_tinh, hit, old_tinh)

    alive = people.alive[rec_person]
    death = people.death[rec_person]
    cap = as_of_s - rng.integers(0, int(2 * 365 * DAY), n)
    # A death is recorded after it happened.
    death_rec = death * DAY + rng.integers(3600, 30 * DAY, n)
    cap = np.where(alive, cap, np.minimum(np.maximum(cap, death_rec), as_of_s))
    hh = people.household[rec_person]

    table = pa.table({
        "soDinhDanh": id_str,
        "soCmndCu": cmnd,
        "hoVaTen": name,
        "ngaySinh": dob,
        "gioiTinh": people.gender.take(rp),
        "danToc": ethnic,
        "tonGiao": religion,
        "quocTich": pa.array(["VN"] * n, pa.string()),
        "noiThuongTru": pa.StructArray.from_arrays(
            [people.address.take(rp), ma_xa, ma_tinh], names=["diaChiChiTiet", "maXa", "maTinh"]),
        "queQuan": pa.StructArray.from_arrays(
            [people.home_xa.take(rp), people.home_huyen.take(rp), people.home_tinh.take(rp)],
            names=["maXa", "maHuyen", "maTinh"]),
        "soHoKhau": join(f"HK-{cfg.province}-", zpad(hh + 1, 6)),
        "quanHeChuHo": people.role.take(rp),
        "trangThai": pa.array(np.where(alive, "CON_SONG", "DA_MAT"), pa.string()),
        "ngayMat": masked(fmt_days(np.where(alive, as_of_day, death)), alive),
        "capNhatLuc": fmt_local(cap, "rfc3339"),
    })
    return Records(table, rec_person, np.full(n, -1))


def truth_columns(people: People, first_id: int = 0) -> dict[str, pa.Array]:
    """The columns of truth/persons.parquet a province writes for `people` (person IDs from `first_id`); a
    country adds its own after them."""
    n = people.n
    return {
        "person_id": pa.array(np.arange(first_id, first_id + n), pa.int64()),
        "so_dinh_danh": people.id12,
        "so_cmnd_cu": people.cmnd,
        "ho_ten": people.name,
        "ngay_sinh": dates(people.dob),
        "gioi_tinh": people.gender,
        "alive": pa.array(people.alive),
        "ngay_mat": masked(dates(np.maximum(people.death, 0)), people.alive),
        "in_registry": pa.array(np.arange(n) < people.n_citizens),
    }
