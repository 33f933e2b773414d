"""The synthetic province generator: `GeneratorConfig` in, the files of docs/sandbox.md out; and the
synthetic country: `CountryConfig` in, the same layout for N provinces out (`country.generate_country`).

Owns the order of a province's run (people -> registry records -> enterprises -> land databases -> truth)
and the summary it returns. Each part lives in its own module: names (word lists), places (administrative
units), people (persons and the population registry), business (enterprises and the business registry),
land (one land database per province), noise (corruptions and their log), writer (files and truth),
cross (the cross-province draws of a country), country (a country's run, province by province).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .business import build_enterprises, enterprise_records
from .common import DAY, dates, join, parse_as_of, run_summary
from .config import (
    COUNTRY_CATALOGUE,
    COUNTRY_DEFAULTS,
    NOISE_CATALOGUE,
    NOISE_DEFAULTS,
    CountryConfig,
    GeneratorConfig,
    country_provinces,
)
from .country import generate_country
from .land import build_land
from .noise import NoiseLog, noise_table
from .people import build_people, citizen_records, truth_columns
from .writer import Truth, sort_rows, write_json, write_parquet

__all__ = ["COUNTRY_CATALOGUE", "COUNTRY_DEFAULTS", "CountryConfig", "GeneratorConfig", "NOISE_CATALOGUE",
           "NOISE_DEFAULTS", "country_provinces", "generate", "generate_country"]


def _keys(prefix: str, ids: pa.Array) -> pa.Array:
    return join(prefix, pc.cast(ids, pa.string()))


def generate(config: GeneratorConfig | CountryConfig, out_dir: str | Path) -> dict:
    """Generate the province (or, given a CountryConfig, the country) into `out_dir` (see docs/sandbox.md);
    return a summary: `counts` (rows per file), `source_rows`, `seconds`, `rows_per_second`.
    Deterministic: nothing depends on the clock but the summary."""
    if isinstance(config, CountryConfig):
        return generate_country(config, out_dir)
    started = time.perf_counter()
    out = Path(out_dir)
    as_of_s = parse_as_of(config.as_of)
    log = NoiseLog()
    truth = Truth(log)
    counts: dict[str, int] = {}

    def emit(rel: str, table: pa.Table) -> None:
        write_parquet(table, out / rel)
        counts[rel] = table.num_rows

    # --- population registry ---
    people = build_people(config, as_of_s // DAY)
    cit = citizen_records(config, people, as_of_s, log)
    table, row_of = sort_rows(cit.table, ["capNhatLuc", "soDinhDanh"])
    emit("population/citizens.parquet", table)
    truth.add("citizen", "", cit.table["soDinhDanh"].combine_chunks(), row_of, cit.person, cit.enterprise)
    del table

    # --- business registry ---
    ent = build_enterprises(config, people, as_of_s)
    er = enterprise_records(config, ent, people, as_of_s, log)
    table, row_of = sort_rows(er.table, ["_updated", "MaSoDN"], drop=["_updated"])
    emit("business/enterprises.parquet", table)
    codes = er.table["MaSoDN"].combine_chunks()
    truth.add("enterprise", "", codes, row_of, er.person, er.enterprise)
    if er.sub is None:
        raise AssertionError("enterprise records without representatives")
    rep_rec, rep_sub, rep_person = er.sub
    rep_start = np.cumsum(np.bincount(rep_rec, minlength=len(codes))) - np.bincount(rep_rec, minlength=len(codes))
    rep_keys = join(codes.take(pa.array(rep_rec)), pc.cast(pa.array(rep_sub), pa.string()), sep="#")
    truth.add("representative", "", rep_keys, row_of[rep_rec], rep_person, er.enterprise[rep_rec],
              item_of=lambda idx, sub: int(rep_start[idx] + sub))

    # --- land registries ---
    for province in config.land_provinces:
        tables = build_land(config, province, people, ent, as_of_s, log)
        for name, dataset in (("thua_dat", "parcel"), ("chu_su_dung", "land_holder"),
                              ("giay_chung_nhan", "certificate")):
            rec = tables[name]
            table, row_of = sort_rows(rec.table, ["cap_nhat_luc", "id"])
            emit(f"land/{province}/{name}.parquet", table)
            truth.add(dataset, province, _keys(f"{province}:", rec.table["id"].combine_chunks()), row_of,
                      rec.person, rec.enterprise)
        del tables

    # --- truth ---
    emit("truth/persons.parquet", pa.table(truth_columns(people)))
    from .places import home_old

    home = home_old(config.province)
    emit("truth/enterprises.parquet", pa.table({
        "enterprise_id": pa.array(np.arange(ent.n), pa.int64()),
        "ma_so_dn": ent.code_str,
        "ten_dn": ent.name,
        "ten_tieng_anh": ent.name_en,
        "loai_hinh": pa.array([("TNHH_1TV", "TNHH_2TV", "CO_PHAN", "TU_NHAN", "HOP_DANH")[f] for f in ent.form],
                              pa.string()),
        "tinh_trang": ent.status,
        "ngay_thanh_lap": dates(ent.founded),
        "ma_xa": home.new_code.take(pa.array(ent.office_old)),
    }))
    emit("truth/links.parquet", truth.links_table())
    emit("truth/noise.parquet", noise_table(truth.noise_rows))

    write_json({**config.to_json(), "counts": dict(sorted(counts.items())), "noise_counts": log.counts()},
               out / "config.json")
    return run_summary(counts, started)
