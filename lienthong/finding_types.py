"""The findings taxonomy: what can be wrong between the population, business and land registries, how bad it
is (`SEVERITIES`) and which agency must fix it (`AGENCIES`). Plain values, no warehouse: `lienthong.findings`
(the findings store) and `lienthong.cases` (the agencies' work on them) both build on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low", "info")
"""Severities, most severe first."""

AGENCIES = ("population_registry", "business_registry", "land_registry")
"""The agencies a finding can be assigned to (the one that must fix it)."""



@dataclass(frozen=True)
class FindingType:
    """A kind of reconciliation finding: its default severity and the agency that must fix it by default."""

    code: str
    title: str
    severity: str
    agency: str
    description: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding type {self.code!r}: unknown severity {self.severity!r}")
        if self.agency not in AGENCIES:
            raise ValueError(f"finding type {self.code!r}: unknown agency {self.agency!r}")


_TYPES = (
    FindingType(
        "id_not_in_population_registry", "Citizen ID not in the population registry", "high",
        "population_registry",
        "A record in a registry names a 12-digit citizen ID that the national population registry does not "
        "know. Whoever holds the record must correct it: each finding names the agency the record came from "
        "(business or land registry); the type's default is the population registry.",
    ),
    FindingType(
        "same_id_different_name", "Same citizen ID, different name", "medium", "population_registry",
        "A record carries a citizen ID whose holder is called differently in the population registry (after "
        "normalising case, spacing and diacritics). The finding names the agency of the disagreeing record.",
    ),
    FindingType(
        "same_id_different_birth_date", "Same citizen ID, different birth date", "high", "population_registry",
        "A record carries a citizen ID whose holder has another birth date in the population registry. The "
        "finding names the agency of the disagreeing record.",
    ),
    FindingType(
        "deceased_legal_representative", "Enterprise represented by a deceased citizen", "critical",
        "business_registry",
        "The legal representative of an active enterprise is recorded as deceased in the population registry.",
    ),
    FindingType(
        "deceased_certificate_holder", "Land certificate held by a deceased citizen", "high", "land_registry",
        "A land-use right certificate lists a holder who is recorded as deceased in the population registry.",
    ),
    FindingType(
        "dissolved_enterprise_holds_land", "Dissolved enterprise holds land", "medium", "land_registry",
        "A land-use right certificate lists an enterprise that the business registry records as dissolved.",
    ),
    FindingType(
        "legacy_id_resolved", "Old ID resolved to the citizen ID", "info", "population_registry",
        "A record used an old 9-digit CMND number that was resolved to the citizen's 12-digit ID. For "
        "information: the finding names the agency of the record that used the old ID, which should update it.",
    ),
    FindingType(
        "commune_code_outdated", "Commune code outdated", "low", "population_registry",
        "A record uses a commune code that no longer exists after the administrative-unit mergers. The "
        "finding names the agency of the record.",
    ),
    FindingType(
        "duplicate_records", "Duplicate records", "medium", "population_registry",
        "Several records of one registry describe the same person, enterprise or parcel. The finding names "
        "the registry that holds them.",
    ),
    FindingType(
        "match_needs_review", "Match needs review", "medium", "population_registry",
        "Records were linked with a probabilistic match whose score is in the review band: a clerk must "
        "confirm or reject the link. The finding names the agency of the record to be linked.",
    ),
    FindingType(
        "shares_do_not_sum_to_100", "Certificate shares do not sum to 100 %", "high", "land_registry",
        "The ownership shares of the holders of a land-use right certificate do not add up to 100 %.",
    ),
)

TAXONOMY: dict[str, FindingType] = {t.code: t for t in _TYPES}
"""Every finding type by code. A finding's agency and severity default to its type's."""


def finding_type(code: str) -> FindingType:
    """The finding type `code`; ValueError naming it if it is unknown."""
    try:
        return TAXONOMY[code]
    except (KeyError, TypeError):
        raise ValueError(f"unknown finding type {code!r} (known: {', '.join(TAXONOMY)})") from None


def checked_filters(filters: Iterable[tuple[str, str | None, Sequence[str]]], *, type: str | None, limit: int,
                    offset: int, alias: str = "") -> tuple[list[str], list[Any]]:
    """SQL conditions (`<alias><column> = %s`) and their parameters for a page of findings: the finding type
    checked against the taxonomy, each other (column, value, values it may take) against its values (ValueError
    naming the unknown one; None: no condition), and the page bounds (limit 1-1000, offset not negative)."""
    where, params = [], []
    if type is not None:
        where.append(f"{alias}type = %s")
        params.append(finding_type(type).code)
    for column, value, known in filters:
        if value is None:
            continue
        if value not in known:
            raise ValueError(f"unknown {column} {value!r} (known: {', '.join(known)})")
        where.append(f"{alias}{column} = %s")
        params.append(value)
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    return where, params
