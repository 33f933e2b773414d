"""Helpers over the generated province's truth files, shared by the standardization tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def noise_rows(noise: pa.Table, dataset: str, kind: str, field_pattern: str = ".*") -> list[dict]:
    """Rows of truth/noise.parquet for one dataset and noise type, fields matching a regex."""
    t = noise.filter(pc.and_(pc.equal(noise["dataset"], dataset), pc.equal(noise["noise"], kind)))
    t = t.filter(pc.match_substring_regex(t["field"], f"^(?:{field_pattern})$"))
    return t.to_pylist()


def noisy_keys(noise: pa.Table, dataset: str, field_pattern: str = ".*") -> set[tuple[str, str]]:
    """(record_key, field) of every value some noise changed. Record keys: soDinhDanh (citizen), MaSoDN
    (enterprise, whose fields include 'NguoiDaiDien[i].HoTen'), 'MaSoDN#i' (representative, fields
    'HoTen', 'SoGiayTo', 'NgaySinh'), '<province>:<id>' (land rows)."""
    t = noise.filter(pc.equal(noise["dataset"], dataset))
    t = t.filter(pc.match_substring_regex(t["field"], f"^(?:{field_pattern})$"))
    return set(zip(t["record_key"].to_pylist(), t["field"].to_pylist(), strict=True))


def representatives(province: Path) -> list[dict]:
    """Every legal representative: its fields plus `key` ('MaSoDN#i', the representative's record key),
    `enterprise` (MaSoDN) and `prefix` ('NguoiDaiDien[i]', how enterprise-level noise names its fields)."""
    rows = pq.read_table(province / "business" / "enterprises.parquet",
                         columns=["MaSoDN", "NguoiDaiDien"]).to_pylist()
    return [{"key": f"{r['MaSoDN']}#{i}", "enterprise": r["MaSoDN"], "prefix": f"NguoiDaiDien[{i}]", **rep}
            for r in rows for i, rep in enumerate(r["NguoiDaiDien"] or [])]
