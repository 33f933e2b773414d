"""Land-use purpose codes (mục đích sử dụng đất): validate against the catalogue, with its version.

Owns: `load_catalogue` (schemas/reference/land_use_codes.yaml, read once) and `land_use`, which splits a
'+'-joined value ('ODT+CLN'), checks each part, and says which catalogue version the value belongs to:
"08/2024" (Circular 08/2024/TT-BTNMT) or "25/2014" when a part is a code the 2024 list dropped, with the
2024 equivalent where the catalogue names one. One lookup per DISTINCT value.

Issue codes (several joined by ";"):
  unknown_land_use_code:<part>   a part in neither catalogue version (the bad part is named)
  empty_land_use_part            an empty part ('ODT+', 'ODT++CLN')
  land_use_code_outdated         a part is a 25/2014 code no longer in the 2024 list ('BHK' -> 'HNK')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa

from lienthong.yamltext import safe_load

from .common import ISSUE_SEP, ArrayLike, Standardized, map_distinct

__all__ = ["Catalogue", "LandUse", "land_use", "load_catalogue"]

CATALOGUE_PATH = Path(__file__).resolve().parents[2] / "schemas" / "reference" / "land_use_codes.yaml"


@dataclass(frozen=True)
class Catalogue:
    current: str  # the version of codes in force ("08/2024")
    version: dict[str, str]  # code -> catalogue version
    name: dict[str, str]  # code -> Vietnamese name
    now: dict[str, str | None]  # old code -> 2024 code (None: no single equivalent)


@cache
def load_catalogue(path: str | Path = CATALOGUE_PATH) -> Catalogue:
    """Read the land-use catalogue YAML (cached per path)."""
    doc = safe_load(Path(path).read_text(encoding="utf-8"))
    current = doc["current"]
    version, name, now = {}, {}, {}
    for entry in doc["codes"]:
        code = entry["code"]
        if code in version:
            raise ValueError(f"{path}: land-use code {code} listed twice")
        if entry["version"] not in doc["versions"]:
            raise ValueError(f"{path}: {code} has unknown version {entry['version']!r}")
        version[code], name[code] = entry["version"], entry["name"]
        if entry["version"] != current:
            now[code] = entry.get("now")
    for old, new in now.items():
        if new is not None and version.get(new) != current:
            raise ValueError(f"{path}: {old} -> {new}, which is not a {current} code")
    return Catalogue(current=current, version=version, name=name, now=now)


@dataclass(frozen=True)
class LandUse(Standardized):
    """`values`: the normalised code ('ODT+CLN': trimmed, upper case); `version`: the catalogue version
    the value matches ("08/2024", or "25/2014" when it uses a dropped code; null if a part is unknown);
    `equivalent`: the value in 2024 codes (old parts replaced; null if a part has no single equivalent
    or is unknown)."""

    version: pa.Array
    equivalent: pa.Array


def _one(value: str, cat: Catalogue) -> tuple[str, bool, str | None, str | None, str | None]:
    parts = [p.strip().upper() for p in value.split("+")]
    normalized = "+".join(parts)
    issues: list[str] = []
    equivalent: list[str] | None = []
    outdated = False
    for part in parts:
        if not part:
            issues.append("empty_land_use_part")
            equivalent = None
            continue
        version = cat.version.get(part)
        if version is None:
            issues.append(f"unknown_land_use_code:{part}")
            equivalent = None
        elif version != cat.current:
            outdated = True
            new = cat.now.get(part)
            if new is None:
                equivalent = None
            elif equivalent is not None:
                equivalent.append(new)
        elif equivalent is not None:
            equivalent.append(part)
    if outdated:
        issues.append("land_use_code_outdated")
    unknown = any(i != "land_use_code_outdated" for i in issues)
    version_out = None if unknown else ("25/2014" if outdated else cat.current)
    return (normalized, normalized != value, ISSUE_SEP.join(issues) or None, version_out,
            "+".join(equivalent) if equivalent is not None else None)


def land_use(arr: ArrayLike | Sequence[str | None], catalogue: str | Path = CATALOGUE_PATH) -> LandUse:
    """Validate land-use purpose codes ('+'-joined for mixed use) against the catalogue."""
    cat = load_catalogue(catalogue)
    values, repaired, issue, version, equivalent = map_distinct(
        arr, lambda v: _one(v, cat), (pa.string(), pa.bool_(), pa.string(), pa.string(), pa.string()))
    return LandUse(values=values, repaired=repaired, issue=issue, version=version, equivalent=equivalent)
