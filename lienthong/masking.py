"""Masking of personal values for anything that leaves the warehouse as a report (audit reports, the
findings browser, quarantine examples).

The rules are the same as the warehouse's own masking functions (`lienthong_access.mask_id`, `mask_name`,
`mask_year` in `lienthong.access`), so an auditor sees a person masked the same way in a report and in an
agency view: an ID keeps its last three characters, a name its initials, a date its year.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_WS = re.compile(r"\s+")
_DATE = re.compile(r"^(\d{4})-\d{2}-\d{2}")

# Keys of finding subjects / evidence (and other bookkeeping JSON) that never carry a personal value.
PUBLIC_KEYS = frozenset({
    "dataset", "province_code", "commune_code", "commune_code_2025", "commune_code_outdated", "enterprise_code",
    "enterprise_status", "serial", "certificate_id", "parcel_id", "score", "runner_up_score", "method", "band",
    "total", "position", "day", "shares", "share_percent", "registry_precision", "type", "severity", "agency",
    "status", "count", "rule", "reason", "rules", "reasons", "land_use", "area_m2", "map_sheet", "parcel_number",
})
NAME_KEYS = re.compile(r"(^|_)(name|names|full_name|ho_ten|hoTen|hoVaTen|tenChu)(_|$)|^name_in_|hoVaTen|hoTen",
                       re.IGNORECASE)
DATE_KEYS = re.compile(r"(birth|death|ngay_sinh|ngaySinh)", re.IGNORECASE)


def mask_id(value: Any) -> str | None:
    """`001234567890` -> `*********890` (as `lienthong_access.mask_id`)."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= 3:
        return "*" * len(text)
    return "*" * (len(text) - 3) + text[-3:]


def mask_name(value: Any) -> str | None:
    """`Nguyễn Văn An` -> `N. V. A.` (as `lienthong_access.mask_name`)."""
    if value is None:
        return None
    words = [w for w in _WS.split(str(value).strip()) if w]
    return " ".join(w[0] + "." for w in words) if words else None


def mask_year(value: Any) -> str | None:
    """A date (ISO text or date object) -> its year only."""
    if value is None:
        return None
    if hasattr(value, "year"):
        return str(value.year)
    m = _DATE.match(str(value))
    return m.group(1) if m else "****"


def mask_by_key(key: str, value: Any) -> Any:
    """Mask one JSON value by the name of its key: public keys pass, names keep initials, dates their
    year, anything else (IDs, keys, free text) keeps its last three characters. Lists and objects recurse."""
    if isinstance(value, Mapping):
        return mask_json(value)
    if isinstance(value, list | tuple):
        return [mask_by_key(key, v) for v in value]
    if value is None or isinstance(value, bool | int | float) or key in PUBLIC_KEYS:
        return value
    if NAME_KEYS.search(key):
        return mask_name(value)
    if DATE_KEYS.search(key):
        return mask_year(value)
    return mask_id(value)


def mask_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a JSON object with every value masked by `mask_by_key` (allow-list of public keys)."""
    return {k: mask_by_key(k, v) for k, v in doc.items()}
