"""Synthetic rows of the published `citizen_profile` dataset, straight in its contract's shape, for tests and
benchmarks of publication that need many realistic rows fast (DuckDB SQL, no Python loop per row).

Owns the generator only; the agency-system sandbox (`sandbox.generator`) is what feeds the pipeline."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from lienthong.contracts import contract

DATASET = "citizen_profile"
FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô"]
MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Thanh", "Ngọc", "Đức", "Quang", "Thu", "Hoài"]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Hà", "Hải", "Hạnh", "Hùng", "Lan", "Linh", "Mai", "Nam", "Phương", "Quân",
         "Sơn", "Thảo", "Trang", "Tuấn", "Vy", "Yến"]
STREETS = ["Lạch Tray", "Văn Cao", "Lê Lợi", "Trần Phú", "Điện Biên Phủ", "Hai Bà Trưng", "Tô Hiệu", "Cầu Đất"]
PREFIXES = ["031", "001", "079", "048", "092", "026"]  # birth-registration province codes (6 x 1M IDs)


def _pick(values: list[str], h: str) -> str:
    items = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"[{items}][CAST(1 + ({h}) % {len(values)} AS BIGINT)]"


def synthetic_profiles(n: int, marker: str = "VN", seed: int = 1) -> pa.Table:
    """`n` citizen_profile rows in the contract's Arrow schema, `nationality` = `marker` on every row.

    citizen_id: province prefix (one per million rows) + century/sex digit + birth year + 6-digit serial, so
    unique and consistent with birth year and sex. About 10 % of rows have enterprises (half of them two),
    40 % parcels (a quarter of them two), 2 % are deceased with a death date."""
    if n > len(PREFIXES) * 1_000_000:
        raise ValueError(f"at most {len(PREFIXES)} million rows")
    sql = f"""
    WITH base AS (
      SELECT i, hash(i, {seed}) AS h, 1935 + hash(i, {seed}, 'year') % 76 AS year,
             CASE WHEN hash(i, {seed}, 'sex') % 2 = 0 THEN 'NAM' ELSE 'NU' END AS sex,
             printf('%05d', 11000 + hash(i, {seed}, 'commune') % 1000) AS commune
      FROM range({n}) t(i)
    ), nested AS (
      SELECT *,
        struct_pack(enterprise_code := printf('01%08d', h % 100000000),
                    enterprise_name := 'Công ty TNHH ' || {_pick(GIVEN, 'h >> 5')} || ' ' || {_pick(STREETS, 'h >> 11')},
                    enterprise_status := 'DANG_HOAT_DONG', title := 'Giám đốc') AS e1,
        struct_pack(enterprise_code := '0100233488', enterprise_name := 'Công ty CP An Phát',
                    enterprise_status := 'TAM_NGUNG', title := 'Chủ tịch HĐQT') AS e2,
        struct_pack(province_code := '31', commune_code_2025 := commune,
                    map_sheet := CAST(1 + (h >> 13) % 80 AS BIGINT), parcel_number := CAST(1 + (h >> 19) % 900 AS BIGINT),
                    area_m2 := round(40 + ((h >> 29) % 3600) / 10.0, 1), land_use := 'ODT',
                    certificate_serial := printf('AB%08d', (h >> 7) % 100000000), share_percent := 100.0) AS p1,
        struct_pack(province_code := '31', commune_code_2025 := commune, map_sheet := CAST(81 AS BIGINT),
                    parcel_number := CAST(1 + (h >> 41) % 500 AS BIGINT), area_m2 := 55.5, land_use := 'CLN',
                    certificate_serial := printf('CX%08d', (h >> 9) % 100000000), share_percent := 50.0) AS p2
      FROM base
    )
    SELECT
      {_pick(PREFIXES, 'i // 1000000')} || CAST((CASE WHEN year >= 2000 THEN 2 ELSE 0 END) + (sex = 'NU')::INT AS VARCHAR)
        || printf('%02d', year % 100) || printf('%06d', i % 1000000) AS citizen_id,
      'P-' || substr(md5(CAST(i AS VARCHAR) || '|{seed}'), 1, 16) AS entity_id,
      CASE WHEN year < 1995 THEN printf('03%07d', (h >> 3) % 10000000) END AS legacy_id,
      {_pick(FAMILY, 'h')} || ' ' || {_pick(MIDDLE, 'h >> 4')} || ' ' || {_pick(GIVEN, 'h >> 8')} AS full_name,
      make_date(CAST(year AS BIGINT), CAST(1 + (h >> 12) % 12 AS BIGINT), CAST(1 + (h >> 16) % 28 AS BIGINT)) AS birth_date,
      'day' AS birth_date_precision, sex, '{marker}' AS nationality,
      'Số ' || CAST(1 + (h >> 21) % 300 AS VARCHAR) || ' ' || {_pick(STREETS, 'h >> 24')} AS residence_address,
      commune AS residence_commune_code, commune AS residence_commune_code_2025, '31' AS residence_province_code,
      CASE WHEN (h >> 27) % 50 = 0 THEN 'DA_MAT' ELSE 'CON_SONG' END AS status,
      CASE WHEN (h >> 27) % 50 = 0 THEN DATE '2024-05-06' END AS death_date,
      TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(CAST((h >> 31) % 8640000 AS DOUBLE)) AS source_updated_at,
      CASE (h >> 33) % 20 WHEN 0 THEN [e1] WHEN 1 THEN [e1, e2] END AS enterprises,
      CASE WHEN (h >> 38) % 10 < 3 THEN [p1] WHEN (h >> 38) % 10 = 3 THEN [p1, p2] END AS parcels
    FROM nested ORDER BY i
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = con.execute(sql).to_arrow_table()
    finally:
        con.close()
    return table.cast(contract(DATASET).arrow_schema())
