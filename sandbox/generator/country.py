"""The synthetic country: N provinces generated one at a time into one national population registry, one
national business registry, one land database per province and one ground truth (docs/sandbox.md, "A
synthetic country").

Owns the order of a country run and what is kept across provinces. Two passes, each province by province:

1. Each province's people and enterprises (`build_people` / `build_enterprises` with a `cross.Cross`: the
   same draws as in pass 2). Kept: compact national arrays (ID, old ID card, sex, birth year, home and
   birth provinces: about 30 bytes a person), the pools the province lends to the others (a sample of its
   adults with their spouses, and of its enterprises) and its enterprise names. Then the national fixes:
   an ID or old ID card two provinces drew by chance is drawn again (a person's ID is unique in the
   country except for the `id_two_provinces` pairs, which are chosen here), and an enterprise name an
   earlier province already has gets the province's name (names are unique nationally, as the law wants).
2. Each province again, with the fixes: its registry records and enterprise records (sorted, spilled to
   a temporary Arrow file), its land database (written at once), its truth persons and enterprises
   (appended to the truth files at once), its truth links and noise rows (spilled).
Then the national registries are merged from the provinces' sorted runs a row group at a time, and the
links and noise rows written with their national `_row`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import places
from .business import Enterprises, build_enterprises, enterprise_records
from .common import DAY, dates, join, masked, parse_as_of, run_summary, stream, zpad
from .config import CountryConfig
from .cross import Cross, EnterprisePool, PersonPool
from .land import build_land
from .noise import NoiseLog, noise_table
from .people import (
    People,
    build_people,
    citizen_records,
    new_card_numbers,
    new_personal_ids,
    replace_at,
    truth_columns,
)
from .writer import (
    Run,
    Truth,
    merge_runs,
    parquet_writer,
    sort_rows,
    spill,
    unspill,
    write_json,
    write_parquet,
    write_part,
)

LEGAL_FORMS = ("TNHH_1TV", "TNHH_2TV", "CO_PHAN", "TU_NHAN", "HOP_DANH")
NATIONAL_DATASETS = {"citizen": "cit", "enterprise": "ent", "representative": "ent"}  # -> which merge map


@dataclass
class _Nation:
    """What pass 1 keeps of every person (index = national person_id) and enterprise."""

    pid_from: list[int]  # first person_id of each province (citizens, then its outside persons)
    n_citizens: list[int]
    eid_from: list[int]
    ids: np.ndarray  # 12-digit ID as int
    cards: np.ndarray  # 9-digit old ID card as int, -1 if none
    sex: np.ndarray
    year: np.ndarray  # birth year
    citizen: np.ndarray  # bool: has a registry record
    home: np.ndarray  # index into places.new_province_codes(): where the person lives
    born: np.ndarray  # the same for the province of birth registration (the ID's first digits as issued)
    ent_home: np.ndarray  # per enterprise: index into places.new_province_codes()


def _ints(arr: pa.Array) -> np.ndarray:
    """Digit strings (nullable) -> int64, -1 for null."""
    return pc.fill_null(pc.cast(arr, pa.int64()), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _with_ids(people: People, ids: np.ndarray, cards: np.ndarray) -> People:
    return replace(people, id_int=ids, id12=zpad(ids, 12), cmnd=masked(zpad(np.maximum(cards, 0), 9), cards < 0))


def _index34(codes: np.ndarray) -> np.ndarray:
    """2025 province codes (str) -> index into places.new_province_codes()."""
    lookup = {c: i for i, c in enumerate(places.new_province_codes())}
    return np.array([lookup[c] for c in codes.tolist()], dtype=np.int64)


def _old_to_new34(old_codes: np.ndarray) -> np.ndarray:
    """Pre-2025 province codes (int) -> index of their 2025 province."""
    to_new = places.old_to_new_province()
    lookup = {c: i for i, c in enumerate(places.new_province_codes())}
    table = np.full(100, -1, dtype=np.int64)
    for old, new in to_new.items():
        table[int(old)] = lookup[new]
    return table[np.asarray(old_codes, dtype=np.int64)]


def _national_names(names: list[str], seen: set[str], province: str) -> dict[int, str]:
    """Renames for the enterprise names an earlier province already has: '<name> <PROVINCE>' (then ' 2',
    ' 3' ... if that is taken too). Adds the province's final names to `seen`."""
    short = places.province_short_name(province).upper()
    own = set(names)
    out: dict[int, str] = {}
    for i, name in enumerate(names):
        if name in seen:
            new, k = f"{name} {short}", 2
            while new in seen or new in own:
                new, k = f"{name} {short} {k}", k + 1
            out[i] = new
            own.add(new)
    seen.update(own)
    return out


def _renamed(ent: Enterprises, renames: dict[int, str]) -> Enterprises:
    if not renames:
        return ent
    idx = np.array(sorted(renames), dtype=np.int64)
    return replace(ent, name=replace_at(ent.name, idx, [renames[int(i)] for i in idx]))


def _to_national(idx: np.ndarray, table: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    return np.where(idx >= 0, table[np.maximum(idx, 0)], -1)


def _fix_unique(rng: np.random.Generator, values: np.ndarray, valid: np.ndarray, digits: int) -> int:
    """Redraw in place every valid value that an earlier index already has (keeping the first six or
    two digits); returns how many were redrawn."""
    idx = np.flatnonzero(valid)
    _, first = np.unique(values[idx], return_index=True)
    again = np.ones(len(idx), dtype=bool)
    again[first] = False
    bad = idx[again]
    if len(bad):
        keep = np.setdiff1d(idx, bad)
        draw = new_personal_ids if digits == 6 else new_card_numbers
        values[bad] = draw(rng, values[bad] // 10**digits, values[keep])
    return len(bad)


def _pair_ids(config: CountryConfig, nat: _Nation, prov_of: np.ndarray) -> tuple[dict[int, int], dict[int, int], int]:
    """The `id_two_provinces` pairs: each citizen with the rate receives the ID of a citizen of another
    province with the same sex and birth year (a donor gives once and never receives). Returns {person:
    the other person with the ID} (both ways), {receiver: the ID it had}, and how many citizens were
    eligible."""
    rng = stream(config.seed, "country-id-two-provinces")
    cit = np.flatnonzero(nat.citizen)
    receivers = cit[rng.random(len(cit)) < config.rate("id_two_provinces")]
    can_give = nat.citizen.copy()
    can_give[receivers] = False
    key = nat.sex.astype(np.int64) * 10_000 + nat.year.astype(np.int64)
    donors = np.flatnonzero(can_give)
    order = np.argsort(key[donors], kind="stable")
    donors, dkey = donors[order], key[donors][order]
    partner: dict[int, int] = {}
    before: dict[int, int] = {}
    gave = np.zeros(len(nat.ids), dtype=bool)
    for x in receivers.tolist():
        lo, hi = np.searchsorted(dkey, key[x], "left"), np.searchsorted(dkey, key[x], "right")
        group = donors[lo:hi]
        ok = group[(prov_of[group] != prov_of[x]) & ~gave[group]]
        if len(ok) == 0:
            continue  # nobody of that sex and year elsewhere: the citizen keeps their own ID
        y = int(ok[rng.integers(len(ok))])
        partner[x], partner[y] = y, x
        gave[y] = True
        before[x] = int(nat.ids[x])
        nat.ids[x] = nat.ids[y]
    return partner, before, len(cit)


def _pools(config: CountryConfig, index: int, code: str, people: People, ent: Enterprises, as_of_day: int,
           pid_from: int, eid_from: int) -> tuple[PersonPool, EnterprisePool]:
    """What one province lends the others: a sample of `pool_share` of its adult citizens (at least 5)
    with their spouses, and of its enterprises."""
    rng = stream(config.seed, f"country-pool-{code}")
    idx = np.arange(people.n)
    adults = idx[(idx < people.n_citizens) & (people.age_years(as_of_day) >= 20)]
    k = min(len(adults), max(5, round(config.pool_share * len(adults))))
    primary = np.sort(rng.choice(adults, size=k, replace=False))
    sp = people.spouse[primary]
    members = np.union1d(primary, sp[sp >= 0])
    sub = people.take(members)
    is_primary = np.isin(members, primary)
    persons = PersonPool(people=sub, pid=pid_from + members, prov=np.full(len(members), index),
                         primary=is_primary,
                         rep_ok=is_primary & sub.alive & (sub.age_years(as_of_day) >= 20))
    ke = min(ent.n, max(5, round(config.pool_share * ent.n)))
    eidx = np.sort(rng.choice(ent.n, size=ke, replace=False))
    e = pa.array(eidx)
    firms = EnterprisePool(eid=eid_from + eidx, prov=np.full(ke, index), code_str=ent.code_str.take(e),
                           name=ent.name.take(e), address=ent.address.take(e))
    return persons, firms


def _concat_pools(parts: list[tuple[PersonPool, EnterprisePool]]) -> tuple[PersonPool, EnterprisePool]:
    people = parts[0][0].people
    for p, _ in parts[1:]:
        people = people.extend(p.people)
    persons = PersonPool(people=people, pid=np.concatenate([p.pid for p, _ in parts]),
                         prov=np.concatenate([p.prov for p, _ in parts]),
                         primary=np.concatenate([p.primary for p, _ in parts]),
                         rep_ok=np.concatenate([p.rep_ok for p, _ in parts]))
    firms = EnterprisePool(eid=np.concatenate([e.eid for _, e in parts]),
                           prov=np.concatenate([e.prov for _, e in parts]),
                           code_str=pa.concat_arrays([e.code_str for _, e in parts]),
                           name=pa.concat_arrays([e.name for _, e in parts]),
                           address=pa.concat_arrays([e.address for _, e in parts]))
    return persons, firms


def _first_pass(config: CountryConfig, as_of_s: int, weights: np.ndarray
                ) -> tuple[_Nation, list[dict[int, str]], PersonPool, EnterprisePool]:
    as_of_day = as_of_s // DAY
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "cards", "sex", "year", "citizen", "home", "born",
                                                          "ent_home")}
    pid_from, n_cit, eid_from = [0], [], [0]
    renames: list[dict[int, str]] = []
    seen: set[str] = set()
    parts = []
    for i, code in enumerate(config.provinces):
        cfg = config.province_config(code)
        cross = Cross(config.seed, code, i, config.rates, weights)
        people = build_people(cfg, as_of_day, cross)
        ent = build_enterprises(cfg, people, as_of_s, cross)
        renames.append(_national_names(ent.name.to_pylist(), seen, code))
        ent = _renamed(ent, renames[-1])
        parts.append(_pools(config, i, code, people, ent, as_of_day, pid_from[-1], eid_from[-1]))
        citizen = np.arange(people.n) < people.n_citizens
        outside_home = _old_to_new34(_ints(people.res_old_province))
        cols["ids"].append(people.id_int.astype(np.int64))
        cols["cards"].append(_ints(people.cmnd))
        here = _index34(np.array([code]))[0]
        cols["sex"].append(people.sex.astype(np.int8))
        cols["year"].append((people.dob.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
                             + 1970).astype(np.int16))
        cols["citizen"].append(citizen)
        cols["home"].append(np.where(citizen, here, outside_home).astype(np.int8))
        cols["born"].append(_old_to_new34(people.id_prefix).astype(np.int8))
        cols["ent_home"].append(np.full(ent.n, here, dtype=np.int8))
        pid_from.append(pid_from[-1] + people.n)
        n_cit.append(people.n_citizens)
        eid_from.append(eid_from[-1] + ent.n)
        del people, ent
    nat = _Nation(pid_from=pid_from, n_citizens=n_cit, eid_from=eid_from,
                  **{k: np.concatenate(v) for k, v in cols.items()})
    persons, firms = _concat_pools(parts)
    return nat, renames, persons, firms


def generate_country(config: CountryConfig, out_dir: str | Path) -> dict:
    """Generate the country into `out_dir` (docs/sandbox.md, "A synthetic country"); return the summary of
    `generate` plus `country_counts`. Deterministic: nothing depends on the clock but the summary."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    as_of_s = parse_as_of(config.as_of)
    as_of_day = as_of_s // DAY
    codes34 = places.new_province_codes()
    per_province = config.citizens_by_province()
    weights = np.array([per_province[c] for c in config.provinces], dtype=float)

    # --- pass 1: who exists, national fixes ---
    nat, renames, pool, firms = _first_pass(config, as_of_s, weights)
    sizes = np.diff(nat.pid_from)
    prov_of = np.repeat(np.arange(len(config.provinces), dtype=np.int16), sizes)
    fix_rng = stream(config.seed, "country-unique-ids")
    redrawn = _fix_unique(fix_rng, nat.ids, np.ones(len(nat.ids), dtype=bool), 6)
    redrawn += _fix_unique(fix_rng, nat.cards, nat.cards >= 0, 7)
    partner, id_before, eligible_pairs = _pair_ids(config, nat, prov_of)
    pool = replace(pool, people=_with_ids(pool.people, nat.ids[pool.pid], nat.cards[pool.pid]))

    # --- pass 2: the provinces' files ---
    counts: dict[str, int] = {}
    noise_counts: dict[str, dict[str, dict[str, int]]] = {}
    country_counts: dict[str, list[int]] = {"id_two_provinces": [eligible_pairs, len(id_before)]}
    taken = nat.ids.copy()
    tmp = Path(tempfile.mkdtemp(prefix=".country-", dir=out))
    writers: dict[str, _Appender] = {}
    try:
        runs: dict[str, list[Run]] = {"cit": [], "ent": []}
        for i, code in enumerate(config.provinces):
            cfg = config.province_config(code)
            cross = Cross(config.seed, code, i, config.rates, weights, persons=pool, enterprises=firms)
            log = NoiseLog()
            truth = Truth(log)
            lo_p, hi_p = nat.pid_from[i], nat.pid_from[i + 1]
            people = build_people(cfg, as_of_day, cross)
            if people.n != hi_p - lo_p:
                raise AssertionError("pass 2 made other people than pass 1")
            people = _with_ids(people, nat.ids[lo_p:hi_p], nat.cards[lo_p:hi_p])
            ent = _renamed(build_enterprises(cfg, people, as_of_s, cross), renames[i])
            aug = cross.augmented_people(people)
            pid_of = np.concatenate([np.arange(lo_p, hi_p), pool.pid])
            eid_of = np.concatenate([nat.eid_from[i] + np.arange(ent.n), firms.eid])

            # population registry (this province's residents)
            cit = citizen_records(cfg, people, as_of_s, log, taken_ids=taken)
            for x in sorted(k for k in id_before if lo_p <= k < hi_p):
                log.add("citizen", "", x - lo_p, -1, "soDinhDanh", "id_two_provinces",
                        f"{id_before[x]:012d}", f"{nat.ids[x]:012d}")
            log.count_eligible("citizen", "id_two_provinces", people.n_citizens)
            ids = cit.table["soDinhDanh"].combine_chunks()
            taken = np.concatenate([taken, _ints(ids.slice(people.n_citizens))])
            table, row_of = sort_rows(cit.table, ["capNhatLuc", "soDinhDanh"])
            runs["cit"].append(_spill_run(tmp / f"cit-{code}.arrow", table.drop_columns(["_row"]),
                                          table["capNhatLuc"].cast(pa.timestamp("s", "UTC")).cast(pa.int64()),
                                          table["soDinhDanh"]))
            truth.add("citizen", "", ids, row_of, _to_national(cit.person, pid_of), cit.enterprise)
            del table, cit

            # business registry (this province's enterprises)
            er = enterprise_records(cfg, ent, aug, as_of_s, log)
            table, row_of = sort_rows(er.table, ["_updated", "MaSoDN"])
            runs["ent"].append(_spill_run(tmp / f"ent-{code}.arrow", table.drop_columns(["_row", "_updated"]),
                                          table["_updated"], table["MaSoDN"]))
            del table
            ecodes = er.table["MaSoDN"].combine_chunks()
            truth.add("enterprise", "", ecodes, row_of, er.person, _to_national(er.enterprise, eid_of))
            if er.sub is None:
                raise AssertionError("enterprise records without representatives")
            rep_rec, rep_sub, rep_person = er.sub
            n_rec = len(ecodes)
            per_rec = np.bincount(rep_rec, minlength=n_rec)
            rep_start = np.cumsum(per_rec) - per_rec
            rep_keys = join(ecodes.take(pa.array(rep_rec)), pc.cast(pa.array(rep_sub), pa.string()), sep="#")
            truth.add("representative", "", rep_keys, row_of[rep_rec], _to_national(rep_person, pid_of),
                      _to_national(er.enterprise[rep_rec], eid_of), item_of=_item_of(rep_start))
            del er

            # this province's land database
            tables = build_land(cfg, code, people, ent, as_of_s, log, cross)
            for name, dataset in (("thua_dat", "parcel"), ("chu_su_dung", "land_holder"),
                                  ("giay_chung_nhan", "certificate")):
                rec = tables[name]
                table, row_of = sort_rows(rec.table, ["cap_nhat_luc", "id"])
                rel = f"land/{code}/{name}.parquet"
                write_parquet(table, out / rel)
                counts[rel] = table.num_rows
                keys = join(f"{code}:", pc.cast(rec.table["id"].combine_chunks(), pa.string()))
                truth.add(dataset, code, keys, row_of, _to_national(rec.person, pid_of),
                          _to_national(rec.enterprise, eid_of))
            del tables

            # truth: persons and enterprises now, links and noise once the national rows are known
            _append(writers, out / "truth/persons.parquet", _persons(people, nat, partner, lo_p, codes34))
            _append(writers, out / "truth/enterprises.parquet", _enterprises(ent, nat.eid_from[i], code, cfg.province))
            spill(_link_provinces(truth.links_table(), code, nat, partner, codes34), tmp / f"links-{code}.arrow")
            spill(noise_table(truth.noise_rows), tmp / f"noise-{code}.arrow")
            for dataset, by_noise in log.counts().items():
                for noise, c in by_noise.items():
                    nc = noise_counts.setdefault(dataset, {}).setdefault(noise, {"eligible": 0, "applied": 0})
                    nc["eligible"] += c["eligible"]
                    nc["applied"] += c["applied"]
            for name, (e, a) in cross.counts.items():
                cc = country_counts.setdefault(name, [0, 0])
                cc[0] += e
                cc[1] += a
            del people, ent, aug, truth, log

        for w in writers.values():
            w.close()
        writers.clear()
        counts["truth/persons.parquet"] = len(nat.ids)
        counts["truth/enterprises.parquet"] = nat.eid_from[-1]

        # --- national registries, then links and noise with their national rows ---
        rows = {"cit": merge_runs(runs["cit"], out / "population/citizens.parquet"),
                "ent": merge_runs(runs["ent"], out / "business/enterprises.parquet")}
        counts["population/citizens.parquet"] = sum(len(r) for r in rows["cit"])
        counts["business/enterprises.parquet"] = sum(len(r) for r in rows["ent"])
        for name in ("links", "noise"):
            rel = f"truth/{name}.parquet"
            counts[rel] = 0
            for i, code in enumerate(config.provinces):
                table = _national_rows(unspill(tmp / f"{name}-{code}.arrow"), rows, i)
                _append(writers, out / rel, table)
                counts[rel] += table.num_rows
            writers.pop(str(out / rel)).close()
    finally:
        for w in writers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)

    facts = {k: {"eligible": v[0], "applied": v[1]} for k, v in sorted(country_counts.items())}
    ranges = {code: {"person_id": [nat.pid_from[i], nat.pid_from[i + 1]],
                     "citizens": nat.n_citizens[i],
                     "enterprise_id": [nat.eid_from[i], nat.eid_from[i + 1]]}
              for i, code in enumerate(config.provinces)}
    write_json({**config.to_json(), "counts": dict(sorted(counts.items())), "noise_counts": noise_counts,
                "country_counts": facts, "province_ranges": ranges, "ids_redrawn": redrawn}, out / "config.json")
    return {**run_summary(counts, started), "country_counts": facts}


def _item_of(start: np.ndarray) -> Callable[[int, int], int]:
    """A representative's item index from (enterprise record index, position in the record)."""
    return lambda idx, sub: int(start[idx] + sub)


def _spill_run(path: Path, table: pa.Table, times: pa.ChunkedArray, keys: pa.ChunkedArray) -> Run:
    spill(table, path)
    return Run(path, times.to_numpy().astype(np.int64), _ints(keys.combine_chunks()))


class _Appender:
    """A file written a province at a time; every part is cast to the first part's schema."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.schema = schema.remove_metadata()
        self.writer = parquet_writer(path, self.schema)

    def add(self, table: pa.Table) -> None:
        write_part(self.writer, table.replace_schema_metadata(None).cast(self.schema))

    def close(self) -> None:
        self.writer.close()


def _append(writers: dict[str, _Appender], path: Path, table: pa.Table) -> None:
    """Append rows to a file written a province at a time (opened on first use)."""
    if str(path) not in writers:
        writers[str(path)] = _Appender(path, table.schema)
    writers[str(path)].add(table)


def _persons(people: People, nat: _Nation, partner: dict[int, int], pid_from: int,
             codes34: tuple[str, ...]) -> pa.Table:
    n = people.n
    seg = slice(pid_from, pid_from + n)
    names34 = pa.array(codes34, pa.string())
    home, born = nat.home[seg], nat.born[seg]
    shares = np.full(n, -1, dtype=np.int64)
    for person, other in partner.items():
        if pid_from <= person < pid_from + n:
            shares[person - pid_from] = other
    return pa.table({
        **truth_columns(people, pid_from),
        "home_province": names34.take(pa.array(home)),
        "id_province": names34.take(pa.array(born)),
        "moved": pa.array(home != born),
        "shares_id_with": pa.array(shares, pa.int64(), mask=shares < 0),
    })


def _enterprises(ent: Enterprises, eid_from: int, code: str, province: str) -> pa.Table:
    home = places.home_old(province)
    return pa.table({
        "enterprise_id": pa.array(eid_from + np.arange(ent.n), pa.int64()),
        "ma_so_dn": ent.code_str,
        "ten_dn": ent.name,
        "ten_tieng_anh": ent.name_en,
        "loai_hinh": pa.array([LEGAL_FORMS[f] for f in ent.form], pa.string()),
        "tinh_trang": ent.status,
        "ngay_thanh_lap": dates(ent.founded),
        "ma_xa": home.new_code.take(pa.array(ent.office_old)),
        "province": pa.array([code] * ent.n, pa.string()),
    })


def _link_provinces(links: pa.Table, code: str, nat: _Nation, partner: dict[int, int],
                    codes34: tuple[str, ...]) -> pa.Table:
    """The country's columns of truth/links.parquet: the record's province, the linked entity's (the
    person's home province, else the enterprise's), whether they differ, whether the person shares an ID."""
    pid = _ints(links["person_id"].combine_chunks())
    eid = _ints(links["enterprise_id"].combine_chunks())
    entity = np.where(pid >= 0, nat.home[np.maximum(pid, 0)].astype(np.int64),
                      np.where(eid >= 0, nat.ent_home[np.maximum(eid, 0)].astype(np.int64), -1))
    here = codes34.index(code)
    names34 = pa.array(codes34, pa.string())
    return (links
            .append_column("record_province", pa.array([code] * links.num_rows, pa.string()))
            .append_column("entity_province", masked(names34.take(pa.array(np.maximum(entity, 0))), entity < 0))
            .append_column("cross_province", pa.array((entity >= 0) & (entity != here)))
            .append_column("shared_id", pa.array(np.isin(pid, np.array(sorted(partner), dtype=np.int64)))))


def _national_rows(table: pa.Table, rows: dict[str, list[np.ndarray]], index: int) -> pa.Table:
    """A province's links or noise rows with `source_row` of the national registries' files."""
    source = table["source_row"].to_numpy().astype(np.int64)
    dataset = table["dataset"].combine_chunks().to_numpy(zero_copy_only=False)
    for name, which in NATIONAL_DATASETS.items():
        sel = dataset == name
        source = np.where(sel, rows[which][index][np.where(sel, source, 0)], source)
    return table.set_column(table.schema.get_field_index("source_row"), "source_row", pa.array(source, pa.int64()))
